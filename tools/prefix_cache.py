"""inspect-ai model provider `prefixcache/<model path>`: inspect's `hf/` provider with the shared prompt prefix cached.

Few-shot tasks send every sample the same long system prefix (about 2,200 tokens for gsm8k's 10-shot solver). The
`hf/` provider prefills it again for every sample and then, at every decoding step, reads (and copies) a private
copy of its keys and values for every row of the batch. This provider renders and tokenizes prompts exactly as
`hf/` does (it builds an `hf/` instance and uses its chat rendering, tokenizer and model), finds the longest token
prefix the prompts share, prefills it once, and keeps its keys and values once for all rows: a registered
transformers attention function attends each query to the shared prefix (one matrix product for the whole batch)
and to the row's own suffix, and normalises both with one softmax. transformers' own `generate` does everything
else, with the settings inspect's `GenerateConfig` gives, passed as `hf/` passes them (temperature 0 is greedy).

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
DEFAULT_BATCH_SIZE = 32
"""Same default as `hf/` (its batch size is `max_connections`, 32 unless set)."""
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
    per `generate` call; default: the config's `max_connections`, else 32). `hidden_states` is not supported.
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
        batch_size = model_args.pop("batch_size", None)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size: int | None = batch_size
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
        request = _Request(prompt=self._hf.hf_chat(input, tools), settings=self._settings(config))
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
        try:
            results = self._generate([r.prompt for r in batch], batch[0].settings)
        except Exception as ex:  # noqa: BLE001 - not swallowed: re-raised in every waiting sample's generate()
            for r in batch:
                r.error = ex
            return
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

        kwargs: dict[str, Any] = dict(settings.kwargs)
        if settings.stop_seqs is not None:
            from transformers.generation import StopStringCriteria

            kwargs["stopping_criteria"] = [StopStringCriteria(hf.tokenizer, list(settings.stop_seqs))]
        with torch.inference_mode():
            prefix_len, cache = self._prefixes.for_batch(rows)
            input_ids, attention_mask = layout_batch(rows, prefix_len, hf.tokenizer.pad_token_id)
            token = _ACTIVE.set(cache)
            try:
                out = hf.model.generate(
                    input_ids=input_ids.to(hf.model.device),
                    attention_mask=attention_mask.to(hf.model.device),
                    past_key_values=cache,
                    return_dict_in_generate=True,
                    **kwargs,
                )
            finally:
                _ACTIVE.reset(token)
        generated = out.sequences[:, input_ids.shape[1]:].cpu()
        texts = hf.tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        logprobs = None
        if out.logits is not None:
            logprobs = torch.nn.functional.log_softmax(torch.stack(out.logits).transpose(0, 1).float(), dim=-1)
        lengths = completion_lengths(generated, eos_ids(hf.model), hf.model.generation_config.pad_token_id)
        elapsed = time.monotonic() - start
        return [
            _Completion(output=text, input_tokens=len(row) - prefix_len, cached_tokens=prefix_len,
                        output_tokens=n, logprobs=logprobs[i, :n] if logprobs is not None else None, time=elapsed)
            for i, (text, row, n) in enumerate(zip(texts, rows, lengths))
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


def completion_lengths(generated: torch.Tensor, eos: set[int], pad: int | None) -> list[int]:
    """Tokens each row generated: up to and including its first eos, else up to the batch padding that
    `generate` appends once a row has stopped (a stop string, say)."""
    lengths = []
    for row in generated.tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in eos), None)
        if end is None:
            end = len(row)
            while end > 0 and row[end - 1] == pad:
                end -= 1
        lengths.append(end)
    return lengths


# ----------------------------------------------------------------------------------------------------------
# Shared-prefix attention


KV = list[tuple["torch.Tensor", "torch.Tensor"]]
"""Per layer: keys and values of one prefix, shape [1, kv_heads, prefix_len, head_dim]."""


class _PrefixStore:
    """A few prefilled prefixes, least recently used dropped first. Only the batch thread uses it."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._last_prompt: list[int] | None = None
        self.enabled = _enable_shared_attention(model)

    def clear(self) -> None:
        self._entries.clear()

    def for_batch(self, rows: list[list[int]]) -> tuple[int, Cache | None]:
        """The prefix length for these rows and a cache sharing that prefix (0 and None: no shared prefix)."""
        plan = plan_prefix(rows, list(self._entries), self._last_prompt) if self.enabled else None
        self._last_prompt = rows[-1]
        if plan is None:
            return 0, None
        key = tuple(rows[0][: plan.length])
        if key not in self._entries:
            self._entries[key] = self._cut(plan.source, plan.length) if plan.source else self._prefill(key)
            while len(self._entries) > MAX_PREFIXES:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        return plan.length, shared_prefix_cache(self._entries[key])

    def _prefill(self, key: tuple[int, ...]) -> KV:
        import inspect

        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self._model.config)
        args: dict[str, Any] = {}
        if "logits_to_keep" in inspect.signature(self._model.forward).parameters:
            args["logits_to_keep"] = 1  # only the keys and values are wanted; skip the vocabulary projection
        ids = torch.tensor([key], dtype=torch.long, device=self._model.device)
        start = time.monotonic()
        self._model(input_ids=ids, past_key_values=cache, use_cache=True, **args)  # plain sdpa: _ACTIVE is unset
        logger.info("%s: prefilled a %d-token prefix in %.1f s", PROVIDER, len(key), time.monotonic() - start)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _cut(self, source: tuple[int, ...], length: int) -> KV:
        """A shorter prefix cut from a cached one (views: a token's keys and values depend only on earlier ones)."""
        return [(k[:, :, :length], v[:, :, :length]) for k, v in self._entries[source]]


