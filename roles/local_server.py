"""The `local` backbone's server: one HF model folder behind a minimal OpenAI-compatible HTTP API on 127.0.0.1.

    python -m roles.local_server --model DIR --port PORT [--threads 1] [--n_ctx 8192] [--alias local]

- `GET /v1/models` lists the one model, under its alias.
- `POST /v1/chat/completions` (non-streaming). A `tool_choice` that names a function (or "required" with a single
  tool) forces that call: its arguments are decoded under the function's JSON schema, with llguidance masking the
  logits token by token, so they always parse and fit the schema's enums, ranges, lengths and item counts unless
  `max_tokens` cuts them short. `response_format` (json_schema, json_object) constrains the content the same way.
  Otherwise the reply is plain text: the model cannot call tools unprompted.
- Tool calls and tool results in the history are replayed as plain text (SmolLM2's chat template renders neither).
- Decoding is greedy at temperature 0 (the `local` backbone's setting), sampled otherwise; one request at a time.

The process binds its port before the slow imports (so the port is held from the first moment), logs to stderr
(uvicorn's access lines included) and exits when its parent does (`--parent-pid`, on top of the parent's
`die_with_parent`). Malformed requests get HTTP 400 with an OpenAI-style error body.

The pure parts (request parsing, response assembly, the tokenizer fix, the JSON grammar) import neither torch nor
fastapi, so they are tested without a model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("local_server")

DEFAULT_MAX_TOKENS = 512
EXIT_LOAD_FAILED = 2
EXIT_PORT_IN_USE = 3
"""The exit code when the port is taken: the parent starts it again on another."""

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""Fixed separators and no free whitespace: with free whitespace a greedy small model can indent forever."""

BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
ROLES = {"system", "user", "assistant", "tool", "developer", "function"}


class RequestError(ValueError):
    """A request this server cannot serve as asked: HTTP 400 with an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": self.param, "code": None}}


# ------------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class Request:
    """A chat completion request, as this server runs it."""

    messages: list[dict]
    """Plain role/content turns, ready for the chat template."""
    forced: str | None = None
    """The function the reply must call, if any."""
    schema: dict | None = None
    """The JSON schema the generated text must match (the forced call's arguments, or the response format)."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


def parse_request(body: Any) -> Request:
    """An OpenAI chat completion body as a `Request`; `RequestError` for anything this server does not do."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if body.get("stream"):
        raise RequestError("stream is not supported", "stream")
    if body.get("n") not in (None, 1):
        raise RequestError("only n=1 is supported", "n")
    if body.get("logprobs"):
        raise RequestError("logprobs are not supported", "logprobs")
    messages = plain_messages(body.get("messages"))
    forced, schema = _forced_call(body.get("tools"), body.get("tool_choice"))
    if schema is None:
        schema = _response_schema(body.get("response_format"))
    max_tokens = body.get("max_tokens") if body.get("max_tokens") is not None else body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise RequestError(f"temperature must be a number from 0 to 2, got {temperature!r}", "temperature")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(f"seed must be an integer, got {seed!r}", "seed")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("stop must be a string or a list of non-empty strings", "stop")
    return Request(messages=messages, forced=forced, schema=schema, max_tokens=max_tokens,
                   temperature=float(temperature), seed=seed, stop=stop)


def plain_messages(raw: Any) -> list[dict]:
    """Role/content turns with text content only: assistant tool calls as `name(arguments)` lines, tool results as
    user turns headed `[name result]` (the same text `roles.agent.loop.plain_turns` writes), developer as system."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list", "messages")
    out, names = [], {}
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(f"messages[{i}] needs a role, one of {', '.join(sorted(ROLES))}", "messages")
        role, text = m["role"], _text(m.get("content"), i)
        if role == "assistant" and m.get("tool_calls"):
            calls = [_call_text(c, i) for c in m["tool_calls"]]
            names |= {c.get("id"): c["function"]["name"] for c in m["tool_calls"]}
            text = "\n".join(filter(None, [text, *calls]))
        elif role in ("tool", "function"):  # OpenAI tool messages carry the call's id, not the function's name
            name = m.get("name") or names.get(m.get("tool_call_id")) or "tool"
            role, text = "user", f"[{name} result]\n{text}"
        elif role == "developer":
            role = "system"
        out.append({"role": role, "content": text})
    return out


