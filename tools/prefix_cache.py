"""inspect-ai model provider `prefixcache/<model path>`: inspect's `hf/` provider with the shared prompt prefix cached.

Few-shot tasks send every sample the same long system prefix (about 2,200 tokens for a 10-shot math solver). The
`hf/` provider prefills it again for every sample and then, at every decoding step, reads (and copies) a private
copy of its keys and values for every row of the batch. This provider renders and tokenizes prompts exactly as
`hf/` does (it builds an `hf/` instance and uses its chat rendering, tokenizer and model) and then:

- finds the longest token prefix the prompts share and prefills it once (kept for later batches);
- prefills each row's own tokens against it, one row at a time, so no compute goes to padding;
- decodes with transformers' own `generate`, with the settings inspect's `GenerateConfig` gives, passed as `hf/`
  passes them (temperature 0 is greedy), in segments of a few steps after which finished rows leave the batch;
- keeps the prefix's keys and values once for all rows: a registered attention function attends the whole
  batch's queries to that one copy and each row's queries to its own keys, and merges the two with their
  log-sum-exp into one softmax.

Batch layout: each row is `prefix + pad + suffix`, with attention-mask zeros on the pad. transformers derives
position ids from the mask's cumulative sum, so every real token keeps the position it has in `hf/`'s left-padded
layout (`pad + prefix + suffix`). The two computations differ only in floating-point summation order; the tests
and `bench/eval_throughput.py` compare completions with `hf/` token for token.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    GenerateConfig,
    Logprobs,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

if TYPE_CHECKING:
    import torch
    from transformers import Cache

logger = logging.getLogger(__name__)

PROVIDER = "prefixcache"
ATTENTION = "prefixcache_shared"
"""Name of the attention function registered with transformers (it falls back to `sdpa` when no prefix is set)."""
DEFAULT_BATCH_SIZE = 64
"""Used when neither the batch_size model arg nor max_connections is given. Larger than `hf/`'s 32: on CPU the
matrix products run several times faster per row with 64 rows than with 16, and finished rows leave the batch."""
BATCH_WAIT_S = 0.5
"""A batch closes when it is full or when no request has arrived for this long (`hf/` waits 2 s)."""
POLL_S = 0.02
MIN_PREFIX_TOKENS = 16
"""Shorter shared prefixes (a bare chat-template header) are not worth a cache entry."""
MIN_PREFIX_GAIN = 64
"""Compute a new prefix only when it beats the best cached one by this many tokens, so chance overlaps of a few
tokens between questions do not trigger a new prefill."""
MAX_PREFIXES = 4

# The batch cache whose shared prefix the attention function must use; set only around one `generate` call, in
# the worker thread that runs it.
_ACTIVE: ContextVar[Cache | None] = ContextVar("prefixcache_active", default=None)


@modelapi(name=PROVIDER)
def prefixcache() -> type[ModelAPI]:
    """Registry entry: `prefixcache/<local model folder or hub id>`."""
    return PrefixCacheAPI


# ----------------------------------------------------------------------------------------------------------
# Choosing the prefix (pure functions, no torch)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def batch_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix that all rows share."""
    first = rows[0]
    n = len(first)
    for row in rows[1:]:
        n = min(n, common_prefix_len(first, row))
    return n


@dataclass(frozen=True)
class PrefixPlan:
    """What to do for one batch: use `length` tokens of prefix, cut from cached entry `source` or computed anew."""

    length: int
    source: tuple[int, ...] | None
    """Key of the cached prefix to cut from; None means prefill `rows[0][:length]` now."""


def plan_prefix(
    rows: Sequence[Sequence[int]], cached: Sequence[tuple[int, ...]], last_prompt: Sequence[int] | None
) -> PrefixPlan | None:
    """Decide how much of the batch's shared prefix to take from cache (or to compute), or None for no prefix.

    The prefix must leave at least one token of every row to feed the model (generate needs logits). A single
    request has no batch-mates to compare with, so the previous prompt stands in for them.
    """
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    in_batch = batch_prefix_len(rows) if len(rows) > 1 else len(first)
    if len(rows) > 1:
        shared = in_batch
    else:
        shared = common_prefix_len(first, last_prompt) if last_prompt is not None else 0
    shared = min(shared, limit)
    best: tuple[int, tuple[int, ...] | None] = (0, None)
    for key in cached:
        m = min(common_prefix_len(key, first), in_batch, limit)
        if m > best[0]:
            best = (m, key)
    if shared >= MIN_PREFIX_TOKENS and shared >= best[0] + MIN_PREFIX_GAIN:
        return PrefixPlan(shared, None)
    if best[0] >= MIN_PREFIX_TOKENS:
        return PrefixPlan(best[0], best[1])
    return None


