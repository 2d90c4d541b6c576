"""Child processes that never outlive the run: they die with their parent and are killed as a whole group."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn`: the child gets `sig` when the process that started it dies, even by SIGKILL (Linux prctl).

    PDEATHSIG follows the *thread* that forked: start children from a thread that outlives them (the main thread,
    or one that waits for the child). Elsewhere than Linux it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return lambda: None
    libc = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded before fork: the child only makes the call
    parent = os.getpid()

    def set_pdeathsig() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return set_pdeathsig


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group (torchrun workers, a server's threads) and reap it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it exited between poll and kill
        pass
    proc.wait()


def terminate(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s` if it is still there."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
