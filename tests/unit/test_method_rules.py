"""Choosing among methods and data operations: the playbook's branches, the rules that bound any choice, the forms
an LLM fills, the generator's hard rule, and the mixture and difficulty steps of construction (no data, no model)."""

from __future__ import annotations

import pytest
from test_playbook import done, evidence, plan, report

from core.handoffs import Best, DataKnobs, IterationPlan, OpCount, Stage, TrainKnobs
from core.specs import generator_problem
from roles import rules
from roles.agent import forms
from roles.playbook import MIN_QUESTIONS, SAMPLES, Playbook
from tasks.base import TrainingExample
from tools.data import _by_difficulty, _mix, rows_from_answers

ALL = ["sft", "self_distill", "dpo"]


def ev(**kw):
    fields = {"methods": ALL, "affordable_answers": 400}
    e = evidence(**{k: v for k, v in kw.items() if k in ("last_plan", "history", "last_eval", "stage", "cap")})
    return e.model_copy(update={**fields, **{k: v for k, v in kw.items() if k in type(e).model_fields}})


def test_stalled_sft_turns_to_self_distillation_from_the_best_checkpoint():
    e = ev(last_plan=plan(), history=[done()], last_eval=report(0.1, "inference_template"))
    e = e.model_copy(update={"best": e.best.model_copy(update={"iteration": 1})})
    p = Playbook().plan(e)
    assert p.method == "self_distill" and p.train.start_from == "best"
    assert p.data.samples == SAMPLES and MIN_QUESTIONS <= p.data.questions <= 400 // SAMPLES
    assert "self-distill" in p.objective


def test_a_model_that_is_almost_never_right_is_not_self_distilled():
    """At 1% the 400 affordable answers hold about 4 right ones: too few rows to be worth the sampling."""
    low = report(0.01, "inference_template")
    e = ev(last_plan=plan(), history=[done()], last_eval=low).model_copy(
        update={"baseline": low, "best": Best(model_dir="b", score=0.01, iteration=0)})
    assert Playbook().plan(e).method != "self_distill"
    assert Playbook().plan(e.model_copy(update={"affordable_answers": 1000})).method == "self_distill"


def test_wrong_answers_that_are_sometimes_right_turn_to_dpo_with_a_gentler_rate():
    p = Playbook().plan(ev(last_plan=plan(), history=[done()], last_eval=report(0.1, "data")))
    assert p.method == "dpo" and p.train.learning_rate == pytest.approx(1e-5) and "DPO" in p.objective
    never_right = ev(last_plan=plan(), history=[done()], last_eval=report(0.0, "data"))
    never_right = never_right.model_copy(update={"baseline": report(0.0, "data"),
                                                 "best": never_right.best.model_copy(update={"score": 0.0})})
    assert Playbook().plan(never_right).method == "sft"  # no right answer to prefer, or to distill


def test_sampling_is_skipped_when_unavailable_or_unaffordable():
    stalled = dict(last_plan=plan(), history=[done()], last_eval=report(0.1, "data"))
    assert Playbook().plan(ev(**stalled, methods=["sft"])).method == "sft"
    assert Playbook().plan(ev(**stalled, affordable_answers=MIN_QUESTIONS * SAMPLES - 1)).method == "sft"


def test_a_method_that_helped_continues_and_one_that_did_not_is_dropped():
    last = plan().model_copy(update={"method": "dpo"})
    assert Playbook().plan(ev(last_plan=last, history=[done(kept=True)], last_eval=report(0.2, "data"))).method == "dpo"
    assert Playbook().plan(ev(last_plan=last, history=[done()], last_eval=report(0.1, "data"))).method == "sft"


def test_too_few_surviving_rows_are_augmented_when_a_generator_is_set():
    thin = done().model_copy(update={"rows": 30})  # 30 of the planned 100
    base = dict(last_plan=plan(), history=[thin], last_eval=report(0.1, "inference_template"), methods=["sft"])
    assert Playbook().plan(ev(**base, can_generate=True)).data.augment == "paraphrase"
    assert Playbook().plan(ev(**base, can_generate=False)).data.augment == "none"


