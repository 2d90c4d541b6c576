"""A local sandbox for model-written code (HumanEval/MBPP): the inspect-ai provider `posttrain_local`, `sandbox_spec()`
to choose between it and docker, and a HumanEval check whose pass the completion cannot fake.

Each exec goes through a small trusted launcher (`_LAUNCHER`, run as the caller) that unshares a network namespace
and, when folders are to be hidden (`POSTTRAIN_SANDBOX_HIDE`), a mount namespace in which each is covered by an empty
read-only tmpfs, then forks the command with rlimits as an unprivileged uid, and stays behind as a child subreaper:
when the command ends or times out it kills every process the command left (same network namespace or reparented to
it) and reaps them, so nothing outlives the exec and zombies never eat the uid's RLIMIT_NPROC budget (PID 1 here does
not reap)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal, Union, overload

from inspect_ai.scorer import CORRECT, INCORRECT, Score, Scorer, Target, accuracy, scorer, stderr
from inspect_ai.solver import TaskState
from inspect_ai.util import (
    ExecResult,
    OutputLimitExceededError,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    SandboxEnvironmentLimits,
    SandboxUserUnsupportedError,
    sandbox,
    sandboxenv,
)
from inspect_ai.util import concurrency as throttle

ALLOW_NETWORK_ENV = "POSTTRAIN_SANDBOX_ALLOW_NETWORK"  # "1": run without a network namespace where none can be made
HIDE_ENV = "POSTTRAIN_SANDBOX_HIDE"  # os.pathsep-separated folders the code must not see (the benchmark's data)
LIMITS = {"CPU": 30, "AS": 1 << 30, "NPROC": 64, "FSIZE": 64 << 20, "NOFILE": 256, "CORE": 0}  # POSTTRAIN_SANDBOX_<K>
DEFAULT_TIMEOUT_S = 120  # wall clock when the caller gives none (POSTTRAIN_SANDBOX_TIMEOUT_S)
PASS_SENTINEL = "POSTTRAIN_CHECK_PASSED"

ISOLATION = {
    "docker": "Each sample runs in its own Docker container (own filesystem, process tree and network as the task's "
              "compose file sets them), removed after the sample.",
    "posttrain_local": "Each exec runs on the host as an unprivileged uid (default `nobody`) in a fresh per-sample "
                       "directory with a minimal environment, rlimits on CPU, memory, processes, file size and open "
                       "files, a private network namespace holding only a down loopback, a private mount namespace "
                       "in which every folder listed in POSTTRAIN_SANDBOX_HIDE (the benchmark's data) is covered by "
                       "an empty read-only mode-000 tmpfs, and a wall-clock timeout after which every process it "
                       "started is killed; it can still read other world-readable host files.",
    "posttrain_local_nonroot": "When the caller is not root, each exec runs as the calling user inside a new user, "
                               "network and mount namespace with the same directory, environment, rlimits, hidden "
                               "folders and timeout, so it has no network but can read and write whatever else the "
                               "calling user can.",
}

# Trusted launcher: argv = [spec_json, *cmd]. Runs as the caller; only the forked child drops to the sandbox uid.
_LAUNCHER = r"""
import ctypes, json, os, resource, signal, sys, time, warnings  # all imports now: the child cannot read our stdlib
spec, cmd, me = json.loads(sys.argv[1]), sys.argv[2:], os.getpid()
libc = ctypes.CDLL(None, use_errno=True)
def fail(what): sys.stderr.write("sandbox: %s: %s\n" % (what, os.strerror(ctypes.get_errno()))); sys.exit(125)
flags = (0x40000000 if spec["netns"] else 0) | (0x20000 if spec["hide"] else 0)  # CLONE_NEWNET, CLONE_NEWNS
if flags:
    if spec["uid"] is None: flags |= 0x10000000  # CLONE_NEWUSER: what lets a caller that is not root make the others
    if libc.unshare(flags) != 0: fail("unshare")
    if spec["uid"] is None:  # map ourselves so files we create keep our uid
        for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % ((os.getuid(),) * 2)),
                           ("gid_map", "%d %d 1" % ((os.getgid(),) * 2))):
            with open("/proc/self/" + name, "w") as f: f.write(text)
