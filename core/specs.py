"""Backbone specs, the one way a model is named for a role or a judge:

- `openai:MODEL`: the OpenAI API, key from `OPENAI_API_KEY`;
- `openai-compatible:URL#MODEL`: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...), key from
  `OPENAI_COMPATIBLE_API_KEY` (default "none", for local servers that ask for none);
- `local`: the embedded student, served on 127.0.0.1 by the run itself.

Keys live only in `SecretStr` fields: reprs, dumps and messages show them masked.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, SecretStr

from core.errors import InputError

OPENAI_KEY_ENV = "OPENAI_API_KEY"
COMPATIBLE_KEY_ENV = "OPENAI_COMPATIBLE_API_KEY"
LOCAL = "local"
LOCAL_MODEL_ALIAS = "local"
LOCAL_HOSTS_ENV = "POSTTRAIN_LOCAL_HOSTS"
"""Comma-separated host names the user declares local (a model server on their own network) besides loopback."""


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


def is_local(parsed: BackboneSpec) -> bool:
    """Served on this machine (or a host the user declared local): the only kind that may generate training data."""
    if parsed.kind == "local":
        return True
    if parsed.kind != "openai-compatible" or not parsed.base_url:
        return False
    host = (urlparse(parsed.base_url).hostname or "").lower()
    declared = {h.strip().lower() for h in os.environ.get(LOCAL_HOSTS_ENV, "").split(",") if h.strip()}
    return host in {"localhost", "127.0.0.1", "::1"} or host.startswith("127.") or host in declared


STUDENT = "student"
"""The generator that is the model this iteration starts from, run through the evaluation's own provider."""


def generator_problem(spec: str) -> str | None:
    """Why `spec` may not write training data (None: it may). Only local models may: the student, or an
    OpenAI-compatible server on this machine or on a host the user declared local; the check is the endpoint's
    host, made before any request."""
    if spec == STUDENT:
        return None
    try:
        parsed = parse_spec(spec)
    except InputError as e:
        return f"--generator: {e.message}"
    if parsed.kind == "local":
        return f"--generator {LOCAL}: write --generator {STUDENT} (the model being trained writes the rows)"
    if not is_local(parsed):
        where = f"host {urlparse(parsed.base_url).hostname}" if parsed.base_url else "the OpenAI API"
        return (f"--generator {parsed}: a remote model API ({where}) may not write training data; serve an "
                f"open-weights model locally, or declare its host local in ${LOCAL_HOSTS_ENV}")
    return None