def _text(content: Any, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestError(f"messages[{i}].content must be text (a string or text parts)", "messages")


def _call_text(call: Any, i: int) -> str:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not fn.get("name"):
        raise RequestError(f"messages[{i}].tool_calls needs function names", "messages")
    return f"{fn['name']}({fn.get('arguments') or ''})"


def _forced_call(tools: Any, choice: Any) -> tuple[str | None, dict | None]:
    """The function name the reply must call and its parameters' schema, or (None, None)."""
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise RequestError("tools must be a list", "tools")
    functions: dict[str, dict] = {}
    for t in tools:
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RequestError("every tool must be {'type': 'function', 'function': {'name': ...}}", "tools")
        functions[fn["name"]] = fn
    if choice in (None, "none", "auto"):
        return None, None
    if choice == "required":
        if len(functions) != 1:
            raise RequestError(f"tool_choice 'required' needs exactly one tool here (got {len(functions)}); "
                               "name the function instead", "tool_choice")
        name = next(iter(functions))
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
    else:
        raise RequestError(f"unsupported tool_choice {choice!r}", "tool_choice")
    if name not in functions:
        raise RequestError(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
    schema = functions[name].get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise RequestError(f"the parameters of {name!r} must be a JSON schema object", "tools")
    return name, schema


def _response_schema(fmt: Any) -> dict | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        schema = fmt["json_schema"].get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    raise RequestError(f"unsupported response_format {fmt!r}", "response_format")


# ----------------------------------------------------------------------------------------------- responses


def completion_response(*, model: str, text: str, forced: str | None, finish: str, prompt_tokens: int,
                        completion_tokens: int) -> dict:
    """The OpenAI chat completion for one generated text: a call of `forced` with `text` as its arguments, or
    plain content. `finish` is "stop" or "length"; a completed forced call finishes as "tool_calls"."""
    if forced is not None:
        message: dict = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": forced, "arguments": text}}]}
        finish = "tool_calls" if finish == "stop" else finish
    else:
        message = {"role": "assistant", "content": text}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def models_response(alias: str) -> dict:
    return {"object": "list", "data": [{"id": alias, "object": "model", "created": 0, "owned_by": "posttrain-graph"}]}


# ------------------------------------------------------------------------------------ constrained decoding


def byte_level_fix(spec: dict) -> dict:
    """A tokenizer.json that llguidance reads as what it is.

    The GGUF-converted SmolLM2 tokenizer is byte-level BPE (ByteLevel pre-tokenizer, `Ġ` for a space) but also
    carries `byte_fallback: true` and a ByteFallback/Fuse/Replace("▁") decoder. llguidance then takes it for
    sentencepiece and decodes `Ġ` as `Ä`: ` "` is refused and a forced call stops after `{"decision":`. So for a
    byte-level pre-tokenizer: no byte fallback, and the plain ByteLevel decoder. Other tokenizers are returned as
    they are."""
    if not _is_byte_level(spec.get("pre_tokenizer")):
        return spec
    spec = json.loads(json.dumps(spec))
    spec["model"]["byte_fallback"] = False
    spec["decoder"] = dict(BYTE_LEVEL_DECODER)
    return spec


def _is_byte_level(pre: Any) -> bool:
    if not isinstance(pre, dict):
        return False
    if pre.get("type") == "Sequence":
        return any(_is_byte_level(p) for p in pre.get("pretokenizers") or [])
    return pre.get("type") == "ByteLevel"


def json_grammar(schema: dict) -> str:
    """The llguidance grammar for `schema`, laid out as `JSON_LAYOUT`; `RequestError` if it cannot be compiled."""
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(schema, overrides=JSON_LAYOUT)
    except ValueError as e:
        raise RequestError(f"cannot constrain to this JSON schema: {e}") from None
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise RequestError(f"cannot constrain to this JSON schema: {_first_line(error)}")
    return grammar


class JsonConstraint:
    """llguidance over one tokenizer: a matcher per request, and the tokens it allows next as a boolean mask."""

    def __init__(self, tokenizer_json: str, *, n_vocab: int, eos_token: int):
        from llguidance import LLTokenizer

        spec = byte_level_fix(json.loads(tokenizer_json))
        self.tokenizer = LLTokenizer(json.dumps(spec), n_vocab=n_vocab, eos_token=eos_token)
        self.n_vocab = n_vocab

    @classmethod
    def for_hf(cls, hf_tokenizer, n_vocab: int) -> JsonConstraint:
        """From a transformers fast tokenizer (padding and truncation off, as llguidance.hf does)."""
        from copy import copy

        backend = copy(hf_tokenizer.backend_tokenizer)
        backend.no_padding()
        backend.no_truncation()
        return cls(backend.to_str(), n_vocab=n_vocab, eos_token=hf_tokenizer.eos_token_id)

    def matcher(self, schema: dict):
        from llguidance import LLMatcher

        m = LLMatcher(self.tokenizer, json_grammar(schema), log_level=0)
        if m.is_error():
            raise RequestError(f"cannot constrain to this JSON schema: {_first_line(m.get_error())}")
        return m

    def allowed(self, matcher):
        """A numpy boolean array over the vocabulary: the tokens `matcher` accepts next."""
        import numpy as np

        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), np.uint8), bitorder="little")
        return bits[: self.n_vocab].astype(bool)


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0][:300]