# MS_REC|MS_PRIVATE first, so our mounts stay in this namespace; then an empty read-only
# (MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC) mode-000 tmpfs over each hidden folder, which the uid cannot undo
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
if spec["hide"] and libc.mount(b"none", b"/", None, 0x44000, None) != 0: fail("making / private")
for path in spec["hide"]:
    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0xF, b"mode=000,size=4k") != 0: fail("hiding " + path)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come back here to be killed and reaped
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE=0: a same-uid child cannot ptrace us
libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_DEATHSIG: clean up if the eval process dies
net = os.readlink("/proc/self/ns/net") if spec["netns"] else None
pid = 0
signal.signal(signal.SIGTERM, lambda *_: pid > 0 and os.kill(pid, signal.SIGKILL))  # timeout: end it, then sweep
pid = os.fork()
if pid == 0:
    try:
        os.setpgid(0, 0)
        for res, value in spec["limits"]: resource.setrlimit(res, (value, value))
        if spec["uid"] is not None: os.setgroups([]); os.setgid(spec["gid"]); os.setuid(spec["uid"])
        os.execvp(cmd[0], cmd)
    except BaseException as e:
        sys.stderr.write("sandbox: %s: %s\n" % (cmd[0], e)); os._exit(127 if isinstance(e, FileNotFoundError) else 126)
while True:  # reap orphans as they come, until the command itself ends
    child, status = os.wait()
    if child == pid: break
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # pid may be reused now; the sweep below ends everything anyway
code = os.waitstatus_to_exitcode(status)
def sweep():  # kill our children and everything in our network namespace; True while any remains
    found = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me: continue
        try:
            with open("/proc/%s/stat" % entry) as f: ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == me or (net and os.readlink("/proc/%s/ns/net" % entry) == net):
                os.kill(int(entry), signal.SIGKILL); found = True
        except (OSError, ValueError, IndexError): pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0: found = True
        return True
    except ChildProcessError: return found
