"""Bad input, each case in one line with exit code 2 (3 for a missing checksum file), before anything is saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import graph.run as cli


def run(capsys, *args: str) -> tuple[int, list[str]]:
    try:
        code = cli.main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def one_line(capsys, pattern: str, *args: str) -> str:
    code, err = run(capsys, *args)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and pattern in err[0], err
    return err[0]


def gsm8k_dir(tmp_path: Path, *, test_answer=None, train_bytes: bytes | None = None) -> Path:
    """A small data folder in GSM8K's schema: 40 test rows and 5 train rows."""
    d = tmp_path / "data" / "gsm8k"
    d.mkdir(parents=True)
    rows = [{"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have now?",
             "answer": f"{i}+{i + 2}={2 * i + 2}\n#### {2 * i + 2}"} for i in range(40)]
    if test_answer is not None:
        rows[7]["answer"] = test_answer
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = [
        {"question": f"Ann reads {i} pages a day for {i + 1} days. How many pages?", "answer": f"#### {i * (i + 1)}"}
        for i in range(5)
    ]
    (d / "train.jsonl").write_bytes(train_bytes or "".join(json.dumps(r) + "\n" for r in train).encode())
    return tmp_path / "data"


def test_non_utf8_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"hours: 1\nname: \xff\xfe\n")
    one_line(capsys, "not UTF-8", "--config", str(cfg))


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("role_backbones: [planner, local]\n", "--role-backbones"),
        ("workspace: 12\n", "--workspace: Value error, expected a path"),
        ("workspace: ''\n", "--workspace: Value error, the path is empty"),
        ("hours: .inf\n", "--hours"),
        ("retry: {max_attempts: 0}\n", "--retry"),
    ],
)
def test_bad_config_values(tmp_path, capsys, text, pattern):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    one_line(capsys, pattern, "--config", str(cfg))


def test_bad_flags(tmp_path, capsys):
    one_line(capsys, "--hours", "--hours", "inf", "--workspace", str(tmp_path / "w"))
    one_line(capsys, "argument --workspace: the path is empty", "--workspace", "")
    one_line(capsys, "argument --memory-dir: the path is empty", "--memory-dir", " ")
    one_line(capsys, "--eval-limit", "--eval-limit", "0", "--workspace", str(tmp_path / "w"))


@pytest.mark.parametrize("flag", ["--workspace", "--memory-dir", "--trace"])
def test_paths_that_cannot_be_written(tmp_path, capsys, flag):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    args = ["--workspace", str(tmp_path / "w")] if flag != "--workspace" else []
    for bad in (a_file, Path("/proc/posttrain-graph-test")):
        line = one_line(capsys, f"{flag} {bad} is not a writable folder", *args, flag, str(bad))
        assert "Traceback" not in line
    assert not (tmp_path / "w" / "run_settings.json").exists()  # nothing saved: the corrected command starts afresh


def test_resume_of_a_corrupt_or_invalid_settings_file(tmp_path, capsys):
    ws = tmp_path / "w"
    ws.mkdir()
    (ws / "run_settings.json").write_text("{not json")
    one_line(capsys, "is not valid JSON", "--resume", str(ws))
    (ws / "run_settings.json").write_text(json.dumps({"task": "gsm8k", "workspace": str(ws), "hours": -1}))
    one_line(capsys, "run_settings.json: --hours", "--resume", str(ws))
    (ws / "run_settings.json").write_bytes(b"\xff\xfe")
    one_line(capsys, "cannot read", "--resume", str(ws))


def test_resume_refuses_flags_it_would_ignore(tmp_path, capsys):
    one_line(capsys, "drop --task, --hours", "--resume", str(tmp_path), "--hours", "2", "--task", "gsm8k")


def test_config_paths_are_saved_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("workspace: runs/a\ndata_dir: data\nmemory_dir: mem\n")
    s = cli.settings_from_args(cli.parse_args(["--config", str(cfg)]))
    assert s.workspace == tmp_path / "runs" / "a" and s.data_dir == tmp_path / "data"
    assert s.memory_dir == tmp_path / "mem"


def test_a_test_row_the_task_cannot_score(tmp_path, capsys):
    data = gsm8k_dir(tmp_path, test_answer=18)
    one_line(
        capsys,
        "gsm8k test row 8: question and answer must be strings",
        "--data-dir",
        str(data),
        "--workspace",
        str(tmp_path / "w"),
    )
    data2 = gsm8k_dir(tmp_path / "b", test_answer="eighteen")
    one_line(
        capsys,
        "gsm8k test row 8: the answer does not end with '#### <number>'",
        "--data-dir",
        str(data2),
        "--workspace",
        str(tmp_path / "w2"),
    )


def test_non_utf8_data(tmp_path, capsys):
    data = gsm8k_dir(tmp_path, train_bytes=b'{"question": "caf\xe9", "answer": "#### 1"}\n')
    one_line(capsys, "train.jsonl is not UTF-8 text", "--data-dir", str(data), "--workspace", str(tmp_path / "w"))


def test_a_test_set_below_the_floor_is_refused(tmp_path, capsys):
    data = gsm8k_dir(tmp_path)
    lines = (data / "gsm8k" / "test.jsonl").read_text().splitlines()[:5]
    (data / "gsm8k" / "test.jsonl").write_text("\n".join(lines) + "\n")
    one_line(
        capsys,
        "the test set has 5 samples, fewer than the floor of 32",
        "--data-dir",
        str(data),
        "--workspace",
        str(tmp_path / "w"),
    )


def test_an_eval_limit_above_the_benchmark(tmp_path, capsys):
    data = gsm8k_dir(tmp_path)
    one_line(
        capsys,
        "--eval-limit 1000 is above the 40 samples",
        "--data-dir",
        str(data),
        "--eval-limit",
        "1000",
        "--workspace",
        str(tmp_path / "w"),
    )


def test_a_deleted_checksum_file_is_a_hard_rule_stop(tmp_path):
    from core.errors import GuardViolation
    from core.workspace import Workspace
    from tools.guards import verify_eval_checksums

    with pytest.raises(GuardViolation, match="eval_checksums.json is missing") as e:
        verify_eval_checksums(Workspace(tmp_path))
    assert e.value.exit_code == 3