# ----------------------------------------------------------------------------------------------------------
# The provider


def default_threads() -> int:
    """Intra-op threads for generation: torch's setting, less one core when that is all the cores there are.

    On a 2-core machine shared with other work (the agents, a local LLM server, other evaluations), torch's two
    OpenMP threads wait on each other at every operation whenever the other core is busy: measured here, a batch
    ran about 10 times slower with 2 threads than with 1 while the load average was 3 to 4.
    """
    import os

    import torch

    cores = os.cpu_count() or 1
    current = torch.get_num_threads()
    return max(1, min(current, cores - 1)) if current >= cores else current


def _positive_int_arg(model_args: dict[str, Any], name: str) -> int | None:
    value = model_args.pop(name, None)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{PROVIDER}/: {name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class _Settings:
    """`generate` keyword arguments for one request; requests share a batch only when these are equal."""

    kwargs: tuple[tuple[str, Hashable], ...]
    stop_seqs: tuple[str, ...] | None
    batch_size: int


@dataclass
class _Completion:
    output: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    logprobs: Any | None
    time: float


@dataclass
class _Request:
    prompt: str
    settings: _Settings
    wake: anyio.Event = field(default_factory=anyio.Event)
    """Set when the request has its outcome, or when it is promoted to lead the batching."""
    result: _Completion | None = None
    error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None


class PrefixCacheAPI(ModelAPI):
    """inspect's `hf/` provider with the prompts' shared prefix prefilled once and shared by every batch row.

    model_args: everything `hf/` accepts (device, tokenizer, model_path, tokenizer_path, chat_template,
    use_chat_template, tokenizer_call_args, enable_thinking, do_sample, trust_remote_code, auto_model_class, and
    extra `from_pretrained` arguments such as `torch_dtype`), with the same meaning, plus `batch_size` (requests
    per batch; default: the config's `max_connections`, else 64) and `threads` (torch intra-op threads while a
    batch runs; default: `default_threads()`). `hidden_states` is not supported.
    """

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, api_key_vars=["HF_TOKEN"],
                         config=config)
        if model_args.get("hidden_states") is not None:
            raise ValueError(f"{PROVIDER}/ does not support the hidden_states model arg (use hf/)")
        self.batch_size: int | None = _positive_int_arg(model_args, "batch_size")
        self.threads: int = _positive_int_arg(model_args, "threads") or default_threads()
        from inspect_ai.model._providers.hf import HuggingFaceAPI  # imports torch: only when a model is made

        # The hf/ provider itself loads the model and tokenizer and renders the chat, so both agree by construction.
        self._hf = HuggingFaceAPI(model_name, base_url, api_key, config, **model_args)
        self._prefixes = _PrefixStore(self._hf.model)
        self._pending: list[_Request] = []
        self._leader: _Request | None = None

    # -- ModelAPI -----------------------------------------------------------------------------------------

    def max_tokens(self) -> int | None:
        return self._hf.max_tokens()

    def max_connections(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE

    def collapse_user_messages(self) -> bool:
        return self._hf.collapse_user_messages()

    def close(self) -> None:
        self._prefixes.clear()
        self._hf.close()

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        from inspect_ai.model._providers.hf import GenerateOutput, chat_completion_assistant_message, extract_logprobs
        from inspect_ai.model._providers.util import HFHandler

        handler = HFHandler(self.model_name, self.model_family()) if tools else None
        prompt = self._hf.hf_chat(input, tools)
        self._check_context(prompt, config.max_tokens)
        request = _Request(prompt=prompt, settings=self._settings(config))
        done = await self._submit(request)

        total = done.input_tokens + done.cached_tokens + done.output_tokens
        response = GenerateOutput(output=done.output, input_tokens=done.input_tokens + done.cached_tokens,
                                  output_tokens=done.output_tokens, total_tokens=total, logprobs=done.logprobs,
                                  hidden_states=None, time=done.time)
        logprobs = None
        if config.logprobs:
            logprobs = Logprobs(content=extract_logprobs(response=response, top=config.top_logprobs,
                                                         tokenizer=self._hf.tokenizer))
        message = chat_completion_assistant_message(response, tools, handler, self.model_name)
        return ModelOutput(
            model=self.model_name,
            choices=[ChatCompletionChoice(message=message, logprobs=logprobs)],
            usage=ModelUsage(input_tokens=done.input_tokens, input_tokens_cache_read=done.cached_tokens,
                             output_tokens=done.output_tokens, total_tokens=total),
            time=done.time,
        )

    def _check_context(self, prompt: str, max_tokens: int | None) -> None:
        """Refuse a request whose prompt and max_tokens do not fit the model's context window, as vLLM does: the
        final protocol then retries with the next, lower max_tokens (PostTrainBench's cascade)."""
        window = getattr(self._hf.model.config, "max_position_embeddings", None)
        if not window or not max_tokens:
            return
        n = len(self._hf.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if n + max_tokens > window:
            raise ValueError(f"{PROVIDER}: the prompt ({n} tokens) and max_tokens ({max_tokens}) exceed the model's "
                             f"context window of {window} tokens")

    # -- generation settings ------------------------------------------------------------------------------

    def _settings(self, config: GenerateConfig) -> _Settings:
        """The `generate` arguments `hf/` would pass for `config`, except that temperature 0 means greedy.

        (`hf/` hands temperature 0 to its sampler unless the model arg do_sample=False is given, and transformers
        rejects it.) Under greedy decoding transformers applies no temperature, top-p or top-k warper, so leaving
        them out changes no output.
        """
        greedy = config.temperature == 0 or not self._hf.do_sample
        kwargs: dict[str, Hashable] = {"do_sample": not greedy}
        if config.max_tokens is not None:
            kwargs["max_new_tokens"] = config.max_tokens
        if not greedy:
            for name in ("temperature", "top_p", "top_k"):
                value = getattr(config, name)
                if value is not None:
                    kwargs[name] = value
        if config.logprobs is not None:
            kwargs["output_logits"] = config.logprobs
        stop = tuple(config.stop_seqs) if config.stop_seqs is not None else None
        batch_size = self.batch_size or config.max_connections or DEFAULT_BATCH_SIZE
        return _Settings(tuple(sorted(kwargs.items())), stop, batch_size)

    # -- batching -----------------------------------------------------------------------------------------

    async def _submit(self, request: _Request) -> _Completion:
        """Queue a request. One waiting request at a time leads: it forms batches and runs them off the loop."""
        self._pending.append(request)
        try:
            if self._leader is None:
                self._leader = request
            else:
                await request.wake.wait()  # woken with a result, or promoted to leader
            if not request.finished:
                if self._leader is not request:
                    raise RuntimeError(f"{PROVIDER}: request woken without a result")
                await self._lead(request)
        finally:
            if request in self._pending:  # cancelled while waiting
                self._pending.remove(request)
            if self._leader is request:
                self._hand_over()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    async def _lead(self, own: _Request) -> None:
        while not own.finished:
            batch = await self._collect()
            try:
                await anyio.to_thread.run_sync(self._run_batch, batch)
            finally:  # run_sync waits for the thread even when cancelled, so every item has its outcome
                for item in batch:
                    item.wake.set()

    def _hand_over(self) -> None:
        """Pass leadership to the oldest waiting request in one step, so that two leaders never run at once."""
        self._leader = self._pending[0] if self._pending else None
        if self._leader is not None:
            self._leader.wake.set()

    async def _collect(self) -> list[_Request]:
        """Wait until a batch is full or arrivals pause, then take the oldest requests that share settings."""
        settings = self._pending[0].settings
        count, last_change = len(self._pending), time.monotonic()
        while len(self._pending) < settings.batch_size and time.monotonic() - last_change < BATCH_WAIT_S:
            await anyio.sleep(POLL_S)
            if len(self._pending) != count:
                count, last_change = len(self._pending), time.monotonic()
        batch = [r for r in self._pending if r.settings == settings][: settings.batch_size]
        for r in batch:
            self._pending.remove(r)
        return batch

    def _run_batch(self, batch: list[_Request]) -> None:
        """Generate one batch (worker thread); every request gets its result or the batch's error."""
        import torch

        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(self.threads)
            results = self._generate([r.prompt for r in batch], batch[0].settings)
        except Exception as ex:  # noqa: BLE001 - not swallowed: re-raised in every waiting sample's generate()
            for r in batch:
                r.error = ex
            return
        finally:
            torch.set_num_threads(previous)
        for r, result in zip(batch, results):
            r.result = result

    # -- the model ----------------------------------------------------------------------------------------

    def _generate(self, prompts: list[str], settings: _Settings) -> list[_Completion]:
        import torch

        start = time.monotonic()
        hf = self._hf
        # Tokenize exactly as hf/ does (same call, same padding side), then strip its left padding per row.
        encoded = hf.tokenizer(prompts, return_tensors="pt", padding=True, **hf.tokenizer_call_args)
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
        stop = None
        if settings.stop_seqs is not None:
            from transformers.generation import StopStringCriteria

            stop = StopStringCriteria(hf.tokenizer, list(settings.stop_seqs))
        with torch.inference_mode():
            prefix = self._prefixes.for_batch(rows)
            prefix_len = prefix[0] if prefix else 0
            input_ids, attention_mask = layout_batch(rows, prefix_len, hf.tokenizer.pad_token_id)
            # Without a shared prefix the batch is hf/'s own left-padded batch and generate prefills it.
            cache = prefill_suffixes(hf.model, prefix[1], prefix_len, rows) if prefix else None
            prefilled = time.monotonic()
            outputs = decode(hf.model, input_ids, attention_mask, cache, dict(settings.kwargs), stop)
        logger.info("%s: batch of %d, %d-token prefix: prefill %.1f s, decode %.1f s for %d tokens", PROVIDER,
                    len(rows), prefix_len, prefilled - start, time.monotonic() - prefilled,
                    sum(len(o.tokens) for o in outputs))
        texts = hf.tokenizer.batch_decode([o.tokens for o in outputs], skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)
        elapsed = time.monotonic() - start
        return [
            _Completion(output=text, input_tokens=len(row) - prefix_len, cached_tokens=prefix_len,
                        output_tokens=len(o.tokens), logprobs=o.logprobs(), time=elapsed)
            for text, row, o in zip(texts, rows, outputs)
        ]


def layout_batch(rows: list[list[int]], prefix_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows as `prefix + pad + suffix` with the pad masked out, so the suffixes end together (like left padding)."""
    import torch

    width = max(len(r) for r in rows) - prefix_len
    ids, mask = [], []
    for row in rows:
        pad = width - (len(row) - prefix_len)
        ids.append(row[:prefix_len] + [pad_id] * pad + row[prefix_len:])
        mask.append([1] * prefix_len + [0] * pad + [1] * (len(row) - prefix_len))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def eos_ids(model: Any) -> set[int]:
    """The token ids that end generation for `model` (its generation config's eos)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])}


# ----------------------------------------------------------------------------------------------------------
# Decoding in segments, dropping finished rows


SEGMENT_TOKENS = 16
"""`generate` runs this many steps at a time; rows that have finished are then dropped from the batch, so a
batch costs the tokens its rows generate rather than batch size x its longest answer."""
_RESTART_UNSAFE = ("min_new_tokens", "exponential_decay_length_penalty", "begin_suppress_tokens",
                   "forced_bos_token_id", "forced_eos_token_id", "max_time")
"""Generation-config entries that count from the start of a `generate` call: with any of them set the batch is
decoded in one call, as `hf/` does."""


@dataclass
class _RowOutput:
    tokens: list[int] = field(default_factory=list)
    logits: list[Any] = field(default_factory=list)

    def logprobs(self) -> Any | None:
        if not self.logits:
            return None
        import torch

        return torch.nn.functional.log_softmax(torch.cat(self.logits).float(), dim=-1)[: len(self.tokens)]


class _StopRecorder:
    """Wraps a stopping criterion and records, per row, how many tokens in the row had been generated when it
    first fired (transformers pads a stopped row from then on)."""

    def __init__(self, inner: Any, start_len: int, rows: int) -> None:
        self.inner, self.start_len = inner, start_len
        self.at: list[int | None] = [None] * rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        hits = self.inner(input_ids, scores, **kwargs)
        for row in hits.nonzero().flatten().tolist():
            if self.at[row] is None:
                self.at[row] = input_ids.shape[1] - self.start_len
        return hits


def decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Cache | None,
           kwargs: dict[str, Any], stop: Any | None) -> list[_RowOutput]:
    """Run `generate` on the batch in segments, keeping each row's tokens up to where it stopped."""
    import torch

    budget: int | None = kwargs.pop("max_new_tokens", None)
    config = model.generation_config
    restartable = budget is not None and all(getattr(config, k, None) in (None, 0, []) for k in _RESTART_UNSAFE)
    eos = eos_ids(model)
    outputs = [_RowOutput() for _ in range(input_ids.shape[0])]
    active = list(range(input_ids.shape[0]))
    spent = 0
    while active:
        steps = min(SEGMENT_TOKENS, budget - spent) if restartable and budget is not None else budget
        recorder = _StopRecorder(stop, input_ids.shape[1], len(active)) if stop is not None else None
        token = _ACTIVE.set(cache if isinstance(cache, _shared_prefix_cache_class()) else None)
        try:
            out = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                past_key_values=cache,
                return_dict_in_generate=True,
                **({"max_new_tokens": steps} if steps is not None else {}),
                **({"stopping_criteria": [recorder]} if recorder is not None else {}),
                **kwargs,
            )
        finally:
            _ACTIVE.reset(token)
        new = out.sequences[:, input_ids.shape[1]:].cpu()
        spent += new.shape[1]
        keep = []
        for j, row in enumerate(active):
            tokens = new[j].tolist()
            ends = [i + 1 for i, t in enumerate(tokens) if t in eos][:1]
            if recorder is not None and recorder.at[j] is not None:
                ends.append(recorder.at[j])
            end = min(ends) if ends else len(tokens)
            outputs[row].tokens += tokens[:end]
            if out.logits is not None:
                outputs[row].logits.append(torch.stack([step[j] for step in out.logits[:end]]))
            if not ends and new.shape[1] == steps and (budget is None or spent < budget):
                keep.append(j)
        logger.info("%s: %d of %d rows still generating after %d new tokens", PROVIDER, len(keep), len(outputs), spent)
        if not keep or not restartable:
            break
        index = torch.tensor(keep)
        input_ids = out.sequences[index].cpu()
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(active), new.shape[1])], 1)[index]
        cache = out.past_key_values
        cache.batch_select_indices(index.to(model.device))
        active = [active[j] for j in keep]
    return outputs


