"""The logger: one structured entry per iteration in task/experiment_log.md, the same entry in memory, and the
stage and stop decisions that follow from the record."""

from __future__ import annotations

from core.handoffs import Best, IterationPlan, IterationRecord, LogEntry, Stage, TrainKnobs
from core.state import DATA_FAILURE, RunState
from roles.context import RunContext
from roles.strategies import NAMES, strategies

STAGE_TITLES = {Stage.LOCAL: "Stage 2: local diagnosis and optimisation",
                Stage.EXPLORATION: "Stage 3: evidence-guided exploration"}
FIELDS = ("context", "status", "motivation", "references", "starting_checkpoint", "training_data", "method",
          "training_config", "evaluation", "result", "analysis", "artifacts", "next_action")


def node(state: RunState, ctx: RunContext) -> dict:
    it, plan, best = state["iteration"], state["plan"], state["best"]
    failure = state.get("failure")
    verdict, manifest = state.get("verdict"), state.get("manifest")
    if not failure and verdict is not None and verdict.decision != "approve":
        failure = (
            f"{DATA_FAILURE} after {state.get('data_rounds', 0)} validation rounds: {'; '.join(verdict.reasons)}"
        )
    report = None if failure else state["eval_report"]
    result = None if failure else state["train_result"]
    kept = report is not None and best.iteration == it
    best_before = _best_before(state, kept)
    analysis, next_action = ctx.policy("logger").analyse(plan, report, best_before, failure)
    last_file = ctx.ws.iteration(it - 1).plan_json
    last = IterationPlan.model_validate_json(last_file.read_text()) if it > 1 and last_file.is_file() else None
    tags = strategies(plan, last, result, own_template=ctx.task.chat_template(ctx.base_model) is not None)
    entry = LogEntry(
        strategies=tags,
        iteration=it,
        stage=state["stage"],
        status="failed" if failure else "completed",
        title=plan.objective[:80],
        context=f"stage {int(state['stage'])}; {plan.objective}",
        motivation="; ".join(plan.problems),
        references="; ".join(plan.references) or "None",
        starting_checkpoint=result.start_checkpoint if result else "N/A (no training run completed)",
        training_data=(
            f"{manifest.rows} rows from {', '.join(manifest.sources)}; "
            + " → ".join(f"{o.op}: {o.rows_after}" for o in manifest.operations)
            + _made(manifest)
            + f"; validation: {verdict.decision if verdict else 'none'}; sha256 {manifest.content_sha256[:12]}"
            if manifest and manifest.attempt and state.get("data_rounds")
            else "N/A"
        ),
        method=f"{plan.method}: " + "; ".join(plan.changes),
        training_config=(
            _train_config(result.knobs or plan.train) + (f"; recipe: {result.recipe}" if result.recipe else "")
            + f"; validation run: {result.validation_run}; command: {result.command}"
            if result
            else "N/A"
        ),
        evaluation=(
            f"{ctx.task.name} canonical inspect task, first {report.n} test samples, provider "
            f"{report.provider}, max_tokens {report.max_tokens}"
            + ("" if report.canonical else " (CPU profile: not canonical)")
            if report
            else "N/A"
        ),
        result=(
            f"{report.metric} {report.accuracy:.4f} ± {report.stderr:.4f} (n={report.n}); delta vs base "
            f"{report.accuracy - state['baseline'].accuracy:+.4f}; {'kept' if kept else 'not kept'}"
            + (f"; paired {report.vs.text()}" if report.vs else "")
            if report
            else f"failed: {failure}"
        ),
        analysis=analysis,
        next_action=next_action,
        artifacts=(
            f"plan {ctx.ws.iteration(it).plan_md}; data {manifest.dataset_dir if manifest else 'N/A'}; "
            + (
                f"model {result.model_dir}; train log {result.log_path}; eval {report.metrics_path}, "
                f"{report.summary_path}"
                if report
                else ""
            )
        ),
    )
    _append(ctx, entry)
    ctx.ws.iteration(it).log_entry_json.write_text(entry.model_dump_json(indent=2))  # what the report reads
    text = render_entry(entry)
    ctx.memory.add(
        "log_entry",
        f"{ctx.ws.root.name}/log/{it}",
        text,
        {
            "task": ctx.task.name,
            "iteration": it,
            "stage": int(entry.stage),
            "role": "logger",
            "score": report.accuracy if report else None,
            "kept": kept,
            "delta": report.accuracy - state["baseline"].accuracy if report else None,
            "strategies": ",".join(tags),
            "improved": bool(report and report.vs and report.vs.low > 0),
            "up": bool(report and report.vs and report.vs.diff > 0),
        },
    )
    record = IterationRecord(
        iteration=it,
        stage=state["stage"],
        objective=plan.objective,
        rows=manifest.rows if manifest else 0,
        method=plan.method,
        score=report.accuracy if report else None,
        delta_vs_base=report.accuracy - state["baseline"].accuracy if report else None,
        kept=kept,
        status=entry.status,
        vs=report.vs if report else None,
        strategies=tags,
    )
    ctx.ws.iteration(it).record_json.write_text(record.model_dump_json(indent=2))
    history = [*state.get("history", []), record]
    stage = next_stage(state["stage"], history, state["baseline"].accuracy, ctx)
    ctx.progress(
        f"logged iteration {it}: {entry.result}"
        + (f"; moving to stage {int(stage)}" if stage != state["stage"] else "")
    )
    return {"history": [record], "stage": stage}


