"""The `prefixcache/` provider gives the same completions as inspect's `hf/` provider on the canonical gsm8k task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.prefix_cache import PrefixPlan, batch_prefix_len, common_prefix_len, plan_prefix


def completions(task: Any, model: str, model_args: dict[str, Any], log_dir: Path, **settings: Any) -> dict[str, Any]:
    """Run `task` greedily with `model` and return each sample's completion and usage, by sample id."""
    import inspect_ai

    (log,) = inspect_ai.eval(task, model=model, model_args=model_args, temperature=0.0, log_dir=str(log_dir),
                             display="none", **settings)
    assert log.status == "success", log.error
    assert log.samples
    return {str(s.id): (s.output.completion, s.output.usage) for s in log.samples}


def gsm8k_task(data_dir: Path) -> Any:
    from tasks import get_task

    return get_task("gsm8k", data_dir).inspect_task()


def test_plan_prefix_shares_crops_and_skips() -> None:
    system = list(range(100))
    a, b, c = system + [7, 8, 9], system + [7, 5, 6], system + [1, 2]
    assert common_prefix_len(a, b) == 101 and batch_prefix_len([a, b, c]) == 100
    # A batch: its own common prefix is prefilled.
    assert plan_prefix([a, b], [], None) == PrefixPlan(101, None)
    # A later batch reuses the cached prefix, cropped to what it shares (no new prefill for one token less).
    assert plan_prefix([c], [tuple(a[:101])], None) == PrefixPlan(100, tuple(a[:101]))
    # A single request with nothing cached compares with the previous prompt; the very first one gets no prefix.
    assert plan_prefix([c], [], a) == PrefixPlan(100, None)
    assert plan_prefix([c], [], None) is None
    # At least one token of every row is left to feed the model.
    assert plan_prefix([a, a], [], None) == PrefixPlan(len(a) - 1, None)
    # A much longer shared prefix than the cached one is worth a new prefill; a bare header is not worth caching.
    other = [0, 1, 2] + list(range(500, 700))
    assert plan_prefix([other, other + [1]], [tuple(a[:101])], None) == PrefixPlan(len(other) - 1, None)
    assert plan_prefix([[0, 1, 2, 3], [0, 1, 2, 4]], [], None) is None


def test_shared_prefix_attention_equals_sdpa_over_the_full_keys() -> None:
    """Queries of two rows (one padded) over a shared prefix plus their own keys, causal within the rows' own part."""
    import types

    import torch

    from tools.prefix_cache import _ACTIVE, shared_prefix_attention, shared_prefix_cache

    torch.manual_seed(0)
    b, heads, kv_heads, dim, prefix_len, own_len, q_len = 2, 6, 2, 8, 7, 5, 3
    pk, pv = torch.randn(1, kv_heads, prefix_len, dim), torch.randn(1, kv_heads, prefix_len, dim)
    k, v = torch.randn(b, kv_heads, own_len, dim), torch.randn(b, kv_heads, own_len, dim)
    q = torch.randn(b, heads, q_len, dim)
    own_visible = torch.ones(b, 1, q_len, own_len, dtype=torch.bool).tril(own_len - q_len)
    own_visible[1, :, :, :2] = False  # row 1 has two pad tokens between the prefix and its suffix
    mask = torch.cat([torch.ones(b, 1, q_len, prefix_len, dtype=torch.bool), own_visible], dim=-1)

    token = _ACTIVE.set(shared_prefix_cache([(pk, pv)]))
    try:
        out, _ = shared_prefix_attention(types.SimpleNamespace(layer_idx=0), q, k, v, mask, scaling=0.3)
    finally:
        _ACTIVE.reset(token)
    full_k = torch.cat([pk.expand(b, -1, -1, -1), k], dim=2).repeat_interleave(heads // kv_heads, dim=1)
    full_v = torch.cat([pv.expand(b, -1, -1, -1), v], dim=2).repeat_interleave(heads // kv_heads, dim=1)
    expected = torch.nn.functional.scaled_dot_product_attention(q, full_k, full_v, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(out, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_matches_hf_on_tiny_model(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """Canonical 10-shot prompts, a tiny random model, 12 new tokens: identical completions, prefix reused."""
    task = gsm8k_task(data_dir)
    settings = dict(limit=5, max_tokens=12)
    # hf/ samples unless told do_sample=False (it would pass temperature 0 to the sampler, which transformers refuses).
    reference = completions(task, f"hf/{tiny_model_dir}", {"do_sample": False}, tmp_path / "hf", **settings)
    # batch_size 2 gives batches of 2, 2 and 1, so the prefix is prefilled once, then reused and cropped.
    cached = completions(task, f"prefixcache/{tiny_model_dir}", {"batch_size": 2}, tmp_path / "pc", **settings)
    assert {k: v[0] for k, v in cached.items()} == {k: v[0] for k, v in reference.items()}
    assert all(usage.input_tokens_cache_read and usage.input_tokens_cache_read > 2000 for _, usage in cached.values())


@pytest.mark.slow
def test_matches_hf_on_embedded_model_10_shot(embedded_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """The real student, the canonical 10-shot prompt, the CPU profile's max_tokens: same completions, sample by
    sample."""
    import torch

    from tasks import get_task
    from tools.prefix_cache import default_threads

    max_tokens = get_task("gsm8k", data_dir).generation(on_gpu=False).max_tokens
    task = gsm8k_task(data_dir)
    settings = dict(limit=8, max_tokens=max_tokens)
    threads = torch.get_num_threads()
    torch.set_num_threads(default_threads())  # both providers alike (hf/ takes torch's setting)
    try:
        reference = completions(task, f"hf/{embedded_model_dir}", {"do_sample": False}, tmp_path / "hf",
                                max_connections=8, **settings)
        # Batches of 4: the prefix is prefilled for the first and reused by the second.
        cached = completions(task, f"prefixcache/{embedded_model_dir}", {"batch_size": 4}, tmp_path / "pc",
                             max_connections=4, **settings)
    finally:
        torch.set_num_threads(threads)
    assert cached.keys() == reference.keys()
    for sample_id in reference:
        assert cached[sample_id][0] == reference[sample_id][0], sample_id
