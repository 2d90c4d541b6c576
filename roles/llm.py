"""Backbone specs → chat models for the LLM roles.

A spec names where a role's decisions come from:

- `openai:MODEL`: the OpenAI API, key from `OPENAI_API_KEY`;
- `openai-compatible:URL#MODEL`: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...), key from
  `OPENAI_COMPATIBLE_API_KEY` (default "none", for local servers that ask for none);
- `local`: the project's own OpenAI-compatible server (`roles.local_server`: transformers, with llguidance
  constraining forced tool calls to their JSON schema) on 127.0.0.1, serving the embedded SmolLM2 converted from
  its GGUF. It is started on first use, shared by every role, and stopped when the process exits.

Keys live only in `SecretStr` fields and the client; specs, settings, errors and reprs never carry them, and every
error message passes through the redactor (a server may echo the request, key included, in its error body).

Transient faults (dropped connections, timeouts, HTTP 5xx and 429) are retried with exponential backoff, jitter
and the server's Retry-After, within a per-call deadline and a per-run budget of waiting (`RetrySettings`); each
retry is a progress line and a `backbone_retry` trace run. Anything else (a refused key, an unknown model, another
4xx) stops the run at once, resumable.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import BackboneError, BackboneUnreachable, InputError, LimitReached
from core.handoffs import TokenUsage
from core.proc import die_with_parent, terminate
from core.redact import redact
from core.settings import RetrySettings
from core.specs import COMPATIBLE_KEY_ENV, LOCAL_MODEL_ALIAS, OPENAI_KEY_ENV, BackboneSpec, parse_spec  # noqa: F401

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from core.settings import RunSettings

LOCAL_THREADS_ENV = "POSTTRAIN_LOCAL_THREADS"

CONNECT_TIMEOUT_S = 5.0
PROBE_READ_TIMEOUT_S = 8.0
"""The start-up probe's wait for GET /models (a server that answers at all answers that in milliseconds): with the
checks before it (about 15-20 s on 2 cores, mostly imports), a silent server stops the run within 30 s."""
STARTUP_DEADLINE_S = 90.0
"""How long the local server may take to answer /models: measured 12-16 s (imports 11 s, model 1 s) on 2 shared
cores, up to 28 s under load."""
LOCAL_MAX_TOKENS = 768
"""The local model only ever writes one bounded handoff per call; this caps a runaway string."""


def check_spec(spec: str) -> None:
    """Everything about `spec` that can be checked without reaching a server: its form, its key, and for `local`
    the server packages. `InputError` otherwise."""
    if parse_spec(spec).kind == "local":
        _require_server_packages()
        _local_threads()


class TokenMeter:
    """The tokens a run's backbones spend, by role, and the cap the user set (`--max-llm-tokens`)."""

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.before = 0
        """Tokens spent before the current node (earlier nodes, earlier sessions of the run)."""
        self.spent: dict[str, TokenUsage] = {}
        self._lock = threading.Lock()

    def start_node(self, spent_before: int) -> None:
        self.before, self.spent = spent_before, {}

    def check(self) -> None:
        total = self.before + sum(u.total for u in self.spent.values())
        if self.limit is not None and total >= self.limit:
            raise LimitReached(f"the run's LLM token budget is spent: {total} of {self.limit} tokens "
                               "(resume with a higher --max-llm-tokens)")

    def add(self, role: str, reply: Any) -> None:
        meta = getattr(reply, "usage_metadata", None) or {}
        usage = TokenUsage(calls=1, input=int(meta.get("input_tokens", 0)), output=int(meta.get("output_tokens", 0)),
                           cached=int((meta.get("input_token_details") or {}).get("cache_read", 0) or 0))
        with self._lock:
            self.spent[role] = self.spent.get(role, TokenUsage()) + usage

    def take(self) -> dict[str, TokenUsage]:
        """What the current node's decisions spent (and start counting afresh)."""
        spent, self.spent = self.spent, {}
        return spent


