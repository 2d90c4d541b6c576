"""Backbone specs → chat models for the LLM roles.

A spec names where a role's decisions come from:

- `openai:MODEL`: the OpenAI API, key from `OPENAI_API_KEY`;
- `openai-compatible:URL#MODEL`: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...), key from
  `OPENAI_COMPATIBLE_API_KEY` (default "none", for local servers that ask for none);
- `local`: llama-cpp-python's OpenAI-compatible server on 127.0.0.1, serving the embedded SmolLM2 GGUF. It is
  started on first use, shared by every role, and stopped when the process exits.

Keys live only in `SecretStr` fields and the client; specs, settings, errors and reprs never carry them.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from tasks.base import InputError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

OPENAI_KEY_ENV = "OPENAI_API_KEY"
COMPATIBLE_KEY_ENV = "OPENAI_COMPATIBLE_API_KEY"
LOCAL = "local"
LOCAL_MODEL_ALIAS = "local"
LOCAL_THREADS_ENV = "POSTTRAIN_LOCAL_THREADS"

CONNECT_TIMEOUT_S = 5.0
"""Per connection attempt; with one retry an unreachable server is reported well within 30 s."""
READ_TIMEOUT_S = 300.0
"""A long answer from a slow server is not an outage."""
STARTUP_DEADLINE_S = 30.0
LOCAL_MAX_TOKENS = 768
"""The local model only ever writes one bounded handoff per call; this caps a runaway string."""


class BackboneError(RuntimeError):
    """A backbone that cannot serve the run: bad key, refused request, broken local server."""


class BackboneUnreachable(BackboneError):
    """No server answers where the spec points. The run stops with its state saved (resume once it is back)."""


class BackboneSpec(BaseModel):
    """A parsed spec. `api_key` is a SecretStr, so reprs, logs and dumps show it masked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["openai", "openai-compatible", "local"]
    model: str
    base_url: str | None = None
    """Up to and including /v1; None is the OpenAI API."""
    api_key: SecretStr = SecretStr("none")

    def __str__(self) -> str:
        if self.kind == "local":
            return LOCAL
        if self.kind == "openai":
            return f"openai:{self.model}"
        return f"openai-compatible:{self.base_url}#{self.model}"


def parse_spec(spec: str) -> BackboneSpec:
    """Parse a backbone spec; a malformed spec or a missing key is an `InputError` (exit code 2)."""
    if spec == LOCAL:
        return BackboneSpec(kind="local", model=LOCAL_MODEL_ALIAS)
    kind, sep, rest = spec.partition(":")
    if kind == "openai" and sep and rest:
        key = os.environ.get(OPENAI_KEY_ENV, "")
        if not key:
            raise InputError(f"backbone {spec!r} needs an API key in ${OPENAI_KEY_ENV}")
        return BackboneSpec(kind="openai", model=rest, api_key=SecretStr(key))
    if kind == "openai-compatible" and sep:
        url, hash_, model = rest.rpartition("#")
        if not hash_ or not url or not model or not url.startswith(("http://", "https://")):
            raise InputError(f"backbone {spec!r}: expected openai-compatible:URL#MODEL, e.g. "
                             "openai-compatible:http://127.0.0.1:8000/v1#Qwen/Qwen3-8B")
        key = os.environ.get(COMPATIBLE_KEY_ENV) or "none"
        return BackboneSpec(kind="openai-compatible", model=model, base_url=url.rstrip("/"),
                            api_key=SecretStr(key))
    raise InputError(f"unknown backbone {spec!r}: use playbook, local, openai:MODEL or "
                     "openai-compatible:URL#MODEL")


def check_spec(spec: str) -> None:
    """Everything about `spec` that can be checked without reaching a server: its form, its key, and for `local`
    the server packages. `InputError` otherwise."""
    if parse_spec(spec).kind == "local":
        _require_server_packages()


@dataclass(frozen=True)
class Backbone:
    """A chat model plus what its server can do; the agent loop adapts to the latter."""

    spec: str
    model: BaseChatModel = field(repr=False)
    force_handoff: bool = False
    """Weak models skip exploration: every call is forced (grammar-constrained on llama.cpp) to the handoff,
    with the evidence already in the prompt."""
    plain_tool_turns: bool = False
    """The server's chat template cannot render tool calls and results, so they are replayed as plain text."""


_backbones: dict[str, Backbone] = {}
_lock = threading.Lock()


def load_backbone(spec: str, *, check: bool = True) -> Backbone:
    """The backbone for `spec`, built once per process (so all roles share one local server).

    With `check`, the server must answer now: `BackboneUnreachable` otherwise, within about 30 s.
    """
    with _lock:
        if spec not in _backbones:
            _backbones[spec] = _build(parse_spec(spec), check=check)
        return _backbones[spec]


def _build(parsed: BackboneSpec, *, check: bool) -> Backbone:
    from langchain_openai import ChatOpenAI

    if parsed.kind == "local":
        server = local_server()
        model = ChatOpenAI(model=parsed.model, base_url=server.url, api_key=parsed.api_key, timeout=_timeout(),
                           max_retries=1, temperature=0.0, max_tokens=LOCAL_MAX_TOKENS)
        return Backbone(spec=str(parsed), model=model, force_handoff=True, plain_tool_turns=True)
    if check:
        check_reachable(parsed)
    # No temperature here: some hosted models refuse anything but their default.
    model = ChatOpenAI(model=parsed.model, base_url=parsed.base_url, api_key=parsed.api_key, timeout=_timeout(),
                       max_retries=1)
    return Backbone(spec=str(parsed), model=model)


