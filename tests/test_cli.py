"""Bad input gets one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graph.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], proc.stderr


def test_unknown_task(data_dir, tmp_path):
    _assert_one_line_error(_run("--task", "nope", "--data-dir", str(data_dir), "--workspace", str(tmp_path / "w")),
                           "known tasks: ")


def test_missing_data_dir(tmp_path):
    _assert_one_line_error(_run("--data-dir", str(tmp_path / "absent"), "--workspace", str(tmp_path / "w")),
                           "data dir not found")


def test_missing_base_model(data_dir, tmp_path):
    _assert_one_line_error(_run("--data-dir", str(data_dir), "--base-model", str(tmp_path / "no-model"),
                                "--workspace", str(tmp_path / "w")), "base model not found")


def test_malformed_jsonl_line(data_dir, tmp_path):
    bad = tmp_path / "data" / "gsm8k"
    bad.mkdir(parents=True)
    (bad / "test.jsonl").write_text((data_dir / "gsm8k" / "test.jsonl").read_text())
    (bad / "train.jsonl").write_text('{"question": "q", "answer": "a #### 1"}\n{"question": "q"\n')
    _assert_one_line_error(_run("--data-dir", str(tmp_path / "data"), "--workspace", str(tmp_path / "w")),
                           "train.jsonl:2")


def test_eval_limit_below_the_floor(data_dir, tmp_path, tiny_model_dir):
    _assert_one_line_error(_run("--data-dir", str(data_dir), "--base-model", str(tiny_model_dir), "--eval-limit", "10",
                                "--workspace", str(tmp_path / "w")), "floor is 66")


@pytest.mark.parametrize("args,pattern", [
    (("--role-backbone", "planner"), "ROLE=SPEC"),
    (("--role-backbone", "chef=playbook"), "unknown role"),
])
def test_bad_options(args, pattern, tmp_path):
    _assert_one_line_error(_run(*args, "--workspace", str(tmp_path / "w")), pattern)


def test_nothing_to_resume(tmp_path):
    _assert_one_line_error(_run("--resume", str(tmp_path / "nonexistent")), "nothing to resume")


def test_config_file_is_checked_like_options(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("hours: 0.1\nrole_backbones:\n  planner: playbook\nbogus_setting: 1\n")
    _assert_one_line_error(_run("--config", str(cfg), "--workspace", str(tmp_path / "w")), "--bogus-setting")


def test_config_file_settings_and_command_line_precedence(tmp_path):

    from graph.run import parse_args, settings_from_args

    cfg = tmp_path / "run.toml"
    cfg.write_text('hours = 3.0\nmax_iterations = 7\n[role_backbones]\nplanner = "playbook"\n')
    s = settings_from_args(parse_args(["--config", str(cfg), "--max-iterations", "2",
                                       "--workspace", str(tmp_path / "w")]))
    assert isinstance(s.hours, float) and s.hours == 3.0 and s.max_iterations == 2
    assert s.role_backbones == {"planner": "playbook"} and s.task == "gsm8k"


def test_unreachable_backbone_exits_2_fast_and_leaves_a_resumable_run(data_dir, tiny_model_dir, tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = tmp_path / "w"
    spec = f"planner=openai-compatible:http://127.0.0.1:{port}/v1#m"
    t0 = time.monotonic()
    proc = _run("--data-dir", str(data_dir), "--base-model", str(tiny_model_dir), "--workspace", str(ws),
                "--role-backbone", spec)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"no OpenAI-compatible server answers at http://127.0.0.1:{port}/v1" in proc.stderr
    assert f"--resume {ws}" in proc.stderr and (ws / "run_settings.json").is_file()
    # --resume takes the saved run up (and stops the same way while the server is still away).
    again = _run("--resume", str(ws))
    assert again.returncode == 2 and "no OpenAI-compatible server answers" in again.stderr, again.stderr


def test_a_malformed_backbone_spec_leaves_no_run_behind(data_dir, tiny_model_dir, tmp_path):
    ws = tmp_path / "w"
    _assert_one_line_error(_run("--data-dir", str(data_dir), "--base-model", str(tiny_model_dir), "--workspace",
                                str(ws), "--role-backbone", "planner=openai-compatible:no-url"),
                           "expected openai-compatible:URL#MODEL")
    assert not (ws / "run_settings.json").exists()  # the corrected command starts afresh


def test_a_base_model_whose_config_does_not_parse(data_dir, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{broken")
    _assert_one_line_error(_run("--data-dir", str(data_dir), "--base-model", str(model), "--workspace",
                                str(tmp_path / "w")), f"base model {model}: its config does not load")
    assert not (tmp_path / "w" / "run_settings.json").exists()


def test_a_train_split_that_is_the_test_split_is_refused(data_dir, tmp_path):
    """The evaluation's few-shot block is drawn from the train split: with test rows there, the baseline measured
    memory (0.031 → 0.125 in a run that allowed it)."""
    d = tmp_path / "data" / "gsm8k"
    d.mkdir(parents=True)
    test = (data_dir / "gsm8k" / "test.jsonl").read_text()
    (d / "test.jsonl").write_text(test)
    (d / "train.jsonl").write_text(test)
    proc = _run("--data-dir", str(tmp_path / "data"), "--workspace", str(tmp_path / "w"))
    _assert_one_line_error(proc, "1319 of the 1319 test items are also in the training source")
    assert "the evaluation's system message holds 10 test items" in proc.stderr and "--allow-overlap" in proc.stderr


def test_a_port_that_accepts_but_never_answers_exits_2_within_the_probe_timeout(data_dir, tiny_model_dir, tmp_path):
    """The wait a silent server adds is bounded by the probe's read timeout. Start-up (imports, data checks) is
    measured on the same command against a closed port, so a loaded machine cannot fail the test."""
    import socket
    import time

    from roles.llm import PROBE_READ_TIMEOUT_S

    def timed(port: int, name: str) -> tuple[subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        proc = _run("--data-dir", str(data_dir), "--base-model", str(tiny_model_dir),
                    "--workspace", str(tmp_path / name),
                    "--role-backbone", f"planner=openai-compatible:http://127.0.0.1:{port}/v1#m")
        return proc, time.monotonic() - t0

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]  # bound, never listening: connections are refused at once
        refused, startup = timed(closed_port, "refused")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts connections; nothing ever answers
        proc, elapsed = timed(silent.getsockname()[1], "silent")
    for p in (refused, proc):
        assert p.returncode == 2 and "no OpenAI-compatible server answers" in p.stderr, p.stderr
    assert elapsed - startup < PROBE_READ_TIMEOUT_S + 10, (elapsed, startup)