class RetryBudget:
    """Seconds of retry waiting the whole run may still spend, shared by every backbone of the run."""

    def __init__(self, seconds: float):
        self.total = self.left = seconds
        self._lock = threading.Lock()

    def spend(self, seconds: float) -> bool:
        with self._lock:
            if seconds > self.left:
                return False
            self.left -= seconds
            return True


@dataclass(frozen=True)
class Backbone:
    """A chat model plus what its server can do; the agent loop adapts to the latter."""

    spec: str
    model: BaseChatModel = field(repr=False)
    force_handoff: bool = False
    """Weak models skip exploration: every call is forced (schema-constrained by the local server) to the handoff,
    with the evidence already in the prompt."""
    plain_tool_turns: bool = False
    """The server's chat template cannot render tool calls and results, so they are replayed as plain text."""
    retry: RetrySettings = field(default_factory=RetrySettings, repr=False)
    budget: RetryBudget | None = field(default=None, repr=False)
    meter: TokenMeter | None = field(default=None, repr=False)

    def invoke(self, model: Any, messages: list, *, say: Callable[[str], None] = lambda _: None,
               sleep: Callable[[float], None] = time.sleep, role: str = "-") -> Any:
        """`model.invoke(messages)`, retrying transient faults; other API errors become `BackboneError`s. The
        tokens of the reply count for `role` (`LimitReached` before a call once the run's cap is spent)."""
        import openai

        r = self.retry
        deadline = time.monotonic() + r.call_deadline_s
        if self.meter is not None:
            self.meter.check()
        for attempt in range(1, r.max_attempts + 1):
            try:
                reply = model.invoke(messages)
                if self.meter is not None:
                    self.meter.add(role, reply)
                return reply
            except openai.OpenAIError as e:
                error = translate_api_error(e, self.spec)
                if error is None:
                    raise
                if not is_transient(e) or attempt == r.max_attempts:
                    raise error from None
                wait = min(r.max_wait_s, max(_backoff(r, attempt), _retry_after(e)))
                if time.monotonic() + wait > deadline:
                    raise BackboneUnreachable(f"{error.message}; still failing after {attempt} attempts, past the "
                                              f"call deadline of {r.call_deadline_s:g} s") from None
                if self.budget is not None and not self.budget.spend(wait):
                    raise BackboneUnreachable(f"{error.message}; the run's retry budget of {self.budget.total:g} s "
                                              "of waiting is spent") from None
                say(f"backbone {self.spec}: {_fault(e)}; retry {attempt}/{r.max_attempts - 1} in {wait:.1f} s")
                _traced_wait(sleep, {"backbone": self.spec, "attempt": attempt, "wait_s": round(wait, 2),
                                     "fault": _fault(e)})
        raise AssertionError("unreachable")  # the loop returns or raises


def is_transient(e: Exception) -> bool:
    """Worth retrying: the connection dropped or timed out, the server failed (5xx) or asked us to slow down (429)."""
    import openai

    if isinstance(e, openai.APIConnectionError):  # includes timeouts
        return True
    return isinstance(e, openai.APIStatusError) and (e.status_code >= 500 or e.status_code in (408, 409, 429))


