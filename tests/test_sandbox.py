"""The `posttrain_local` sandbox and the HumanEval check, driven through inspect-ai's sandbox API (no model needed).

Hostile completions (exit(0) before the tests, deleting a root file, opening sockets, fork bombs) must neither pass
nor do harm; a correct solution must pass. Real HumanEval rows come from ../shared/data."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inspect_ai.util import ExecResult, SandboxUserUnsupportedError

from tasks import sandbox as sb
from tasks.sandbox import PostTrainLocalSandbox, humaneval_check_program, humaneval_passed

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX only")
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def humaneval(data_dir: Path) -> dict[str, dict[str, str]]:
    rows = [json.loads(line) for line in (data_dir / "humaneval" / "test.jsonl").open()]
    return {r["task_id"]: r for r in rows}


@pytest.fixture
def box() -> Iterator[PostTrainLocalSandbox]:
    envs = asyncio.run(PostTrainLocalSandbox.sample_init("test", None, {}))
    env = envs["default"].as_type(PostTrainLocalSandbox)
    yield env
    asyncio.run(PostTrainLocalSandbox.sample_cleanup("test", None, envs, False))
    assert not env.root.exists()  # the per-sample directory is thrown away


def run(box: PostTrainLocalSandbox, cmd: list[str], **kw: Any) -> ExecResult[str]:
    return asyncio.run(box.exec(cmd, **kw))


def judge(box: PostTrainLocalSandbox, row: dict[str, str], completion: str) -> tuple[bool, ExecResult[str]]:
    cmd, stdin = humaneval_check_program(row["prompt"], completion, row["test"], row["entry_point"])
    result = run(box, cmd, input=stdin, timeout=20)
    return humaneval_passed(result), result


def sandbox_pids(box: PostTrainLocalSandbox) -> set[int]:
    """Live or zombie processes of the sandbox uid (zombies would eat its RLIMIT_NPROC for good)."""
    uid = box.ident[0] if box.ident else os.getuid()
    pids = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid and int(entry) != os.getpid():
                pids.add(int(entry))
        except FileNotFoundError:
            pass
    return pids


def test_unprivileged_fresh_dir_minimal_env(box: PostTrainLocalSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_API_KEY", "sk-secret")
    result = run(box, ["sh", "-c", "id -u; pwd; env"])
    uid, cwd, *env = result.stdout.splitlines()
    assert result.success and uid != "0" and cwd == str(box.work)
    assert "FAKE_API_KEY" not in result.stdout and f"HOME={box.work}" in env
    info = box.work.stat()
    assert info.st_uid == int(uid) and stat.S_IMODE(info.st_mode) == 0o700
    with pytest.raises(SandboxUserUnsupportedError):
        run(box, ["true"], user="root")


def test_rlimits(box: PostTrainLocalSandbox) -> None:
    names = ["CPU", "AS", "NPROC", "FSIZE", "NOFILE"]
    code = f"import resource; print([resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) for n in {names}])"
    assert run(box, ["python", "-c", code]).stdout.strip() == str([(sb.LIMITS[n],) * 2 for n in names])
    too_big = run(box, ["python", "-c", "b = bytearray(2 << 30)"])  # over the 1 GiB address space
    assert not too_big.success and "MemoryError" in too_big.stderr


def test_correct_solution_passes(box: PostTrainLocalSandbox, humaneval: dict[str, dict[str, str]]) -> None:
    for task_id in ["HumanEval/0", "HumanEval/32", "HumanEval/38"]:  # 32 and 38: tests use helpers from the prompt
        row = humaneval[task_id]
        passed, result = judge(box, row, row["canonical_solution"])
        assert passed, (task_id, result.stderr)
        assert not judge(box, row, "    return None\n")[0]


def test_exit0_before_tests_does_not_pass(box: PostTrainLocalSandbox, humaneval: dict[str, dict[str, str]]) -> None:
    row = humaneval["HumanEval/0"]
    exit0 = "    return None\nexit(0)\n"
    # the hack is real: inspect_evals' verify() concatenates everything into one `python -c` and trusts its exit code
    original = run(box, ["python", "-c", row["prompt"] + exit0 + "\n" + row["test"] + "\ncheck(has_close_elements)"])
    assert original.success
    always_equal = "    class Eq:\n        __eq__ = lambda self, other: True\n    return Eq()\n"
    for completion in [exit0, "    import os; os._exit(0)\n", "    raise SystemExit(0)\n", always_equal,
                       row["canonical_solution"] + "exit(0)\n"]:  # the solution process ends before any test
        passed, result = judge(box, row, completion)
        assert not passed and not result.success, completion


def test_cannot_delete_files_outside(box: PostTrainLocalSandbox, humaneval: dict[str, dict[str, str]]) -> None:
    if not ROOT:
        pytest.skip("needs root to make a file the sandbox uid does not own")
    outside = Path(tempfile.mkdtemp())
    outside.chmod(0o755)
    victim = outside / "keep.txt"
    victim.write_text("precious")
    victim.chmod(0o644)
    try:
        attempts = [f"os.remove({str(victim)!r})", f"open({str(victim)!r}, 'w')", f"shutil.rmtree({str(outside)!r})"]
        hostile = "    import os, shutil\n" + "".join(f"    try: {a}\n    except OSError: pass\n" for a in attempts)
        hostile += humaneval["HumanEval/0"]["canonical_solution"]
        passed, _ = judge(box, humaneval["HumanEval/0"], hostile)
        assert passed  # it is still a correct solution; the attempts just failed
        assert not run(box, ["rm", "-rf", str(victim)]).success
        assert victim.read_text() == "precious" and victim.stat().st_uid == 0
    finally:
        victim.unlink()
        outside.rmdir()


def test_no_network(box: PostTrainLocalSandbox, humaneval: dict[str, dict[str, str]]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = (f"import socket\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('8.8.8.8', 443)]:\n"
                "    try: socket.create_connection(addr, timeout=2); print('CONNECTED', addr)\n"
                "    except OSError as e: print('blocked', e.errno)\n")
        result = run(box, ["python", "-c", code])
        assert "CONNECTED" not in result.stdout and result.stdout.count("blocked") == 3
        with pytest.raises(BlockingIOError):  # nothing reached the host's loopback
            listener.accept()
    row = humaneval["HumanEval/0"]
    phone_home = f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    assert not judge(box, row, phone_home + row["canonical_solution"])[0]


def test_fork_bomb_is_bounded_and_cleaned_up(box: PostTrainLocalSandbox) -> None:
    before = sandbox_pids(box)
    # children detach (setsid) and sleep: counts how many forks the uid gets, and checks that none survive the exec
    code = ("import os, time\nn = 0\nwhile True:\n    try: pid = os.fork()\n    except OSError: break\n"
            "    if pid == 0: os.setsid(); time.sleep(60); os._exit(0)\n    n += 1\nprint(n)\n")
    result = run(box, ["python", "-c", code], timeout=20)
    assert 0 < int(result.stdout) < sb.LIMITS["NPROC"]
    assert sandbox_pids(box) <= before
    start = time.monotonic()
    with pytest.raises(TimeoutError):  # a real bomb: every process forks forever
        run(box, ["python", "-c", "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"], timeout=2)
    assert time.monotonic() - start < 10 and sandbox_pids(box) <= before
    assert run(box, ["python", "-c", "print(1)"]).stdout == "1\n"  # the uid's process budget is intact


def test_files_stay_in_the_sample_directory(box: PostTrainLocalSandbox) -> None:
    asyncio.run(box.write_file("sub/dir/a.txt", "hello\r\n"))
    assert asyncio.run(box.read_file("sub/dir/a.txt")) == "hello\r\n"
    assert run(box, ["cat", "sub/dir/a.txt"], cwd=".").stdout == "hello\r\n"  # visible and owned by the uid
    assert run(box, ["sh", "-c", "echo more >> sub/dir/a.txt"]).success
    assert run(box, ["ln", "-s", "/etc/passwd", "link"]).success  # planted by the code: must not be followed
    for bad in ["link", "/etc/passwd", "../../etc/passwd"]:
        with pytest.raises(PermissionError):
            asyncio.run(box.read_file(bad))
        with pytest.raises(PermissionError):
            asyncio.run(box.write_file(bad, "x"))


def test_timeout_kills_the_process_group(box: PostTrainLocalSandbox) -> None:
    before, start = sandbox_pids(box), time.monotonic()
    with pytest.raises(TimeoutError):
        run(box, ["sh", "-c", "sleep 30 & sleep 30"], timeout=1)
    assert time.monotonic() - start < 8 and sandbox_pids(box) <= before


@pytest.fixture
def data_folder(humaneval: dict[str, dict[str, str]]) -> Iterator[Path]:
    """A world-readable folder holding a benchmark file (HumanEval/0 with its reference solution), as ../shared/data."""
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o755)
    (folder / "test.jsonl").write_text(json.dumps(humaneval["HumanEval/0"]) + "\n")
    (folder / "test.jsonl").chmod(0o644)
    yield folder
    (folder / "test.jsonl").unlink()
    folder.rmdir()


def test_hidden_folders_cannot_be_read(box: PostTrainLocalSandbox, humaneval: dict[str, dict[str, str]],
                                       data_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A completion that copies the reference solution out of the benchmark's data passes unless the folder is
    listed in POSTTRAIN_SANDBOX_HIDE; then it cannot even list the folder, while the host still reads it."""
    row = humaneval["HumanEval/0"]
    cheat = (f"    import json\n    ref = json.loads(open({str(data_folder / 'test.jsonl')!r}).readline())\n"
             "    ns = {}\n    exec(ref['prompt'] + ref['canonical_solution'], ns)\n"
             "    return ns['has_close_elements'](numbers, threshold)\n")
    monkeypatch.delenv(sb.HIDE_ENV, raising=False)
    assert judge(box, row, cheat)[0]  # the data is world-readable: the cheat works without hiding
    monkeypatch.setenv(sb.HIDE_ENV, os.pathsep.join(["/no/such/folder", str(data_folder)]))  # missing: skipped
    passed, result = judge(box, row, cheat)
    assert not passed and "PermissionError" in result.stderr
    listing = run(box, ["sh", "-c", f"ls {data_folder}; cat {data_folder}/test.jsonl; echo done"])
    assert listing.stdout == "done\n" and listing.stderr.count("Permission denied") == 2
    assert judge(box, row, row["canonical_solution"])[0]  # honest code still runs
    assert "HumanEval/0" in (data_folder / "test.jsonl").read_text()  # the mount never reached the host
    monkeypatch.setenv(sb.HIDE_ENV, str(box.root.parent))  # a folder holding the sandbox itself stays visible
    assert run(box, ["python", "-c", "print(1)"]).stdout == "1\n"