# ----------------------------------------------------------------------------------------------------------
# Shared-prefix attention


KV = list[tuple["torch.Tensor", "torch.Tensor"]]
"""Per layer: keys and values, shape [batch, kv_heads, tokens, head_dim] (batch 1 for a prefix)."""


class _PrefixStore:
    """A few prefilled prefixes, least recently used dropped first. Only the batch thread uses it."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._last_prompt: list[int] | None = None
        self.enabled = _enable_shared_attention(model)

    def clear(self) -> None:
        self._entries.clear()

    def for_batch(self, rows: list[list[int]]) -> tuple[int, KV] | None:
        """The shared prefix for these rows (its length and keys/values), or None."""
        plan = plan_prefix(rows, list(self._entries), self._last_prompt) if self.enabled else None
        self._last_prompt = rows[-1]
        if plan is None:
            return None
        key = tuple(rows[0][: plan.length])
        if key not in self._entries:
            self._entries[key] = self._cut(plan.source, plan.length) if plan.source else self._prefill(key)
            while len(self._entries) > MAX_PREFIXES:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        return plan.length, self._entries[key]

    def _prefill(self, key: tuple[int, ...]) -> KV:
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self._model.config)
        ids = torch.tensor([key], dtype=torch.long, device=self._model.device)
        start = time.monotonic()
        self._model(input_ids=ids, past_key_values=cache, use_cache=True, **_no_logits(self._model))
        logger.info("%s: prefilled a %d-token prefix in %.1f s", PROVIDER, len(key), time.monotonic() - start)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _cut(self, source: tuple[int, ...], length: int) -> KV:
        """A shorter prefix cut from a cached one (views: a token's keys and values depend only on earlier ones)."""
        return [(k[:, :, :length], v[:, :, :length]) for k, v in self._entries[source]]


def _no_logits(model: Any) -> dict[str, Any]:
    """Forward arguments that skip the vocabulary projection where the model allows (only the cache is wanted)."""
    import inspect

    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def prefill_suffixes(model: Any, prefix: KV, prefix_len: int, rows: list[list[int]]) -> Cache:
    """The batch cache: the shared prefix once, and each row's own tokens except its last, left-padded with zeros
    that the attention mask hides (`generate` then feeds the last column).

    Rows are prefilled one at a time, so no compute goes to padding; the queries are many per row anyway.
    """
    import torch

    width = max(len(r) for r in rows) - prefix_len - 1
    own: list[KV] = []
    for row in rows:
        cache = shared_prefix_cache(prefix)
        suffix = row[prefix_len:-1]
        if suffix:
            token = _ACTIVE.set(cache)
            try:
                model(input_ids=torch.tensor([suffix], device=model.device), past_key_values=cache, use_cache=True,
                      **_no_logits(model))
            finally:
                _ACTIVE.reset(token)
            own.append([(layer.keys, layer.values) for layer in cache.layers])
        else:
            own.append([])
    if width == 0:
        return shared_prefix_cache(prefix)
    layers: KV = []
    for layer, (pk, _) in enumerate(prefix):
        shape = (len(rows), pk.shape[1], width, pk.shape[3])
        keys, values = pk.new_zeros(shape), pk.new_zeros(shape)
        for i, row_kv in enumerate(own):
            if row_kv:
                k, v = row_kv[layer]
                keys[i, :, width - k.shape[2]:] = k[0]
                values[i, :, width - v.shape[2]:] = v[0]
        layers.append((keys, values))
    return shared_prefix_cache(prefix, layers)


def _enable_shared_attention(model: Any) -> bool:
    """Switch `model` to the shared-prefix attention, or say why not (then batches run exactly as in `hf/`)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if model.config._attn_implementation != "sdpa" or model.device.type != "cpu":
        logger.warning("%s: prefix sharing is built for sdpa attention on CPU (model: %s on %s); running without it",
                       PROVIDER, model.config._attn_implementation, model.device)
        return False
    if not all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers):
        # Sliding-window or linear-attention layers keep other state than full keys and values.
        logger.warning("%s: %s has non-standard cache layers; running without prefix sharing", PROVIDER,
                       type(model).__name__)
        return False
    _register_attention()
    model.set_attn_implementation(ATTENTION)
    return True


@functools.cache
def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, shared_prefix_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the very masks sdpa gets


@functools.cache
def _shared_prefix_cache_class() -> type:
    """The cache classes (built on first use, so that importing this module does not import transformers)."""
    from transformers import Cache
    from transformers.cache_utils import DynamicLayer

    class SharedPrefixLayer(DynamicLayer):
        """A prefix's keys and values, held once for the whole batch; the inherited tensors hold each row's own
        tokens (after the prefix)."""

        def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor) -> None:
            super().__init__()
            self.prefix_keys = prefix_keys
            self.prefix_values = prefix_values

        def get_seq_length(self) -> int:
            # Positions and masks count the prefix; `update` returns only the rows' own keys and values.
            return self.prefix_keys.shape[-2] + super().get_seq_length()

        def _unsupported(self, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError(f"{PROVIDER}/ supports greedy decoding and sampling only")

        crop = batch_repeat_interleave = reorder_cache = _unsupported

    class SharedPrefixCache(Cache):
        """A cache of `SharedPrefixLayer`s; the attention function finds it through `_ACTIVE`."""

        def __init__(self, prefix: KV, own: KV | None) -> None:
            layers = [SharedPrefixLayer(k, v) for k, v in prefix]
            super().__init__(layers=layers)
            for layer, (k, v) in zip(layers, own or []):
                layer.update(k, v)

    return SharedPrefixCache


def shared_prefix_cache(prefix: KV, own: KV | None = None) -> Cache:
    """A cache over `prefix` (batch 1, never copied per row), with the rows' own keys and values if given."""
    return _shared_prefix_cache_class()(prefix, own)


def shared_prefix_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention over `shared prefix + row's own keys`, in the shapes transformers' attention functions use.

    query: [batch, heads, q_len, dim]; key/value: the rows' own part, [batch, kv_heads, own_len, dim];
    attention_mask: sdpa's boolean mask over `prefix + own` (or None). Returns [batch, q_len, heads, dim].
    Both parts go through torch's fused CPU attention kernel (the one sdpa uses), which also returns each query's
    log-sum-exp, so the two partial results combine exactly into one softmax.
    """
    cache = _ACTIVE.get()
    if cache is None:  # no shared prefix in this call (the prefix prefill itself, or a batch without one)
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    import torch

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    layer = cache.layers[module.layer_idx]
    pk, pv = layer.prefix_keys, layer.prefix_values  # [1, kv_heads, prefix_len, dim]
    b, heads, q_len, dim = query.shape
    kv_heads, prefix_len, own_len = pk.shape[1], pk.shape[2], key.shape[2]
    group = heads // kv_heads  # query head h reads kv head h // group, as in transformers' repeat_kv
    scale = scaling if scaling is not None else dim**-0.5
    # Fold each kv head's query heads into its query rows: [b, kv_heads, group * q_len, dim].
    q = query.reshape(b, kv_heads, group * q_len, dim)
    # Prefix: all queries of the batch against its one copy, in one call.
    flat = q.transpose(0, 1).reshape(1, kv_heads, b * group * q_len, dim)
    out, lse = flash(flat, pk, pv, 0.0, False, scale=scale)
    out = out.reshape(kv_heads, b, group * q_len, dim).transpose(0, 1)
    lse = lse.reshape(kv_heads, b, group * q_len).transpose(0, 1)
    if own_len:
        bias = _own_bias(attention_mask, b, prefix_len, own_len, q_len, group, query.dtype)
        out_own, lse_own = flash(q, key, value, 0.0, False, attn_mask=bias, scale=scale)
        total = torch.logaddexp(lse, lse_own)
        out = out * torch.exp(lse - total).unsqueeze(-1) + out_own * torch.exp(lse_own - total).unsqueeze(-1)
    out = out.to(query.dtype).reshape(b, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


def _own_bias(mask: torch.Tensor | None, b: int, prefix_len: int, own_len: int, q_len: int, group: int,
              dtype: Any) -> torch.Tensor | None:
    """Additive mask over the rows' own keys for the folded queries, [b, 1, group * q_len, own_len], or None.

    The prefix is visible to every query (the batch layout puts no padding in it). Every query also sees its own
    key: that changes nothing for real tokens (causal attention includes the diagonal) and keeps the queries of
    pad tokens from having no visible key at all, for which the fused kernel returns no usable log-sum-exp.
    """
    import torch

    if mask is None:  # sdpa_mask leaves it out for plain causal attention (or none, for one query)
        if q_len == 1:
            return None
        i = torch.arange(q_len).unsqueeze(1)
        visible = (torch.arange(own_len).unsqueeze(0) <= i + own_len - q_len).view(1, 1, q_len, own_len)
    else:
        if mask.dtype != torch.bool or mask.shape[-1] != prefix_len + own_len or mask.shape[-2] != q_len:
            raise ValueError(f"{PROVIDER}: unexpected attention mask {tuple(mask.shape)} {mask.dtype} for "
                             f"{q_len} queries over {prefix_len}+{own_len} keys")
        visible = mask[..., prefix_len:].clone()
        diagonal = torch.arange(q_len)
        visible[..., diagonal, diagonal + own_len - q_len] = True
    visible = visible.expand(b, 1, q_len, own_len).unsqueeze(2).expand(b, 1, group, q_len, own_len)
    visible = visible.reshape(b, 1, group * q_len, own_len)
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, float("-inf"))
