"""The evaluator: the canonical benchmark evaluation at or above the sample floor, and the evidence it yields."""

from __future__ import annotations

from pathlib import Path

from core.handoffs import Best, EvalReport, Stage
from core.state import RunState
from roles.context import RunContext
from tools.evaluate import check_limit, choose_provider, run_eval
from tools.export import export_model
from tools.guards import verify_eval_checksums


def evaluate(ctx: RunContext, model_dir: str, out_dir: Path, limit: int | None = None) -> EvalReport:
    verify_eval_checksums(ctx.ws)
    size = ctx.task.benchmark_size()
    limit = limit or ctx.settings.eval_limit or ctx.task.sample_floor()
    check_limit(limit, size, ctx.task.full_size)
    report = run_eval(ctx.task, model_dir, out_dir, limit=limit, on_gpu=ctx.on_gpu,
                      provider=choose_provider(ctx.settings.eval_provider, ctx.on_gpu),
                      batch_size=ctx.settings.eval_batch_size, seed=ctx.settings.seed, on_progress=ctx.progress)
    for mode in report.failure_modes:
        ctx.memory.add("failure_mode", f"{ctx.ws.root.name}/failure/{out_dir.parent.name}/{mode.label}",
                       f"{mode.label} ({mode.category}), {mode.count} of {report.n}: " + " | ".join(mode.examples),
                       {"task": ctx.task.name, "category": mode.category, "count": mode.count, "role": "evaluator",
                        "model": Path(model_dir).name})
    ctx.progress(f"{report.metric} {report.accuracy:.3f} ± {report.stderr:.3f} on {report.n} samples "
                 f"in {report.runtime_s:.0f}s")
    return report


def baseline(state: RunState, ctx: RunContext) -> dict:
    """Stage 1: the base model's score is the line every iteration is measured against."""
    report = evaluate(ctx, ctx.base_model, ctx.ws.iteration(0).eval)
    if Path(ctx.base_model).is_dir():
        export_model(Path(ctx.base_model), ctx.ws.final_model)  # a submission exists from the start
    best = Best(model_dir=ctx.base_model, score=report.accuracy, iteration=0)
    return {"baseline": report, "best": best, "stage": Stage.LOCAL}


def node(state: RunState, ctx: RunContext) -> dict:
    it, result, best = state["iteration"], state["train_result"], state["best"]
    report = evaluate(ctx, result.model_dir, ctx.ws.iteration(it).eval)
    if report.accuracy > best.score:
        export_model(Path(result.model_dir), ctx.ws.final_model)
        ctx.progress(f"kept: final_model/ is now iteration {it} ({best.score:.3f} → {report.accuracy:.3f})")
        return {"eval_report": report, "best": Best(model_dir=result.model_dir, score=report.accuracy, iteration=it)}
    ctx.progress(f"not kept: {report.accuracy:.3f} does not beat {best.score:.3f}")
    return {"eval_report": report}


def final(state: RunState, ctx: RunContext) -> dict:
    """At the end: the full benchmark on final_model/, recorded apart from the development scores."""
    wanted = ctx.settings.final_eval == "full" or (ctx.settings.final_eval == "auto" and ctx.on_gpu)
    if not wanted or not ctx.ws.final_model.is_dir():
        ctx.progress("final full-benchmark evaluation skipped (--final-eval full runs it)")
        return {}
    report = evaluate(ctx, str(ctx.ws.final_model), ctx.ws.final_eval, limit=ctx.task.benchmark_size())
    return {"final_eval": report}
