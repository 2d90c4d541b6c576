"""Each branch of the rule-based playbook, on evidence built in code."""

from __future__ import annotations

from core.handoffs import (
    Best,
    Check,
    DataKnobs,
    DatasetManifest,
    EvalReport,
    Evidence,
    FailureMode,
    IterationPlan,
    IterationRecord,
    Stage,
    TrainKnobs,
    TrainResult,
    ValidationFindings,
    ValidationVerdict,
)
from roles.playbook import CPU_FIRST_ROWS, Playbook


def report(score: float = 0.1, *categories: str) -> EvalReport:
    modes = [FailureMode(label=f"{c} failure", category=c, count=10 - i, examples=[]) for i, c in enumerate(categories)]
    return EvalReport(model_dir="m", model_sha256="-", accuracy=score, stderr=0.0, n=66, limit=66, canonical=False,
                      max_tokens=256, provider="hf", log_path="-", metrics_path="-", summary_path="-",
                      failure_modes=modes, runtime_s=100.0)


def plan(**train) -> IterationPlan:
    return IterationPlan(iteration=1, stage=Stage.LOCAL, problems=["p"], objective="o", changes=["c"],
                         change_kind="both", success_criterion="s", data=DataKnobs(max_rows=100),
                         train=TrainKnobs(learning_rate=4e-5, **train))


def evidence(*, last_plan=None, history=(), last_eval=None, stage=Stage.LOCAL, on_gpu=False, cap=1000) -> Evidence:
    return Evidence(iteration=len(history) + 1, stage=stage, on_gpu=on_gpu, budget_left_s=3000.0, affordable_rows=cap,
                    baseline=report(0.1, "inference_template"), best=Best(model_dir="b", score=0.1, iteration=0),
                    last_eval=last_eval, history=list(history), last_train=None, last_plan=last_plan,
                    answer_format="ANSWER: <n>", default_cutoff=300)


def done(i: int = 1, *, kept: bool = False, status: str = "completed") -> IterationRecord:
    return IterationRecord(iteration=i, stage=Stage.LOCAL, objective="o", rows=100, method="m", score=0.1,
                           delta_vs_base=0.0, kept=kept, status=status)


def test_first_plan_on_cpu_is_small_and_uses_the_tasks_cutoff():
    p = Playbook().plan(evidence(cap=1000))
    assert p.data.max_rows == CPU_FIRST_ROWS and p.train.cutoff_len == 300 and p.train.start_from == "base"
    assert Playbook().plan(evidence(cap=50)).data.max_rows == 50  # never above what the budget affords
    assert "inference_template failure" in p.problems[0]


def test_first_plan_on_gpu_takes_what_the_budget_affords():
    p = Playbook().plan(evidence(on_gpu=True, cap=5000))
    assert p.data.max_rows == 5000 and p.train.batch_size == 16 and p.train.cutoff_len == 1024


def test_a_failed_iteration_halves_the_learning_rate():
    p = Playbook().plan(evidence(last_plan=plan(), history=[done(status="failed")]))
    assert p.train.learning_rate == 2e-5 and "halve the learning rate" in p.objective


def test_an_iteration_whose_data_was_never_approved_keeps_the_learning_rate_and_goes_back_to_sft():
    failed = done(status="failed").model_copy(update={"rows": 0})
    p = Playbook().plan(evidence(last_plan=plan().model_copy(update={"method": "self_distill"}), history=[failed]))
    assert p.method == "sft" and p.train.learning_rate == 4e-5 and "before training" in p.objective
    analysis, nxt = Playbook().analyse(plan(), None, Best(model_dir="b", score=0.1, iteration=0),
                                       "data not approved after 4 validation rounds: no usable rows")
    assert "did not reach training" in analysis and "learning rate" not in nxt and "validation reports" in nxt


def test_a_kept_iteration_continues_from_the_best_checkpoint():
    p = Playbook().plan(evidence(last_plan=plan(), history=[done(kept=True)], last_eval=report(0.2, "data")))
    assert p.train.start_from == "best" and p.data.seed == 1 and p.data.max_rows == 200


def test_the_dominant_failure_picks_the_change():
    pb = Playbook()
    fmt = pb.plan(evidence(last_plan=plan(), history=[done()], last_eval=report(0.1, "inference_template")))
    assert fmt.data.max_rows == 200 and "format failures" in fmt.changes[0]
    train = pb.plan(evidence(last_plan=plan(), history=[done()], last_eval=report(0.1, "training")))
    assert train.train.learning_rate == 2e-5 and train.data.max_rows == 100
    data = pb.plan(evidence(last_plan=plan(), history=[done()], last_eval=report(0.1, "data")))
    assert data.data.max_rows == 200 and "wrong final" in data.changes[0]


