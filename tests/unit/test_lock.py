"""One run per workspace: a second holder is refused at once with the first one's pid, and a killed holder's lock
never blocks the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import WorkspaceBusy
from core.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


def _holder(ws: Path) -> subprocess.Popen:
    code = (
        f"from core.workspace import Workspace\nimport time\nwith Workspace(__import__('pathlib').Path({str(ws)!r}))"
        ".lock():\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_and_a_killed_runs_lock_is_free(tmp_path):
    ws = tmp_path / "ws"
    holder = _holder(ws)
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkspaceBusy, match=f"in use by another run \\(pid {holder.pid}\\)"):
            with Workspace(ws).lock():
                pass
        assert time.monotonic() - t0 < 1  # at once, not after a wait
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with Workspace(ws).lock():  # the kernel dropped the dead holder's lock
        assert (ws / ".lock").read_text().strip() == str(os.getpid())


def test_the_cli_refuses_a_busy_workspace_with_exit_2(tmp_path, capsys):
    import graph.run as cli

    ws = tmp_path / "ws"
    holder = _holder(ws)
    try:
        assert cli.main(["--workspace", str(ws)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by another run (pid {holder.pid})" in err[0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
