"""The nodes hold every policy to the rules, whatever decided: a deliberately rule-breaking policy is refused by the
node itself (real data, the real data tools, the compiled graph)."""

from __future__ import annotations

import pytest
from conftest import DataStage
from conftest import plan_of as _plan
from test_data_edges import _rows, _write_jsonl

from core.errors import GuardViolation
from core.handoffs import ValidationVerdict
from roles.playbook import Playbook


class ApprovesEverything(Playbook):
    """A validation policy with a bug: it approves whatever the checks found."""

    def judge(self, findings, manifest):
        return ValidationVerdict(decision="approve", reasons=["looks fine to me"], checks=findings.checks)


class ReadsFromAnAPI(Playbook):
    def select(self, plan, last_verdict):
        selection = super().select(plan, last_verdict)
        selection.sources[0].name = "openai:gpt-4o"  # a remote model API as a data source
        return selection


def test_a_policy_that_approves_contaminated_data_is_refused(make_context, data_dir, tmp_path):
    ctx = make_context()
    index = ctx.test_index()
    clean = [r for r in _rows(data_dir, "train")[:400] if not index.hits(r["question"] + "\n" + r["answer"])][:60]
    source = _write_jsonl(tmp_path / "mixed.jsonl", clean + _rows(data_dir, "test")[:5])
    ctx.policies["data_validation"] = ApprovesEverything()
    stage = DataStage(ctx, _plan(sources=[f"local:{source}"], max_rows=80))
    with pytest.raises(GuardViolation, match="data validation handed off a decision that breaks a rule: approve is "
                                             "not allowed: the decontamination check"):
        stage.step()
    assert stage.graph.get_state(stage.config).next == ("data_validation",)  # nothing moved on: resumable there


def test_a_policy_that_picks_a_remote_model_api_as_a_source_is_refused(make_context):
    ctx = make_context()
    ctx.policies["data_selection"] = ReadsFromAnAPI()
    stage = DataStage(ctx, _plan(max_rows=24))
    with pytest.raises(GuardViolation, match="data selection .* remote model APIs"):
        stage.step()


def test_a_trainer_policy_with_knobs_out_of_bounds_is_refused(make_context):
    from roles import trainer

    class Reckless(Playbook):
        def train_knobs(self, plan, manifest):
            knobs = plan.train.model_copy()
            knobs.learning_rate = 0.5  # assigned after validation: only the node's rule catches it
            return knobs

    ctx = make_context()
    ctx.policies["trainer"] = Reckless()
    from conftest import eval_report_stub

    from core.handoffs import Best, Stage

    state = {"stage": Stage.LOCAL, "iteration": 1, "plan": _plan(), "baseline": eval_report_stub(), "manifest": None,
             "best": Best(model_dir=ctx.base_model, score=0.0, iteration=0)}
    with pytest.raises(GuardViolation, match="trainer handed off .*learning_rate"):
        trainer.node(state, ctx)