def test_stage_three_routes_include_the_available_methods():
    routes = set()
    for i in range(1, 8):
        e = ev(last_plan=plan(), history=[done(i)] * i, last_eval=report(0.1, "data"), stage=Stage.EXPLORATION,
               can_generate=True)
        routes.add(Playbook().plan(e.model_copy(update={"iteration": i})).changes[0])
    assert any("self-distill" in r for r in routes) and any("DPO" in r for r in routes)
    assert any("augment" in r for r in routes)


def _plan(method="sft", **data) -> IterationPlan:
    return IterationPlan(iteration=1, stage=Stage.LOCAL, problems=["p"], objective="o", changes=["c"],
                         change_kind="both", success_criterion="s", method=method, data=DataKnobs(**data),
                         train=TrainKnobs())


def test_rules_bound_methods_generation_and_sampling_cost():
    ok = dict(methods=ALL, can_generate=True, affordable_answers=1000)
    assert rules.plan_problems(_plan("dpo", questions=64, samples=4), 1000, **ok) == []
    assert "not available" in rules.plan_problems(_plan("dpo"), 1000, methods=["sft"])[0]
    assert "local generator" in rules.plan_problems(_plan(augment="paraphrase"), 1000, methods=ALL)[0]
    assert "apply to sft and self_distill" in rules.plan_problems(_plan("dpo", synthesize=10), 1000, **ok)[0]
    assert "above the 100 the budget affords" in rules.plan_problems(
        _plan("self_distill", questions=64, samples=4), 1000, methods=ALL, affordable_answers=100)[0]
    p = _plan("self_distill", questions=64)
    changed = rules.construction_problems(p.data.model_copy(update={"questions": 500, "augment": "harder"}), p)
    assert "augment, questions differ from the plan's" in changed[0]


def test_forms_offer_only_what_the_run_can_do():
    narrow = forms.plan_form(None, 100).model_json_schema()
    assert narrow["properties"]["method"]["const"] == "sft"
    data = narrow["$defs"]["PlanData"]["properties"]
    assert not {"questions", "samples", "augment", "synthesize"} & set(data)
    wide = forms.plan_form(None, 100, methods=ALL, can_generate=True).model_json_schema()
    assert wide["properties"]["method"]["enum"] == ALL
    data = wide["$defs"]["PlanData"]["properties"]
    assert data["augment"]["enum"] == ["none", "paraphrase", "alt_solution", "harder"]
    assert data["samples"]["minimum"] == 2 and data["samples"]["maximum"] == 16
    build = forms.construction_form(DataKnobs()).model_json_schema()["$defs"]["BuildKnobs"]["properties"]
    assert not {"questions", "augment", "mixture"} & set(build)  # the plan's decisions


