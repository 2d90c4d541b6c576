"""Backbone specs → the policy each role decides with."""

from __future__ import annotations

from graph.settings import ROLES, RunSettings
from roles.playbook import Playbook
from roles.policy import Policy


def policies_for(settings: RunSettings) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for role in ROLES:
        spec = settings.backbone_for(role)
        if spec == "playbook":
            policies[role] = Playbook()
        else:
            from roles.agent import AgentPolicy
            from roles.llm import load_backbone

            policies[role] = AgentPolicy(role, load_backbone(spec))  # one backbone (and local server) per spec
    return policies


def check_specs(settings: RunSettings) -> None:
    """Bad specs are bad input: found before the run is saved, so that a corrected command starts afresh."""
    from roles.llm import check_spec

    for spec in {settings.backbone_for(role) for role in ROLES} - {"playbook"}:
        check_spec(spec)