def _backoff(r: RetrySettings, attempt: int) -> float:
    import random

    return min(r.max_wait_s, r.initial_wait_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _retry_after(e: Exception) -> float:
    response = getattr(e, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:  # an HTTP date: not worth parsing, the backoff applies
        return 0.0


def _fault(e: Exception) -> str:
    import openai

    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code}"
    return type(e).__name__


def _traced_wait(sleep: Callable[[float], None], event: dict[str, Any]) -> None:
    """Wait as a run of its own, so every retry shows in the trace (LangSmith and --trace) under the role."""
    from langchain_core.runnables import RunnableLambda

    RunnableLambda(lambda ev: sleep(ev["wait_s"]) or ev, name="backbone_retry").invoke(event)


def load_backbone(spec: str, settings: RunSettings | None = None, *, budget: RetryBudget | None = None,
                  meter: TokenMeter | None = None, check: bool = True) -> Backbone:
    """The backbone for `spec` (all roles share one local server per process).

    With `check`, the server must answer now: `BackboneUnreachable` otherwise, within about 20 s.
    """
    from langchain_openai import ChatOpenAI

    retry = settings.retry if settings else RetrySettings()
    max_tokens = settings.backbone_max_tokens if settings else 2048
    parsed = parse_spec(spec)
    # max_retries=0: the retries are ours (Backbone.invoke), so each shows as a progress line and a trace run.
    timeout = _timeout(retry)
    if parsed.kind == "local":
        server = local_server()
        model = ChatOpenAI(model=parsed.model, base_url=server.url, api_key=parsed.api_key, timeout=timeout,
                           max_retries=0, temperature=0.0, max_tokens=min(max_tokens, LOCAL_MAX_TOKENS))
        return Backbone(spec=str(parsed), model=model, force_handoff=True, plain_tool_turns=True, retry=retry,
                        budget=budget, meter=meter)
    if check:
        check_reachable(parsed)
    # No temperature here: some hosted models refuse anything but their default.
    model = ChatOpenAI(model=parsed.model, base_url=parsed.base_url, api_key=parsed.api_key, timeout=timeout,
                       max_retries=0, max_tokens=max_tokens)
    return Backbone(spec=str(parsed), model=model, retry=retry, budget=budget, meter=meter)


def _timeout(retry: RetrySettings):
    import httpx

    return httpx.Timeout(retry.read_timeout_s, connect=CONNECT_TIMEOUT_S)


def check_reachable(parsed: BackboneSpec) -> None:
    """Ask the server's /models for the OpenAI model list. Only that counts as an answer: a proxy or another
    service on the port answers HTTP too (measured here: a 404 from an intercepting proxy for any address)."""
    import httpx

    base = parsed.base_url or "https://api.openai.com/v1"
    headers = {"Authorization": f"Bearer {parsed.api_key.get_secret_value()}"}
    try:
        response = httpx.get(base + "/models", headers=headers,
                             timeout=httpx.Timeout(PROBE_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
    except httpx.HTTPError as e:
        raise BackboneUnreachable(f"no OpenAI-compatible server answers at {base} ({type(e).__name__}) "
                                  f"for backbone {parsed}") from None
    if response.status_code in (401, 403):
        env = OPENAI_KEY_ENV if parsed.kind == "openai" else COMPATIBLE_KEY_ENV
        raise BackboneError(f"{base} refused the API key from ${env} (HTTP {response.status_code})")
    if response.status_code != 200 or not _is_model_list(response):
        raise BackboneUnreachable(f"no OpenAI-compatible server answers at {base} (GET /models: HTTP "
                                  f"{response.status_code}, not a model list) for backbone {parsed}")
    models = [m.get("id") for m in response.json()["data"] if isinstance(m, dict)]
    if models and parsed.model not in models:
        served = ", ".join(map(str, models[:5]))
        raise BackboneError(f"{base} does not serve model {parsed.model!r} (it serves {served})")


def _is_model_list(response) -> bool:
    try:
        return isinstance(response.json().get("data"), list)
    except (ValueError, AttributeError):
        return False


def translate_api_error(e: Exception, spec: str) -> BackboneError | None:
    """The backbone error an OpenAI client exception stands for, or None when it is not one (a bug: re-raise)."""
    import openai

    if isinstance(e, openai.APIConnectionError):  # includes timeouts
        return BackboneUnreachable(f"backbone {spec} stopped answering ({type(e).__name__})")
    if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return BackboneError(f"backbone {spec} refused the API key (HTTP {e.status_code})")
    if isinstance(e, openai.NotFoundError):
        return BackboneError(f"backbone {spec}: the server does not know this model or route (HTTP 404)")
    if isinstance(e, openai.APIStatusError):
        return BackboneError(
            f"backbone {spec} refused the request: HTTP {e.status_code} {type(e).__name__}{_body_hint(e)}"
        )
    return None


def _body_hint(e) -> str:
    """A short hint from an error body (llama.cpp explains context overflows there), redacted: a server may echo
    the request, Authorization header included."""
    body = getattr(e, "body", None)
    text = body.get("message", "") if isinstance(body, dict) else str(body or "")
    text = " ".join(redact(str(text)).split())
    return f": {text[:200]}" if text else ""


# ---------------------------------------------------------------------------------------------------------------
# The local server


class LocalServer:
    """`roles.local_server` for one HF model folder, on 127.0.0.1 and a free port, dying with this process."""

    PORT_TRIES = 3

    def __init__(self, model_dir: Path, *, threads: int, n_ctx: int = 8192):
        self.model_dir, self.threads, self.n_ctx = Path(model_dir), threads, n_ctx
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        """Start the server and wait until it answers; `BackboneUnreachable` with its log tail otherwise. A port
        taken between choosing and binding it is retried on another."""
        for attempt in range(1, self.PORT_TRIES + 1):
            self._spawn()
            if self._wait(deadline_s, retry_port=attempt < self.PORT_TRIES):
                return

    def _spawn(self) -> None:
        import tempfile

        from roles import local_server as server_module

        self.port = _free_port()
        fd, log = tempfile.mkstemp(prefix="local-server-", suffix=".log")
        self.log_path = Path(log)
        cmd = [sys.executable, "-m", server_module.__name__, "--model", str(self.model_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--threads", str(self.threads),
               "--alias", LOCAL_MODEL_ALIAS, "--parent-pid", str(os.getpid())]
        threads = str(self.threads)
        root = str(Path(server_module.__file__).resolve().parents[1])  # this checkout's roles, installed or not
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "RAYON_NUM_THREADS": threads,
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        on_main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            cmd,
            stdout=fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent(signal.SIGTERM) if on_main else None,
        )
        os.close(fd)
        atexit.register(self.stop)

    def _wait(self, deadline_s: float, *, retry_port: bool = False) -> bool:
        """True once /models answers; False when the port was taken and `retry_port`; `BackboneUnreachable` else."""
        import httpx

        from roles.local_server import EXIT_PORT_IN_USE

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            code = self.proc.poll()
            if code == EXIT_PORT_IN_USE and retry_port:
                return False
            if code is not None:
                raise BackboneUnreachable(f"the local model server exited with code {code}: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/models", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.25)
        self.stop()
        raise BackboneUnreachable(
            f"no OpenAI-compatible server answers at {self.url} after {deadline_s:.0f} s "
            f"(the local model server; log {self.log_path}): {self.log_tail(4)}"
        )

    def log_tail(self, lines: int = 8) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)


_server: LocalServer | None = None


def local_server() -> LocalServer:
    """The one local server of this process, started on first use (the first use on a machine also converts the
    embedded GGUF to an HF folder: about 35 s, once)."""
    global _server
    if _server is not None and _server.proc is not None and _server.proc.poll() is None:
        return _server
    _require_server_packages()
    threads = _local_threads()
    from tools.model import convert_embedded

    server = LocalServer(convert_embedded(), threads=threads)
    server.start()
    _server = server
    return server


def _local_threads() -> int:
    """Torch threads for the local server: one by default. On 2 shared, busy cores more threads spin against other
    work (llama.cpp fell from 33 to 0.6 tokens/s with two, measured), and one is plenty for a 135M model."""
    raw = os.environ.get(LOCAL_THREADS_ENV, "1")
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise InputError(f"${LOCAL_THREADS_ENV} must be a positive integer, not {raw!r}")
    return threads


def _require_server_packages() -> None:
    from importlib.util import find_spec

    missing = [m for m in ("llguidance", "fastapi", "uvicorn", "transformers") if find_spec(m) is None]
    if missing:
        raise InputError(f"the local backbone needs {', '.join(missing)} (bash install.sh installs them)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