def _enable_shared_attention(model: Any) -> bool:
    """Switch `model` to the shared-prefix attention, or say why not (then batches run exactly as in `hf/`)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if model.config._attn_implementation != "sdpa":
        logger.warning("%s: prefix sharing needs sdpa attention, the model uses %s; running without it",
                       PROVIDER, model.config._attn_implementation)
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
def _shared_prefix_layer() -> type:
    """The cache layer class (built on first use so that importing this module does not import transformers)."""
    from transformers.cache_utils import DynamicLayer

    class SharedPrefixLayer(DynamicLayer):
        """Holds a prefix's keys and values once for the whole batch; the inherited tensors hold each row's rest."""

        def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor) -> None:
            super().__init__()
            self.prefix_keys = prefix_keys
            self.prefix_values = prefix_values

        def get_seq_length(self) -> int:
            # Positions and masks count the prefix; `update` returns only the rows' own keys and values.
            return self.prefix_keys.shape[-2] + super().get_seq_length()

        def _unsupported(self, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError(f"{PROVIDER}/ supports greedy decoding and sampling only (no beam search)")

        crop = batch_repeat_interleave = batch_select_indices = reorder_cache = _unsupported

    return SharedPrefixLayer


def shared_prefix_cache(prefix: KV) -> Cache:
    """A batch cache over `prefix`: nothing is copied per row."""
    from transformers import Cache

    layer = _shared_prefix_layer()
    return Cache(layers=[layer(k, v) for k, v in prefix])


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
    """
    cache = _ACTIVE.get()
    if cache is None:  # no shared prefix in this call (the prefix prefill itself, or a batch without one)
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    import torch

    layer = cache.layers[module.layer_idx]
    pk, pv = layer.prefix_keys[0].float(), layer.prefix_values[0].float()  # [kv_heads, prefix_len, dim]
    b, heads, q_len, dim = query.shape
    kv_heads, prefix_len, own_len = pk.shape[0], pk.shape[1], key.shape[2]
    group = heads // kv_heads  # query head h reads kv head h // group, as in transformers' repeat_kv
    scale = scaling if scaling is not None else dim**-0.5

    q = query.float().reshape(b, kv_heads, group, q_len, dim)
    # Prefix part: the whole batch's queries against the one copy of the prefix, one batched matmul per kv head.
    flat_q = q.permute(1, 0, 2, 3, 4).reshape(kv_heads, b * group * q_len, dim)
    s_prefix = (torch.bmm(flat_q, pk.transpose(1, 2)) * scale).view(kv_heads, b, group, q_len, prefix_len)
    s_prefix = s_prefix.permute(1, 0, 2, 3, 4)
    # Own part: each row against its own keys, masked for padding and causality.
    s_own = torch.matmul(q, key.float().unsqueeze(2).transpose(-1, -2)) * scale  # [b, kv_heads, group, q, own]
    visible = _own_visibility(attention_mask, prefix_len, own_len, q_len)
    if visible is not None:
        s_own = s_own.masked_fill(~visible, float("-inf"))
    # One softmax over both parts.
    top = torch.maximum(s_prefix.amax(-1, keepdim=True), s_own.amax(-1, keepdim=True))
    e_prefix, e_own = torch.exp(s_prefix - top), torch.exp(s_own - top)
    denom = e_prefix.sum(-1, keepdim=True) + e_own.sum(-1, keepdim=True)
    flat_e = e_prefix.permute(1, 0, 2, 3, 4).reshape(kv_heads, b * group * q_len, prefix_len)
    out_prefix = torch.bmm(flat_e, pv).view(kv_heads, b, group, q_len, dim).permute(1, 0, 2, 3, 4)
    out_own = torch.matmul(e_own, value.float().unsqueeze(2))
    out = ((out_prefix + out_own) / denom).reshape(b, heads, q_len, dim).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None


def _own_visibility(mask: torch.Tensor | None, prefix_len: int, own_len: int, q_len: int) -> torch.Tensor | None:
    """Which of a row's own keys each query may see, shaped to broadcast over [b, kv_heads, group, q, own].

    The prefix is visible to every query: the batch layout puts no padding in it.
    """
    import torch

    if mask is None:  # sdpa_mask leaves it out when plain causal attention (or none, for one query) is meant
        if q_len == 1:
            return None
        i = torch.arange(q_len).unsqueeze(1)
        j = torch.arange(own_len).unsqueeze(0)
        return (j <= i + own_len - q_len).view(1, 1, 1, q_len, own_len)
    if mask.dtype != torch.bool or mask.shape[-1] != prefix_len + own_len:
        raise ValueError(f"{PROVIDER}: unexpected attention mask {tuple(mask.shape)} {mask.dtype} for a "
                         f"{prefix_len}+{own_len}-token cache")
    return mask[..., prefix_len:].unsqueeze(2)
