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

CPU_FIRST_ROWS = 160
"""On CPU the first run is kept small: it measures the training speed the later plans are sized by (160 rows of
the 135M student took about 10 minutes on 2 cores). On GPU the first run takes all the budget affords."""
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
        changes: list[str] = []
        if record and record.status != "completed":
            train.learning_rate /= 2
            changes.append(f"last iteration {record.status}: halve the learning rate to {train.learning_rate:g}")
        elif ev.stage == Stage.EXPLORATION:
            route = EXPLORATION_ROUTES[(ev.iteration - 1) % len(EXPLORATION_ROUTES)]
            changes.append(f"stage 3 route: {route}")
            if route.startswith("include"):
                data.with_system, train.cutoff_len = True, max(train.cutoff_len, 4096)
                data.max_rows = max(16, data.max_rows // 8)  # prompts are ~7x longer
            elif route.startswith("train longer"):
                train.epochs = min(train.epochs * 2, 8)
            else:
                train.learning_rate /= 2
                data.max_rows *= 2
        else:
            dominant = ev.last_eval.failure_modes[0].category if ev.last_eval and ev.last_eval.failure_modes else "data"
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


def _first_train_knobs(on_gpu: bool, cutoff_len: int) -> TrainKnobs:
    if on_gpu:
        return TrainKnobs(learning_rate=1e-5, epochs=2, batch_size=16, cutoff_len=max(cutoff_len, 1024))
    return TrainKnobs(learning_rate=5e-5, epochs=1, batch_size=4, cutoff_len=cutoff_len)
