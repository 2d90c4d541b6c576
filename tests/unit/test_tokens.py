"""LLM tokens: counted per role from each reply, capped per run (a clean, resumable stop), priced when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import ScriptedChatModel
from langchain_core.messages import AIMessage

from core.errors import LimitReached
from core.handoffs import TokenUsage
from core.settings import RunSettings
from roles.llm import Backbone, TokenMeter


def reply(n_in: int, n_out: int, cached: int = 0) -> AIMessage:
    return AIMessage("ok", usage_metadata={"input_tokens": n_in, "output_tokens": n_out,
                                           "total_tokens": n_in + n_out, "input_token_details": {"cache_read": cached}})


def test_tokens_are_counted_per_role_and_the_cap_stops_the_next_call():
    meter = TokenMeter(limit=900)
    model = ScriptedChatModel(replies=[reply(500, 100, cached=200), reply(300, 50), reply(1, 1)])
    b = Backbone(spec="openai:m", model=model, meter=meter)
    meter.start_node(spent_before=0)
    b.invoke(model, [], role="planner")
    b.invoke(model, [], role="planner")  # 600 spent: under the cap, allowed
    assert meter.spent == {"planner": TokenUsage(calls=2, input=800, output=150, cached=200)}
    with pytest.raises(LimitReached, match="950 of 900 tokens") as stop:
        b.invoke(model, [], role="planner")
    assert stop.value.exit_code == 5 and stop.value.resumable
    assert len(model.requests) == 2  # the refused call never went out
    assert meter.take() == {"planner": TokenUsage(calls=2, input=800, output=150, cached=200)}
    meter.start_node(spent_before=950)  # the next node counts what earlier nodes (and sessions) spent
    with pytest.raises(LimitReached):
        b.invoke(model, [], role="trainer")


def test_costs_from_prices_by_spec_or_model_name():
    s = RunSettings(task="gsm8k", workspace=Path("/tmp/unused"), backbone="openai:gpt-x",
                    role_backbones={"logger": "playbook"}, prices={"gpt-x": (1.0, 4.0)})
    usage = TokenUsage(calls=2, input=1_000_000, output=500_000)
    assert s.cost("planner", usage) == pytest.approx(3.0)
    assert s.cost("logger", usage) is None
    lines = s.token_lines({"planner": usage})
    assert lines[0].endswith("$3.0000") and lines[-1] == "total: 1500000 tokens in 2 calls, $3.0000"
