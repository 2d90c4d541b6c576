"""The judge of a judged benchmark, named by a backbone spec like every other model (`core.specs`), as the inspect
model its scorer calls. PostTrainBench judges with gpt-5-mini; any OpenAI-compatible server works."""

from __future__ import annotations

from typing import Any

from core.errors import InputError
from core.specs import parse_spec


def judge_model(spec: str | None, **config: Any):
    """The inspect `Model` for the judge spec; `InputError` when there is none or it cannot judge."""
    from inspect_ai.model import GenerateConfig, get_model

    if not spec:
        raise InputError("this benchmark is scored by a judge model: give one with --judge SPEC")
    parsed = parse_spec(spec)
    if parsed.kind == "local":
        raise InputError("--judge local: the embedded student cannot judge; give openai:MODEL or "
                         "openai-compatible:URL#MODEL")
    args: dict[str, Any] = {"api_key": parsed.api_key.get_secret_value()}
    if parsed.base_url:  # an OpenAI-compatible server: chat completions (few implement the Responses API)
        args |= {"base_url": parsed.base_url, "responses_api": False}
    return get_model(f"openai/{parsed.model}", config=GenerateConfig(**config), **args)


def judge_usage(log: Any, spec: str | None) -> dict[str, int] | None:
    """The judge's token counts in an inspect log (every model but the one evaluated is the judge)."""
    if not spec or not getattr(log, "stats", None):
        return None
    evaluated = str(log.eval.model)
    totals = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for model, usage in (log.stats.model_usage or {}).items():
        if model != evaluated:
            for key in totals:
                totals[key] += int(getattr(usage, key, 0) or 0)
    return totals