@pytest.mark.parametrize(("spec", "refused"), [
    ("student", None), ("openai-compatible:http://127.0.0.1:8000/v1#m", None),
    ("openai-compatible:http://localhost:8000/v1#m", None),
    ("openai-compatible:https://api.together.xyz/v1#m", "remote model API (host api.together.xyz)"),
    ("openai-compatible:http://10.0.0.5:8000/v1#m", "remote model API (host 10.0.0.5)"),
    ("local", "write --generator student"), ("nonsense", "unknown backbone"),
])
def test_only_local_models_may_generate(spec, refused, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    problem = generator_problem(spec)
    assert (problem is None) if refused is None else refused in problem
    assert "the OpenAI API" in generator_problem("openai:gpt-4o")
    monkeypatch.setenv("POSTTRAIN_LOCAL_HOSTS", "10.0.0.5")
    assert generator_problem("openai-compatible:http://10.0.0.5:8000/v1#m") is None


def _pairs(spec: dict[str, int]) -> list:
    out = []
    for source, n in spec.items():
        for i in range(n):
            ex = TrainingExample([{"role": "user", "content": "q"}], "step " * (i + 1), f"{source}-{i}", "q")
            out.append(({"_source": source}, ex))
    return out


def test_a_mixture_fills_the_first_rows_by_share():
    ops: list[OpCount] = []
    mixed = _mix(_pairs({"a": 50, "b": 50}), DataKnobs(max_rows=10, mixture={"a": 0.8}), ops)
    assert [r["_source"] for r, _ in mixed[:10]].count("a") == 8 and len(mixed) == 100
    assert ops[0].op == "mixture a 8, b 2"
    short = _mix(_pairs({"a": 3, "b": 50}), DataKnobs(max_rows=10, mixture={"a": 0.8}), [])
    assert [r["_source"] for r, _ in short[:10]].count("a") == 3  # a source short of its share gives what it has
    assert _mix(_pairs({"a": 5}), DataKnobs(), []) == _pairs({"a": 5})


def test_difficulty_keeps_a_third_by_pass_rate_or_solution_length():
    pairs = _pairs({"a": 9})
    hard = _by_difficulty(pairs, DataKnobs(difficulty="harder"), [], rates=None)
    assert [ex.source_id for _, ex in hard] == ["a-8", "a-7", "a-6"]  # the longest solutions
    easy = _by_difficulty(pairs, DataKnobs(difficulty="easier"), [], rates={f"a-{i}": i / 8 for i in range(9)})
    assert [ex.source_id for _, ex in easy] == ["a-8", "a-7", "a-6"]  # the highest pass rates
    assert _by_difficulty(pairs, DataKnobs(), [], rates=None) == pairs


def test_generated_rows_get_room_within_the_row_cap():
    from tools.data import _source_rows

    assert _source_rows(DataKnobs(max_rows=6), 300) == 6
    assert _source_rows(DataKnobs(max_rows=6, augment="paraphrase"), 300) == 3
    assert _source_rows(DataKnobs(max_rows=10, synthesize=4), 300) == 6
    assert _source_rows(DataKnobs(max_rows=6, augment="paraphrase"), 4) == 4  # too few rows: all, and variants


def test_sampled_answers_become_rows_only_when_right_and_in_the_answer_format():
    """A right number without the answer line is graded right by a lenient scorer but would teach the wrong form:
    self-distillation leaves it out (and counts it); DPO pairs a formatted right answer with a wrong one, or the
    reference when the model got none right in form."""
    from toy import Toy

    from tools.sampling import Attempt

    task = Toy()
    ex = task.training_example(task.training_rows()[0], DataKnobs())
    answers = [Attempt("2 plus 100.\nANSWER: 102", True, 1.0), Attempt("It is 102", True, 1.0),
               Attempt("2 plus 100.\nANSWER: 102", True, 1.0), Attempt("ANSWER: 7", False, 0.0)]
    rows, unformatted = rows_from_answers(task, ex, "benchmark_train", answers, "self_distill")
    assert [r[0].response for r in rows] == ["2 plus 100.\nANSWER: 102"] and unformatted == 1
    assert rows[0][0].source_id == f"{ex.source_id}#0" and rows[0][3] == "self-sample"
    (pair,), _ = rows_from_answers(task, ex, "benchmark_train", answers, "dpo")
    assert (pair[0].response, pair[1], pair[3]) == ("2 plus 100.\nANSWER: 102", "ANSWER: 7", "self-sample pair")
    (pair,), _ = rows_from_answers(task, ex, "benchmark_train", answers[1:2] + answers[3:], "dpo")
    assert (pair[0].response, pair[3]) == (ex.response, "reference vs self-sample")
    assert rows_from_answers(task, ex, "benchmark_train", answers[:3], "dpo") == ([], 1)  # nothing wrong to reject
