"""Backbone specs → the policy each deciding role decides with."""

from __future__ import annotations

from core.settings import ROLES, RunSettings
from roles.playbook import Playbook
from roles.policy import Policy


def policies_for(settings: RunSettings) -> dict[str, Policy]:
    from roles.llm import RetryBudget

    budget = RetryBudget(settings.retry.run_budget_s)  # one budget of retry waiting for the whole run
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
            loaded[spec] = load_backbone(spec, settings, budget=budget)
        policies[role] = AgentPolicy(role, loaded[spec])
    return policies


def check_specs(settings: RunSettings) -> None:
    """Bad specs are bad input: found before the run is saved, so that a corrected command starts afresh."""
    from roles.llm import check_spec

    specs = {settings.backbone_for(role) for role in ROLES} | ({settings.judge} if settings.judge else set())
    for spec in specs - {"playbook"}:
        check_spec(spec)