while sweep(): time.sleep(0.005)
sys.exit(code if code >= 0 else 128 - code)
"""


def _identity() -> tuple[int, int] | None:
    """(uid, gid) to run as; None means the caller is not root and runs as itself."""
    if os.geteuid() != 0:
        return None
    uid = gid = 0
    with contextlib.suppress(KeyError, ValueError):
        if (env_uid := os.environ.get("POSTTRAIN_SANDBOX_UID")) is not None:
            uid = gid = int(env_uid)  # may have no passwd entry: then its group is the same number
            gid = pwd.getpwuid(uid).pw_gid
        else:
            uid, gid = pwd.getpwnam("nobody")[2:4]
    if uid == 0 or gid == 0:
        raise RuntimeError("posttrain_local: running as root but found no unprivileged uid (no `nobody` account, or "
                           "POSTTRAIN_SANDBOX_UID is 0 or not a number); set POSTTRAIN_SANDBOX_UID to a non-zero uid")
    return uid, gid


def _launcher_cmd(ident: tuple[int, int] | None, netns: bool, cmd: list[str],
                  hide: list[str] | None = None) -> list[str]:
    limits = [[getattr(resource, f"RLIMIT_{k}"), int(os.environ.get(f"POSTTRAIN_SANDBOX_{k}", v))]
              for k, v in LIMITS.items()]
    spec = {"uid": ident and ident[0], "gid": ident and ident[1], "netns": netns, "limits": limits, "hide": hide or []}
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec), *cmd]


def _hidden_dirs(keep: list[Path]) -> list[str]:
    """The existing folders listed in POSTTRAIN_SANDBOX_HIDE, resolved; a listed folder that holds one of `keep`
    (the sample's own directory, the interpreter) is left visible, or the sandbox could not run at all."""
    found = []
    for entry in os.environ.get(HIDE_ENV, "").split(os.pathsep):
        path = Path(os.path.realpath(entry)) if entry.strip() else None
        if path and path.is_dir() and not any(k.is_relative_to(path) for k in keep) and str(path) not in found:
            found.append(str(path))
    return found


@functools.cache
def _netns_available(ident: tuple[int, int] | None) -> bool:
    probe = subprocess.run(_launcher_cmd(ident, True, ["true"]), capture_output=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin"}, cwd="/")
    return probe.returncode == 0


def _sandbox_python() -> str:
    """An interpreter the sandbox uid can run (the venv's may sit under a private home such as /root)."""
    for path in (os.environ.get("POSTTRAIN_SANDBOX_PYTHON", ""), "/usr/local/bin/python3", "/usr/bin/python3"):
        if path and os.access(path, os.X_OK):
            return path
    return sys.executable


async def _drain(stream: asyncio.StreamReader | None, limit: int) -> bytes:
    buf = bytearray()  # keep the tail only, so a print loop cannot exhaust our memory
    while stream is not None and (chunk := await stream.read(65536)):
        buf += chunk
        del buf[:max(0, len(buf) - limit)]
    return bytes(buf)


async def _feed(stdin: asyncio.StreamWriter | None, data: str | bytes | None) -> None:
    if stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the command need not read its input
        stdin.write(data.encode() if isinstance(data, str) else data or b"")
        await stdin.drain()
        stdin.close()


@sandboxenv(name="posttrain_local")
class PostTrainLocalSandbox(SandboxEnvironment):
    """Unprivileged, rlimited, network-less local execution in a throwaway per-sample directory."""

    @classmethod
    async def sample_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                          metadata: dict[str, str]) -> dict[str, SandboxEnvironment]:
        ident = _identity()
        netns = _netns_available(ident)
        if not netns and os.environ.get(ALLOW_NETWORK_ENV) != "1":
            raise RuntimeError(f"posttrain_local: cannot create a network namespace here, so sandboxed code would "
                               f"have network access; set {ALLOW_NETWORK_ENV}=1 to run anyway")
        return {"default": cls(ident, netns)}

    @classmethod
    async def sample_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                             environments: dict[str, SandboxEnvironment], interrupted: bool) -> None:
        for env in environments.values():
            shutil.rmtree(env.as_type(cls).root, ignore_errors=True)

    def __init__(self, ident: tuple[int, int] | None, netns: bool) -> None:
        super().__init__()
        self.ident, self.netns = ident, netns
        # root/ is ours (0755) so the uid cannot swap bin/; root/work is the uid's (0700): cwd, HOME and TMPDIR
        self.root = Path(os.path.realpath(tempfile.mkdtemp(prefix="posttrain-sbx-")))
        self.root.chmod(0o755)
        self.work = self.root / "work"
        (self.root / "bin").mkdir()
        (self.root / "bin" / "python").symlink_to(_sandbox_python())  # the tasks run `python ...`
        self.work.mkdir(mode=0o700)
        self._own(self.work)
        uid = os.getuid() if ident is None else ident[0]
        self.users = {str(uid), *(p.pw_name for p in pwd.getpwall() if p.pw_uid == uid)}

    def _own(self, path: Path) -> None:
        if self.ident is not None:
            os.chown(path, *self.ident)

    async def exec(self, cmd: list[str], input: str | bytes | None = None, cwd: str | None = None,
                   env: dict[str, str] | None = None, user: str | None = None, timeout: int | None = None,
                   timeout_retry: bool = True, concurrency: bool = True) -> ExecResult[str]:
        if user is not None and user not in self.users:
            raise SandboxUserUnsupportedError(f"posttrain_local runs only as {sorted(self.users)}, not {user!r}")
        # a minimal environment: nothing inherited from the eval process (API keys, tokens)
        final_env = {"PATH": f"{self.root}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.work),
                     "TMPDIR": str(self.work), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        timeout = timeout or int(os.environ.get("POSTTRAIN_SANDBOX_TIMEOUT_S", DEFAULT_TIMEOUT_S))
        gate = throttle("posttrain_sandbox", os.cpu_count() or 1) if concurrency else contextlib.nullcontext()
        async with gate:
            return await self._run(cmd, input, self.work / (cwd or "."), final_env, timeout)

    async def _run(self, cmd: list[str], input: str | bytes | None, cwd: Path, env: dict[str, str],
                   timeout: int) -> ExecResult[str]:
        hide = _hidden_dirs([self.root, Path(os.path.realpath(_sandbox_python()))])
        proc = await asyncio.create_subprocess_exec(
            *_launcher_cmd(self.ident, self.netns, cmd, hide), cwd=cwd, env=env, start_new_session=True,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        limit = SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE
        readers = [asyncio.create_task(_drain(stream, limit)) for stream in (proc.stdout, proc.stderr)]
        feeder = asyncio.create_task(_feed(proc.stdin, input))
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except BaseException as e:  # timed out or cancelled
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)  # the launcher kills and reaps everything the command started
                if isinstance(e, TimeoutError):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), 10)
                    if proc.returncode is None:  # the launcher itself is stuck: last resort
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
            for task in (feeder, *readers):
                task.cancel()
            if isinstance(e, TimeoutError):
                raise TimeoutError(f"sandboxed command timed out after {timeout}s") from None
            raise
        feeder.cancel()
        try:
            outputs = await asyncio.wait_for(asyncio.gather(*readers), 5)
            out, err = (b.decode("utf-8", errors="replace") for b in outputs)
        except TimeoutError:
            out, err = "", "sandbox: output pipes stayed open after the command ended"
        return ExecResult(proc.returncode == 0, proc.returncode, out, err)

    def _path(self, file: str) -> Path:
        # resolve symlinks first: we read and write as root, and the code may have planted links to host files
        path = Path(os.path.realpath(self.work / file))
        if not path.is_relative_to(self.work):
            raise PermissionError(f"{file}: outside the sandbox directory")
        return path

    async def write_file(self, file: str, contents: str | bytes) -> None:
        path = self._path(file)
        for parent in reversed([p for p in path.parents if p.is_relative_to(self.work) and not p.exists()]):
            parent.mkdir()
            self._own(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with open(fd, "wb") as f:
            f.write(contents.encode() if isinstance(contents, str) else contents)
        self._own(path)

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> Union[str | bytes]:
        path = self._path(file)
        if path.stat().st_size > SandboxEnvironmentLimits.MAX_READ_FILE_SIZE:
            raise OutputLimitExceededError(SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR, None)
        if text:
            with open(path, newline="", encoding="utf-8") as f:
                return f.read()
        return path.read_bytes()


def sandbox_spec() -> str:
    """What to pass as `sandbox=`: docker when a daemon answers, else this module's local sandbox."""
    docker = shutil.which("docker")
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        if docker and subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0:
            return "docker"
    return "posttrain_local"


# HumanEval's own check runs prompt+completion+test in one `python -c`, so exit(0) in the completion, or a returned
# object whose __eq__ is always True, passes. Here the trusted judge runs the test with the prompt's helpers, and calls
# the solution, which lives in its own process, through a proxy that only accepts plain data back (ast.literal_eval).
_SOLUTION = r"""
import ast, json, os, sys
replies = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # the solution's own prints go to stderr, not into the replies
job = json.loads(sys.stdin.readline())
ns = {"__name__": "__main__"}
exec(job["src"], ns)
def plain(v):  # Counter, OrderedDict, namedtuple... compare equal to their plain forms, which literal_eval can read
    for kind in (dict, list, tuple, set, frozenset):
        if isinstance(v, kind):
            return dict((plain(k), plain(x)) for k, x in v.items()) if kind is dict else kind(map(plain, v))
    return v
for line in sys.stdin:
    try:
        args, kwargs = ast.literal_eval(line)
        reply = {"value": repr(plain(ns[job["entry"]](*args, **kwargs)))}
    except Exception as e:
        reply = {"error": "%s: %s" % (type(e).__name__, e)}
    replies.write(json.dumps(reply) + "\n"); replies.flush()
"""

_JUDGE = r"""
import ast, ctypes, json, subprocess, sys
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE=0: the solution (same uid) cannot ptrace us or use our fds
job = json.loads(sys.stdin.read())
solution = subprocess.Popen([sys.executable, "-I", "-c", job["solution"]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
solution.stdin.write(json.dumps({"src": job["src"], "entry": job["entry"]}) + "\n")
class CandidateError(Exception): pass
def candidate(*args, **kwargs):
    solution.stdin.write(repr((args, kwargs)) + "\n"); solution.stdin.flush()
    reply = json.loads(solution.stdout.readline() or '{"error": "the solution process exited"}')
    if "value" not in reply: raise CandidateError(reply["error"])
    return ast.literal_eval(reply["value"])  # plain data only
ns = {"__name__": "__check__"}
try: exec(job["prompt"], ns)  # trusted helpers the test may call (e.g. HumanEval/32's poly)
except SyntaxError: exec(job["prompt"] + "\n    pass\n", ns)  # a bare signature without a docstring
ns[job["entry"]] = candidate  # MBPP-style tests call the function by name
exec(job["test"], ns)
if ns.get("check") not in (None, candidate): ns["check"](candidate)  # HumanEval style; MBPP asserts ran above
solution.kill()
print(job["sentinel"])
"""


def humaneval_check_program(prompt: str, completion: str, test: str, entry_point: str) -> tuple[list[str], str]:
    """`(cmd, stdin)` for `sandbox().exec(cmd, input=stdin)`; judge the result with `humaneval_passed`."""
    job = {"src": prompt + completion + "\n", "prompt": prompt, "test": test, "entry": entry_point,
           "solution": _SOLUTION, "sentinel": PASS_SENTINEL}
    return ["python", "-I", "-c", _JUDGE], json.dumps(job)


def humaneval_passed(result: ExecResult[str]) -> bool:
    lines = result.stdout.strip().splitlines()
    return result.success and bool(lines) and lines[-1] == PASS_SENTINEL


@scorer(metrics=[accuracy(), stderr()])
def humaneval_verify(timeout: int = 30) -> Scorer:
    """inspect_evals' humaneval `verify()` judged by `humaneval_check_program` (the completion's exit(0) fails)."""

    async def score(state: TaskState, target: Target) -> Score:
        from inspect_evals.humaneval.humaneval import find_code  # the official extraction; imported when scoring

        answer = find_code(state.output.completion)
        meta = state.metadata
        cmd, stdin = humaneval_check_program(meta["prompt"], answer, meta["test"], meta["entry_point"])
        try:
            result = await sandbox().exec(cmd, input=stdin, timeout=timeout)
        except TimeoutError:
            result = ExecResult(False, 1, "", "Verification timed out.")
        passed = humaneval_passed(result)
        return Score(value=CORRECT if passed else INCORRECT, answer=answer,
                     explanation=None if passed else result.stderr[-4000:])

    return score