def test_stage_3_routes_rotate():
    pb = Playbook()
    routes = [pb.plan(evidence(last_plan=plan(), history=[done(i) for i in range(1, n + 1)], stage=Stage.EXPLORATION,
                               last_eval=report(0.1, "data"))) for n in (0, 1, 2)]
    with_system, longer, gentler = routes
    assert with_system.data.with_system and with_system.train.cutoff_len == 4096
    assert longer.train.epochs == 2.0
    assert gentler.train.learning_rate == 2e-5 and gentler.data.max_rows == 200


def test_rows_are_capped_by_the_budget():
    p = Playbook().plan(evidence(last_plan=plan(), history=[done()], last_eval=report(0.1, "data"), cap=150))
    assert p.data.max_rows == 150


def verdict(decision: str, *failed: str) -> ValidationVerdict:
    return ValidationVerdict(decision=decision, reasons=["r"],
                             checks=[Check(name=n, passed=False, detail="d") for n in failed] or
                             [Check(name="structure", passed=True, detail="")])


def test_selection_falls_back_after_a_back_to_selection():
    p = plan()
    p.data.sources = ["hub:a/b", "benchmark_train"]
    assert [s.name for s in Playbook().select(p, None).sources] == ["hub:a/b", "benchmark_train"]
    assert [s.name for s in Playbook().select(p, verdict("back_to_selection")).sources] == ["hub:a/b"]
    p.data.sources = ["hub:a/b"]
    assert [s.name for s in Playbook().select(p, verdict("back_to_selection")).sources] == ["benchmark_train"]


def test_construction_rebuilds_in_the_evaluations_format_after_an_alignment_failure():
    p = plan()
    p.data.rewrite_answers, p.data.options = False, {"x": False}
    first = Playbook().construction(p, None, None)
    assert first.knobs.rewrite_answers is False and first.exclude_ids == []
    again = Playbook().construction(p, None, verdict("back_to_construction", "alignment"))
    assert again.knobs.rewrite_answers is True and again.knobs.options == {} and "alignment" in again.note


def manifest(rows: int = 10) -> DatasetManifest:
    return DatasetManifest(dataset_dir="d", dataset_name="train", rows=rows, sources=["benchmark_train"],
                           operations=[], content_sha256="", with_system=False, attempt=1)


def test_judge_branches():
    checks = lambda *failed: [Check(name=n, passed=n not in failed, detail="d")  # noqa: E731
                              for n in ("structure", "alignment", "content", "decontamination")]
    pb = Playbook()
    assert pb.judge(ValidationFindings(checks=checks(), usable_rows=0), manifest()).decision == "back_to_selection"
    bad = pb.judge(ValidationFindings(checks=checks("decontamination"), usable_rows=10,
                                      contaminated={"r1": ["t1"]}), manifest())
    assert bad.decision == "back_to_construction" and bad.contaminated_ids == ["r1"]
    assert pb.judge(ValidationFindings(checks=checks(), usable_rows=10), manifest()).decision == "approve"


def test_analysis_says_whether_the_hypothesis_held():
    best = Best(model_dir="b", score=0.1, iteration=0)
    up, nxt = Playbook().analyse(plan(), report(0.2, "data"), best, None)
    assert "supported" in up and "not supported" not in up and "keep" in nxt
    down, _ = Playbook().analyse(plan(), report(0.05), best, None)
    assert "not supported" in down
    failed, nxt = Playbook().analyse(plan(), None, best, "training failed: OOM")
    assert "did not reach evaluation" in failed and "learning rate" in nxt


def test_the_trainer_follows_the_plan():
    p = plan()
    assert Playbook().train_knobs(p, manifest()) == p.train


def test_speed_estimate_uses_the_last_runs_own_rows_and_epochs():
    """The estimate divides a run's time by that run's rows and epochs, never another iteration's."""
    from roles.budget import SECONDS_PER_TOKEN, seconds_per_row

    run = TrainResult(model_dir="m", start_checkpoint="b", lineage=["b"], config_path="c", command="x", log_path="l",
                      train_loss=1.0, runtime_s=400.0, steps=50, validation_run="v",
                      knobs=TrainKnobs(epochs=2.0), rows=100)
    assert seconds_per_row(run, 384, False) == 2.0
    legacy = run.model_copy(update={"rows": None})  # a checkpoint from before rows were recorded
    assert seconds_per_row(legacy, 384, False) == SECONDS_PER_TOKEN[False] * 384