def _timeout():
    import httpx

    return httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)


def check_reachable(parsed: BackboneSpec, deadline_s: float = 25.0) -> None:
    """Ask the server's /models for the OpenAI model list. Only that counts as an answer: a proxy or another
    service on the port answers HTTP too (measured here: a 404 from an intercepting proxy for any address)."""
    import httpx

    base = parsed.base_url or "https://api.openai.com/v1"
    headers = {"Authorization": f"Bearer {parsed.api_key.get_secret_value()}"}
    try:
        response = httpx.get(base + "/models", headers=headers,
                             timeout=httpx.Timeout(deadline_s, connect=CONNECT_TIMEOUT_S))
    except httpx.HTTPError as e:
        raise BackboneUnreachable(f"no OpenAI-compatible server answers at {base} ({type(e).__name__}) "
                                  f"for backbone {parsed}") from None
    if response.status_code in (401, 403):
        env = OPENAI_KEY_ENV if parsed.kind == "openai" else COMPATIBLE_KEY_ENV
        raise BackboneError(f"{base} refused the API key from ${env} (HTTP {response.status_code})")
    if response.status_code != 200 or not _is_model_list(response):
        raise BackboneUnreachable(f"no OpenAI-compatible server answers at {base} (GET /models: HTTP "
                                  f"{response.status_code}, not a model list) for backbone {parsed}")


def _is_model_list(response) -> bool:
    try:
        return isinstance(response.json().get("data"), list)
    except (ValueError, AttributeError):
        return False


def translate_api_error(e: Exception, spec: str) -> BackboneError | None:
    """The backbone error an OpenAI client exception stands for, or None when it is not one (a bug: re-raise).

    Messages are rebuilt from the status and type, never from the server's text, which may echo a masked key.
    """
    import openai

    if isinstance(e, openai.APIConnectionError):  # includes timeouts
        return BackboneUnreachable(f"backbone {spec} stopped answering ({type(e).__name__})")
    if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return BackboneError(f"backbone {spec} refused the API key (HTTP {e.status_code})")
    if isinstance(e, openai.APIStatusError):
        return BackboneError(f"backbone {spec} refused the request: HTTP {e.status_code} {type(e).__name__}"
                             f"{_body_hint(e)}")
    return None


def _body_hint(e) -> str:
    """A short, key-free hint from an error body (llama.cpp explains context overflows there)."""
    body = getattr(e, "body", None)
    text = body.get("message", "") if isinstance(body, dict) else str(body or "")
    return f": {text[:200]}" if text and "key" not in text.lower() else ""


# ---------------------------------------------------------------------------------------------------------------
# The local server


class LocalServer:
    """llama-cpp-python's OpenAI-compatible server for one GGUF, on 127.0.0.1 and a free port."""

    def __init__(self, gguf: Path, *, threads: int, n_ctx: int = 8192):
        self.gguf, self.threads, self.n_ctx = gguf, threads, n_ctx
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        """Start the server and wait until it answers; `BackboneUnreachable` with its log tail otherwise."""
        import tempfile

        self.port = _free_port()
        fd, log = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self.log_path = Path(log)
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
               "--n_threads_batch", str(self.threads), "--model_alias", LOCAL_MODEL_ALIAS]
        on_main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(cmd, stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent if on_main else None)
        os.close(fd)
        atexit.register(self.stop)
        self._wait(deadline_s)

    def _wait(self, deadline_s: float) -> None:
        import httpx

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            code = self.proc.poll()
            if code is not None:
                raise BackboneUnreachable(f"the local llama-cpp server exited with code {code}: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.25)
        self.stop()
        raise BackboneUnreachable(f"no OpenAI-compatible server answers at {self.url} after {deadline_s:.0f} s "
                                  f"(local llama-cpp server; log {self.log_path})")

    def log_tail(self, lines: int = 8) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_server: LocalServer | None = None


def local_server() -> LocalServer:
    """The one local server of this process, started on first use."""
    global _server
    if _server is not None and _server.proc is not None and _server.proc.poll() is None:
        return _server
    _require_server_packages()
    from tools.model import embedded_gguf

    # One thread by default: on 2 shared, busy cores llama.cpp's spinning threads fell from 33 to 0.6 tokens/s
    # with two (measured); one is plenty for a 135M model.
    threads = int(os.environ.get(LOCAL_THREADS_ENV, "1"))
    server = LocalServer(embedded_gguf(), threads=threads)
    server.start()
    _server = server
    return server


def _require_server_packages() -> None:
    from importlib.util import find_spec

    missing = [m for m in ("llama_cpp", "sse_starlette", "starlette_context") if find_spec(m) is None]
    if missing:
        raise InputError(f"the local backbone needs llama-cpp-python's server ({', '.join(missing)} missing): "
                         "pip install 'llama-cpp-python[server]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if this process dies (even by SIGKILL), so no server outlives a run."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
