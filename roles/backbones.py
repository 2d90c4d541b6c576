"""Backbone specs → the policy each role decides with."""

from __future__ import annotations

from graph.settings import ROLES, RunSettings
from roles.playbook import Playbook
from roles.policy import Policy
from tasks.base import InputError


def policies_for(settings: RunSettings) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for role in ROLES:
        spec = settings.backbone_for(role)
        if spec == "playbook":
            policies[role] = Playbook()
        else:
            raise InputError(f"backbone {spec!r} for role {role} is not supported yet; use playbook")
    return policies