# -------------------------------------------------------------------------------------------------- model


class LocalModel:
    """One HF causal LM and its tokenizer, generating one request at a time."""

    def __init__(self, model_dir: str, *, n_ctx: int, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the log's tail goes into start-up errors: no progress bars there
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        config = self.model.config
        self.n_ctx = min(n_ctx, getattr(config, "max_position_embeddings", None) or n_ctx)
        eos = self.model.generation_config.eos_token_id
        self.eos = {self.tokenizer.eos_token_id, *([eos] if isinstance(eos, int) else eos or [])} - {None}
        self.constraint = JsonConstraint.for_hf(self.tokenizer, config.vocab_size)
        self._lock = threading.Lock()

    def complete(self, req: Request, alias: str) -> dict:
        prompt = list(self.tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=True,
                                                         return_dict=True)["input_ids"])
        if len(prompt) + req.max_tokens > self.n_ctx:
            raise RequestError(f"Requested tokens ({len(prompt)} prompt + {req.max_tokens} max_tokens) exceed "
                               f"context window of {self.n_ctx}", "messages")
        matcher = self.constraint.matcher(req.schema) if req.schema is not None else None
        start = time.monotonic()
        with self._lock:
            tokens, finish = self._generate(prompt, req, matcher)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if req.stop and matcher is None:
            text, stopped = _cut_at_stop(text, req.stop)
            finish = "stop" if stopped else finish
        log.info("completion: %d prompt + %d generated tokens in %.1f s, finish %s%s", len(prompt), len(tokens),
                 time.monotonic() - start, finish, f", forced {req.forced}" if req.forced else "")
        return completion_response(model=alias, text=text, forced=req.forced, finish=finish,
                                   prompt_tokens=len(prompt), completion_tokens=len(tokens))

    def _generate(self, prompt: list[int], req: Request, matcher) -> tuple[list[int], str]:
        """Greedy (temperature 0) or sampled decoding with a KV cache; the matcher, if any, masks every step."""
        torch = self.torch
        from transformers import DynamicCache

        generator = torch.Generator().manual_seed(req.seed) if req.seed is not None else None
        out: list[int] = []
        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            logits = self.model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True).logits[0, -1]
            for _ in range(req.max_tokens):
                logits = logits.float()
                if matcher is not None:
                    allowed = torch.from_numpy(self.constraint.allowed(matcher))
                    if not allowed.any():  # the grammar is complete
                        return out, "stop"
                    logits = logits[: len(allowed)].masked_fill(~allowed, float("-inf"))
                if req.temperature <= 0:
                    token = int(torch.argmax(logits))
                else:
                    probs = torch.softmax(logits / req.temperature, -1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                if matcher is not None and not matcher.consume_token(token):
                    raise RuntimeError(f"the JSON matcher refused the token it allowed: {matcher.get_error()}")
                if token in self.eos:
                    return out, "stop"
                out.append(token)
                if matcher is not None and matcher.is_stopped():  # nothing but the end can follow
                    return out, "stop"
                if req.stop and matcher is None and _cut_at_stop(self.tokenizer.decode(out), req.stop)[1]:
                    return out, "stop"
                logits = self.model(input_ids=torch.tensor([[token]]), past_key_values=cache,
                                    use_cache=True).logits[0, -1]
        return out, "length"


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# ---------------------------------------------------------------------------------------------------- app


def build_app(model: LocalModel, alias: str):
    """The FastAPI app. Plain Starlette routes: the handlers read and answer raw JSON, so every refusal has the
    OpenAI error shape (FastAPI's own validation would answer 422 with its own)."""
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    app = FastAPI(title="posttrain-graph local backbone", docs_url=None, redoc_url=None, openapi_url=None)

    async def models(_http) -> JSONResponse:
        return JSONResponse(models_response(alias))

    async def chat(http) -> JSONResponse:
        try:
            try:
                body = json.loads(await http.body())
            except ValueError:
                raise RequestError("the request body is not JSON") from None
            req = parse_request(body)
            return JSONResponse(await run_in_threadpool(model.complete, req, alias))
        except RequestError as e:
            log.info("refused: %s", e)
            return JSONResponse(e.body(), status_code=400)
        except Exception as e:  # a bug here: the client sees a 5xx with its name, the log has the traceback
            log.exception("failed")
            message = f"internal error: {type(e).__name__}: {_first_line(str(e))}"
            return JSONResponse({"error": {"message": message, "type": "server_error", "param": None,
                                           "code": None}}, status_code=500)

    app.add_route("/v1/models", models, methods=["GET"])
    app.add_route("/v1/chat/completions", chat, methods=["POST"])
    return app


# --------------------------------------------------------------------------------------------------- main


def _watch_parent(parent: int) -> None:
    """Exit when `parent` is gone (the process gets reparented), even where PDEATHSIG was not set."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("parent %d is gone: exiting", parent)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roles.local_server", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="an HF model folder (config, weights, tokenizer)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--n_ctx", type=int, default=8192, help="prompt + max_tokens limit")
    p.add_argument("--alias", default="local", help="the model name clients use")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if a.parent_pid is not None:
        _watch_parent(a.parent_pid)
    try:  # before the slow imports: the port is held from the start, and a taken one fails at once
        sock = _bind(a.host, a.port)
    except OSError as e:
        log.error("cannot bind %s:%d: %s", a.host, a.port, e)
        return EXIT_PORT_IN_USE
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        log.error("cannot load the model: %s has no config.json (give an HF model folder)", a.model)
        return EXIT_LOAD_FAILED
    start = time.monotonic()
    try:
        import torch

        torch.set_num_threads(max(1, a.threads))
        torch.set_num_interop_threads(1)
        model = LocalModel(a.model, n_ctx=a.n_ctx, dtype=a.dtype)
    except Exception as e:  # noqa: BLE001  one line in the log: the parent puts its tail into the error
        log.error("cannot load the model from %s: %s: %s", a.model, type(e).__name__, _first_line(str(e)))
        return EXIT_LOAD_FAILED
    log.info("loaded %s in %.1f s (%s, %d thread(s), n_ctx %d)", a.model, time.monotonic() - start, a.dtype,
             torch.get_num_threads(), model.n_ctx)

    import uvicorn

    # Access lines on (level info): one "POST /v1/chat/completions" line per request.
    server = uvicorn.Server(uvicorn.Config(build_app(model, a.alias), log_level="info",
                                           timeout_graceful_shutdown=2))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
