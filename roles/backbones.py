"""Backbone specs → the policy each deciding role decides with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.settings import ROLES, RunSettings
from roles.playbook import Playbook
from roles.policy import Policy

if TYPE_CHECKING:
    from roles.llm import TokenMeter


def policies_for(settings: RunSettings, meter: TokenMeter | None = None) -> dict[str, Policy]:
    """Each deciding role's policy; LLM backbones share one budget of retry waiting and one token meter."""
    from roles.llm import RetryBudget

    budget = RetryBudget(settings.retry.run_budget_s)
    loaded: dict[str, object] = {}
    policies: dict[str, Policy] = {}
    for role in ROLES:
        spec = settings.backbone_for(role)
        if spec == "playbook":
            policies[role] = Playbook()
            continue
        from roles.agent.policy import AgentPolicy
        from roles.llm import load_backbone

        if spec not in loaded:  # one backbone (and one probe of its server) per spec
            loaded[spec] = load_backbone(spec, settings, budget=budget, meter=meter)
        policies[role] = AgentPolicy(role, loaded[spec])
    return policies


def check_specs(settings: RunSettings) -> None:
    """Bad specs are bad input: found before the run is saved, so that a corrected command starts afresh."""
    from roles.llm import check_spec

    specs = {settings.backbone_for(role) for role in ROLES} | ({settings.judge} if settings.judge else set())
    for spec in specs - {"playbook"}:
        check_spec(spec)
