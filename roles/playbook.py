"""The `playbook` backbone: a deterministic, rule-based policy for every role, and the no-LLM baseline.

Every rule reads evidence the run produced (scores, failure modes, validation findings, timings); nothing here
knows which benchmark it is working on.
"""

from __future__ import annotations

from core.handoffs import (
    Best,
    ConstructionRequest,
    DataKnobs,
    DataSelection,
    DatasetManifest,
    EvalReport,
    Evidence,
    IterationPlan,
    SourceChoice,
    Stage,
    TrainKnobs,
    ValidationFindings,
    ValidationVerdict,
)
from core.state import DATA_FAILURE

CPU_FIRST_ROWS = 160
"""On CPU the first run is kept small: it measures the training speed the later plans are sized by (160 rows of
the 135M student took about 10 minutes on 2 cores). On GPU the first run takes all the budget affords."""
SAMPLES = 4
"""Answers sampled per question for self-distillation and DPO (the seed's runs used a handful)."""
MIN_QUESTIONS = 8
"""Fewer questions than this are not worth a sampled iteration."""
EXPLORATION_ROUTES = ("include the evaluation's system block in training prompts", "train longer on the same data",
                      "lower learning rate with more data")


class Playbook:
    name = "playbook"

    def plan(self, ev: Evidence) -> IterationPlan:
        problems = [
            f"{m.label} ({m.category}, {m.count} samples)" for m in (ev.last_eval or ev.baseline).failure_modes[:3]
        ]
        problems = problems or ["no failures observed at the last evaluation"]
        cap = ev.affordable_rows
        last = ev.last_plan
        if last is None:
            data = DataKnobs(max_rows=min(cap, CPU_FIRST_ROWS) if not ev.on_gpu else cap)
            train = _first_train_knobs(ev.on_gpu, ev.default_cutoff)
            return IterationPlan(
                iteration=ev.iteration,
                stage=ev.stage,
                problems=problems,
                objective="teach the evaluation's answer format with supervised fine-tuning on the benchmark's "
                "training source, rendered exactly as the evaluation renders its prompts",
                changes=[
                    f"SFT on {data.max_rows} rows of the training source, written as {ev.answer_format}",
                    f"full fine-tuning, lr {train.learning_rate:g}, {train.epochs:g} epoch(s), from the base model",
                ],
                change_kind="both",
                success_criterion=f"development accuracy above the base model's {ev.baseline.accuracy:.3f}",
                references=ev.memory_hits[:3],
                data=data,
                train=train,
            )
        record = ev.history[-1] if ev.history else None
        improved = bool(record and record.kept)
        data, train = last.data.model_copy(), last.train.model_copy()
        data.seed = last.data.seed + 1  # fresh rows each iteration
        method = last.method if improved else "sft"  # a method that did not help is dropped
        data.augment, data.synthesize = "none", 0
        changes: list[str] = []
        dominant = ev.last_eval.failure_modes[0].category if ev.last_eval and ev.last_eval.failure_modes else "data"
        if record and record.status != "completed" and record.rows == 0:  # its data was never approved
            changes.append(f"last iteration {record.status} before training: build SFT rows from the sources again")
        elif record and record.status != "completed":
            train.learning_rate /= 2
            changes.append(f"last iteration {record.status}: halve the learning rate to {train.learning_rate:g}")
        elif ev.stage == Stage.EXPLORATION:
            route = _routes(ev)[(ev.iteration - 1) % len(_routes(ev))]
            changes.append(f"stage 3 route: {route}")
            if route.startswith("include"):
                data.with_system, train.cutoff_len = True, max(train.cutoff_len, 4096)
                data.max_rows = max(16, data.max_rows // 8)  # prompts are ~7x longer
            elif route.startswith("train longer"):
                train.epochs = min(train.epochs * 2, 8)
            elif route.startswith("self-distill"):
                method = _sampled(ev, data, train, "self_distill")
            elif route.startswith("preference"):
                method = _sampled(ev, data, train, "dpo")
            elif route.startswith("augment"):
                data.augment = "paraphrase"
            else:
                train.learning_rate /= 2
                data.max_rows *= 2
        elif not improved and last.method == "sft" and dominant == "data" and _right_sometimes(ev) \
                and _can_sample(ev, "dpo"):
            method = _sampled(ev, data, train, "dpo")
            changes.append("wrong answers dominate and some are right: preference training (DPO) on the model's own "
                           "right and wrong answers to training questions")
        elif not improved and last.method == "sft" and _can_sample(ev, "self_distill") \
                and _expected_right(ev) >= MIN_QUESTIONS:
            method = _sampled(ev, data, train, "self_distill")
            changes.append("supervised fine-tuning stalled: self-distill on the model's own answers that the scorer "
                           "marks right")
        else:
            if improved:
                train.start_from = "best"
                changes.append("the last change helped: continue from the best checkpoint on fresh rows")
            if dominant == "inference_template":
                data.max_rows *= 2
                changes.append("format failures still dominate: double the rows that teach the answer format")
            elif dominant == "training":
                train.learning_rate /= 2
                changes.append(f"truncation or loops dominate: lower the learning rate to {train.learning_rate:g}")
            else:
                data.max_rows *= 2
                changes.append("wrong final numbers dominate: double the worked solutions")
        if method != "dpo" and ev.can_generate and record and record.rows < last.data.max_rows // 2:
            data.augment = "paraphrase"
            changes.append(f"only {record.rows} of {last.data.max_rows} planned rows survived: add a reworded copy of "
                           "each row (written by the local generator)")
        data.max_rows = max(8, min(data.max_rows, cap))
        changes.append(f"{data.max_rows} rows (the budget allows about {cap})")
        kind = "both" if data != last.data and train != last.train else ("data" if data != last.data else "training")
        return IterationPlan(
            iteration=ev.iteration,
            stage=ev.stage,
            problems=problems,
            objective=changes[0],
            changes=changes,
            change_kind=kind,
            success_criterion=f"development accuracy above the best so far ({ev.best.score:.3f})",
            references=ev.memory_hits[:3],
            method=method,
            data=data,
            train=train,
        )

    def select(self, plan: IterationPlan, last_verdict: ValidationVerdict | None) -> DataSelection:
        sources = list(plan.data.sources)
        risks = ["the benchmark's test split must never reach training (13-gram decontamination enforces it)"]
        if last_verdict is not None and last_verdict.decision == "back_to_selection" and len(sources) > 1:
            sources = sources[:1]
            risks.append(f"dropped sources after validation: {'; '.join(last_verdict.reasons)}")
        elif last_verdict is not None and last_verdict.decision == "back_to_selection":
            sources = ["benchmark_train"]
            risks.append(f"fell back to the benchmark's train split: {'; '.join(last_verdict.reasons)}")
        return DataSelection(
            target_behaviours=["the evaluation's prompt and answer format", "responses like the reference solutions"],
            sources=[
                SourceChoice(
                    name=s,
                    reason="in-distribution examples of the benchmark's task"
                    if s == "benchmark_train"
                    else "requested by the plan",
                    max_rows=plan.data.max_rows,
                )
                for s in sources
            ],
            risks=risks,
        )

    def construction(
        self, plan: IterationPlan, selection: DataSelection, last_verdict: ValidationVerdict | None
    ) -> ConstructionRequest:
        knobs = plan.data.model_copy()
        if last_verdict is None or last_verdict.decision != "back_to_construction":
            return ConstructionRequest(knobs=knobs)
        failed = {c.name for c in last_verdict.checks if not c.passed}
        note = f"rebuilding after validation failed: {', '.join(sorted(failed))}"
        if "alignment" in failed or "structure" in failed:
            knobs.rewrite_answers, knobs.options = True, {}  # back to the evaluation's format and the task's defaults
        return ConstructionRequest(knobs=knobs, note=note)

    def judge(self, findings: ValidationFindings, manifest: DatasetManifest) -> ValidationVerdict:
        failed = [c for c in findings.checks if not c.passed]
        contaminated = sorted(findings.contaminated)
        if findings.usable_rows == 0:
            return ValidationVerdict(
                decision="back_to_selection",
                checks=findings.checks,
                reasons=["no usable rows: the selected sources cannot support the target data"],
            )
        if failed:
            return ValidationVerdict(
                decision="back_to_construction",
                checks=findings.checks,
                reasons=[f"{c.name}: {c.detail}" for c in failed],
                contaminated_ids=contaminated,
            )
        return ValidationVerdict(
            decision="approve",
            checks=findings.checks,
            reasons=[f"{manifest.rows} rows pass structure, alignment, content and decontamination checks"],
        )

    def train_knobs(self, plan: IterationPlan, manifest: DatasetManifest) -> TrainKnobs:
        return plan.train

    def analyse(
        self, plan: IterationPlan, report: EvalReport | None, best_before: Best, failure: str | None
    ) -> tuple[str, str]:
        if report is None and (failure or "").startswith(DATA_FAILURE):
            return (f"the iteration did not reach training: {failure}",
                    "build the data another way (other sources, or SFT instead of a sampled method); the validation "
                    "reports named in Artifacts say what failed")
        if report is None:
            return (
                f"the iteration did not reach evaluation: {failure}",
                "retry with a halved learning rate and check the training log named in Artifacts",
            )
        delta = report.accuracy - best_before.score
        top = report.failure_modes[0] if report.failure_modes else None
        verdict = "supported" if delta > 0 else "not supported"
        analysis = (
            f"accuracy {report.accuracy:.3f} vs best {best_before.score:.3f} ({delta:+.3f}); hypothesis "
            f"'{plan.objective}' {verdict}"
        )
        if top:
            analysis += f"; most common failure now: {top.label} ({top.category}, {top.count})"
        nxt = (
            "keep this checkpoint and scale the data that helped"
            if delta > 0
            else "discard this checkpoint; change one setting that targets the dominant failure"
        )
        return analysis, nxt


def _routes(ev: Evidence) -> list[str]:
    """Stage 3's routes: the fixed ones, then the methods and generation this run can use."""
    routes = list(EXPLORATION_ROUTES)
    if _can_sample(ev, "self_distill") and _expected_right(ev) >= MIN_QUESTIONS:
        routes.append("self-distill from the best checkpoint")
    if _can_sample(ev, "dpo") and _right_sometimes(ev):
        routes.append("preference training (DPO) on the model's own answers")
    if ev.can_generate:
        routes.append("augment every row with a reworded copy")
    return routes


def _right_sometimes(ev: Evidence) -> bool:
    return (ev.last_eval or ev.baseline).accuracy > 0 or ev.best.score > 0


def _expected_right(ev: Evidence) -> float:
    """Right answers the sampling budget can expect at the best accuracy seen. Self-distillation trains only on
    those: the embedded student, right 3% of the time, gave 3 right answers in 256, none in the answer format."""
    accuracy = max((ev.last_eval or ev.baseline).accuracy, ev.best.score)
    return accuracy * ev.affordable_answers


def _can_sample(ev: Evidence, method: str) -> bool:
    return method in ev.methods and ev.affordable_answers >= MIN_QUESTIONS * SAMPLES


def _sampled(ev: Evidence, data: DataKnobs, train: TrainKnobs, method: str) -> str:
    """Set the knobs of a sampled method: from the best checkpoint when there is one, as many questions as a
    quarter of the budget samples, and (DPO) a gentler learning rate."""
    data.samples, data.sample_temperature = SAMPLES, 0.8
    data.questions = max(MIN_QUESTIONS, min(data.max_rows, ev.affordable_answers // SAMPLES))
    train.start_from = "best" if ev.best.iteration > 0 else "base"
    if method == "dpo":
        train.learning_rate /= 4  # preference updates move the model further per step than SFT
    return method


def _first_train_knobs(on_gpu: bool, cutoff_len: int) -> TrainKnobs:
    if on_gpu:
        return TrainKnobs(learning_rate=1e-5, epochs=2, batch_size=16, cutoff_len=max(cutoff_len, 1024))
    return TrainKnobs(learning_rate=5e-5, epochs=1, batch_size=4, cutoff_len=cutoff_len)