def _best_before(state: RunState, kept: bool) -> Best:
    """The best model before this iteration's evaluation (the evaluator already replaced it when kept)."""
    if not kept:
        return state["best"]
    prior = [r for r in state.get("history", []) if r.kept]
    if prior:
        return Best(model_dir="", score=prior[-1].score, iteration=prior[-1].iteration)
    return Best(model_dir="", score=state["baseline"].accuracy, iteration=0)


def next_stage(stage: Stage, history: list[IterationRecord], baseline: float, ctx: RunContext) -> Stage:
    """Stage 2 turns into stage 3 once `stall_window` iterations in a row failed to beat the best so far by
    `min_gain`."""
    window = ctx.settings.stall_window
    if stage != Stage.LOCAL or len(history) < window:
        return stage
    best, gains = baseline, []
    for r in history:
        gains.append(r.score - best if r.score is not None else float("-inf"))
        best = max(best, r.score if r.score is not None else best)
    stalled = all(g < ctx.settings.min_gain for g in gains[-window:])
    return Stage.EXPLORATION if stalled else stage


def _append(ctx: RunContext, entry: LogEntry) -> None:
    path = ctx.ws.log_path
    text = path.read_text() if path.is_file() else "# Experiment log\n"
    heading = f"## {STAGE_TITLES.get(entry.stage, f'Stage {int(entry.stage)}')}"
    marker = f"### Iteration {entry.iteration}:"
    if marker in text:
        return  # already written before a crash: --resume must not duplicate it
    if heading not in text:
        text += f"\n{heading}\n"
    path.write_text(text + "\n" + render_entry(entry) + "\n")


def render_entry(entry: LogEntry) -> str:
    lines = [f"### Iteration {entry.iteration}: {entry.title}", ""]
    for name in FIELDS:
        label = name.replace("_", " ").capitalize()
        lines.append(f"- {label}: {getattr(entry, name)}")
    lines.append("- Strategies: " + (", ".join(f"{c} ({NAMES[c]})" for c in entry.strategies) or "none named"))
    lines.append(
        "- Backbone note: decisions by the role backbones named in task/task_definition.md "
        "(`playbook` is the rule-based no-LLM baseline)"
    )
    return "\n".join(lines)


def _train_config(k: TrainKnobs) -> str:
    return (
        f"{k.finetuning_type} SFT from {k.start_from}, lr {k.learning_rate:g}, {k.epochs:g} epoch(s), "
        f"batch {k.batch_size}, cutoff {k.cutoff_len}"
    )


def _made(manifest) -> str:
    """What the model's own samples and the generator contributed to the data."""
    parts = []
    if s := manifest.sampling:
        parts.append(f"{s.samples} answers per question at temperature {s.temperature:g} from {s.model_dir} for "
                     f"{s.questions} questions, pass rate {s.pass_rate:.3f}, rows per question "
                     f"{s.kept_per_question}, {s.seconds:.0f} s")
    for g in manifest.generation:
        parts.append(f"generator {g.generator} ({g.mode}): {g.kept} of {g.asked} kept"
                     + (f" (dropped: {g.dropped})" if g.dropped else ""))
    return "".join(f"; {p}" for p in parts)