@pytest.mark.skipif(not ROOT or not os.access("/usr/bin/python3", os.X_OK), reason="needs root and a system python")
def test_launcher_when_not_root() -> None:
    """Not root: the launcher runs as the caller in a new user+network namespace (emulated here as `nobody`)."""
    work = Path(tempfile.mkdtemp())
    os.chown(work, 65534, 65534)
    code = "import socket\ntry: socket.create_connection(('1.1.1.1', 53), timeout=2)\nexcept OSError: print('blocked')"
    cmd = ["/usr/bin/python3", *sb._launcher_cmd(None, True, ["python3", "-c", code])[1:]]
    result = subprocess.run(cmd, user=65534, group=65534, extra_groups=[], cwd=work, env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    os.rmdir(work)
    assert result.returncode == 0 and result.stdout == "blocked\n", result.stderr


@pytest.mark.skipif(not ROOT or not os.access("/usr/bin/python3", os.X_OK), reason="needs root and a system python")
def test_hidden_folders_when_not_root(data_folder: Path) -> None:
    """Not root: the new user namespace also owns a mount namespace, so the folder is hidden there too, and the
    command (no capabilities after exec) cannot unmount the cover."""
    work = Path(tempfile.mkdtemp())
    os.chown(work, 65534, 65534)
    code = (f"import subprocess\nsubprocess.run(['umount', {str(data_folder)!r}], capture_output=True)\n"
            f"try: open({str(data_folder / 'test.jsonl')!r}).read(); print('read')\n"
            "except PermissionError: print('hidden')")
    cmd = ["/usr/bin/python3", *sb._launcher_cmd(None, True, ["python3", "-c", code], [str(data_folder)])[1:]]
    result = subprocess.run(cmd, user=65534, group=65534, extra_groups=[], cwd=work, env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    os.rmdir(work)
    assert result.returncode == 0 and result.stdout == "hidden\n", result.stderr


def test_sandbox_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sb.shutil, "which", lambda name: None)
    assert sb.sandbox_spec() == "posttrain_local"
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sb.shutil, "which", lambda name: str(fake))
    assert sb.sandbox_spec() == "docker"
    assert set(sb.ISOLATION) >= {"docker", "posttrain_local"}


def test_inspect_eval_end_to_end(humaneval: dict[str, dict[str, str]], tmp_path: Path) -> None:
    """A tiny inspect Task on `sandbox="posttrain_local"` with mockllm completions: correct passes, exit(0) fails."""
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.solver import generate

    row = humaneval["HumanEval/0"]
    meta = {k: row[k] for k in ("prompt", "test", "entry_point")}
    good, hack = row["canonical_solution"], "    return None\nexit(0)\n"
    samples = [Sample(id=i, input=row["prompt"], metadata=meta) for i in (1, 2)]
    outputs = [ModelOutput.from_content("mockllm/model", c) for c in (good, hack)]
    for output in outputs:  # preset usage: mockllm would otherwise count tokens with tiktoken, which downloads
        output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    model = get_model("mockllm/model", custom_outputs=outputs)
    task = Task(dataset=samples, solver=generate(), scorer=sb.humaneval_verify(), sandbox="posttrain_local")
    [log] = eval(task, model=model, log_dir=str(tmp_path), max_samples=1)
    assert log.status == "success" and log.samples is not None
    verdicts = {s.output.completion: s.scores["humaneval_verify"].value for s in log.samples if s.scores}
    assert verdicts == {good: "C", hack: "I"}
