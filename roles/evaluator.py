"""The evaluator: the canonical benchmark evaluation at or above the sample floor, the evidence it yields, the rule
that keeps a checkpoint, and the closing measurement that no decision saw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.errors import EvalFailed, GuardViolation
from core.handoffs import Best, EvalReport, FinalResult, Stage
from core.state import RunState
from roles.context import RunContext
from tools.compare import paired
from tools.evaluate import check_limit, choose_provider, read_sample_scores, run_eval
from tools.export import export_model
from tools.guards import verify_eval_checksums
from tools.identity import check_derives


def evaluate(ctx: RunContext, model_dir: str, out_dir: Path, limit: int | None = None, start: int = 0) -> EvalReport:
    verify_eval_checksums(ctx.ws)
    size = ctx.task.benchmark_size()
    limit = limit or dev_limit(ctx)
    check_limit(limit, size, ctx.task.full_size)
    report = run_eval(ctx.task, model_dir, out_dir, limit=limit, on_gpu=ctx.on_gpu,
                      provider=choose_provider(ctx.settings.eval_provider, ctx.on_gpu),
                      batch_size=ctx.settings.eval_batch_size, seed=ctx.settings.seed, on_progress=ctx.progress,
                      start=start)
    for mode in report.failure_modes:
        ctx.memory.add("failure_mode", f"{ctx.ws.root.name}/failure/{out_dir.parent.name}/{mode.label}",
                       f"{mode.label} ({mode.category}), {mode.count} of {report.n}: " + " | ".join(mode.examples),
                       {"task": ctx.task.name, "category": mode.category, "count": mode.count, "role": "evaluator",
                        "model": Path(model_dir).name})
    ctx.progress(f"{report.metric} {report.accuracy:.3f} ± {report.stderr:.3f} on {report.n} samples "
                 f"in {report.runtime_s:.0f}s")
    return report


def dev_limit(ctx: RunContext) -> int:
    """The development slice: the first this-many test samples, which every decision of the run is based on."""
    return ctx.settings.eval_limit or ctx.task.sample_floor()


def baseline(state: RunState, ctx: RunContext) -> dict:
    """Stage 1: the base model's score is the line every iteration is measured against."""
    report = evaluate(ctx, ctx.base_model, ctx.ws.iteration(0).eval)
    if Path(ctx.base_model).is_dir():
        export_model(Path(ctx.base_model), ctx.ws.final_model)  # a submission exists from the start
    best = Best(model_dir=ctx.base_model, score=report.accuracy, iteration=0)
    return {"baseline": report, "best": best, "stage": Stage.LOCAL}


def node(state: RunState, ctx: RunContext) -> dict:
    """An iteration's model is kept only when it beats the best so far by at least `min_gain` (one setting; a gain
    smaller than that is within what a re-run could give), and the paired comparison with the best says how it
    got there."""
    it, result, best = state["iteration"], state["train_result"], state["best"]
    report = evaluate(ctx, result.model_dir, ctx.ws.iteration(it).eval)
    against = "the base model" if best.iteration == 0 else f"the best so far (iteration {best.iteration})"
    comparison = paired(report.samples, read_sample_scores(ctx.ws.iteration(best.iteration).eval), against=against,
                        seed=ctx.settings.seed)
    report = report.model_copy(update={"vs": comparison})
    if comparison:
        ctx.progress(f"paired: {comparison.text()}")
    gain = ctx.settings.min_gain
    if report.accuracy >= best.score + gain:
        export_model(Path(result.model_dir), ctx.ws.final_model)
        ctx.progress(f"kept: final_model/ is now iteration {it} ({best.score:.3f} → {report.accuracy:.3f})")
        return {"eval_report": report, "best": Best(model_dir=result.model_dir, score=report.accuracy, iteration=it)}
    ctx.progress(f"not kept: {report.accuracy:.3f} is not {gain:g} above the best's {best.score:.3f}")
    return {"eval_report": report}


def final(state: RunState, ctx: RunContext) -> dict:
    """At the end, final_model/ on samples that chose nothing: a held-out slice on CPU (beside the base model on
    the same samples), PostTrainBench's final protocol on GPU or with --final-eval full. Whatever fails here is
    recorded and shown, never dropped."""
    mode = ctx.settings.final_eval
    kind = "full" if mode == "full" or (mode == "auto" and ctx.on_gpu) else "held-out" if mode == "auto" else None
    if kind is None:
        return _closing(ctx, state, FinalResult(kind="skipped", note="--final-eval none"))
    best = state["best"]
    model = str(ctx.ws.final_model) if best.iteration > 0 and ctx.ws.final_model.is_dir() else ctx.base_model
    identity = "final_model/ is the base model (no iteration was kept)"
    if model != ctx.base_model:
        try:
            identity = "derives from the base model: " + check_derives(model, ctx.base_model).text()
        except GuardViolation as e:
            ctx.progress(f"final_model/ refused: {e.message}")
            return _closing(ctx, state, FinalResult(kind=kind, identity=f"refused: {e.message}", fallback=True,
                                                    note="the base model's score stands"))
    try:
        result = _held_out(ctx, model) if kind == "held-out" else _full(ctx, model)
    except (EvalFailed, GuardViolation) as e:
        ctx.progress(f"final evaluation failed: {e.message}")
        result = FinalResult(kind=kind, fallback=True, note=f"failed: {e.message}; the base model's score stands")
    return _closing(ctx, state, result.model_copy(update={"identity": identity}))


def _held_out(ctx: RunContext, model: str) -> FinalResult:
    start, floor, size = dev_limit(ctx), ctx.task.sample_floor(), ctx.task.benchmark_size()
    if size - start < floor:
        return FinalResult(kind="skipped", note=f"no held-out slice: {size - start} samples lie beyond the "
                                                f"development slice of {start}, fewer than the floor of {floor}")
    base = evaluate(ctx, ctx.base_model, ctx.ws.final_eval / "base", limit=floor, start=start)
    mine = base if model == ctx.base_model else evaluate(ctx, model, ctx.ws.final_eval / "final_model",
                                                         limit=floor, start=start)
    return FinalResult(kind="held-out", model=mine, base=base,
                       comparison=paired(mine.samples, base.samples, against="the base model",
                                         seed=ctx.settings.seed),
                       note=f"samples {start + 1}-{start + floor}, disjoint from the development slice")


def _full(ctx: RunContext, model: str) -> FinalResult:
    """The final protocol, each model in a process of its own (graph.evaluate --final)."""
    base = _protocol(ctx, ctx.base_model, ctx.ws.final_eval / "base")
    mine = base if model == ctx.base_model else _protocol(ctx, model, ctx.ws.final_eval / "final_model")
    return FinalResult(kind="full", model=mine, base=base,
                       comparison=paired(mine.samples, base.samples, against="the base model", seed=ctx.settings.seed))


def _protocol(ctx: RunContext, model: str, out: Path) -> EvalReport:
    from tools.final_eval import REPORT_FILE

    s = ctx.settings
    cmd = [sys.executable, "-m", "graph.evaluate", "--final", "--task", ctx.task.name, "--model", model,
           "--out", str(out), "--checksums", str(ctx.ws.eval_checksums), "--device", "cuda" if ctx.on_gpu else "cpu",
           "--provider", choose_provider(s.eval_provider, ctx.on_gpu)]
    cmd += ["--data-dir", str(s.data_dir)] if s.data_dir else []
    cmd += ["--judge", s.judge] if s.judge else []
    cmd += ["--batch-size", str(s.eval_batch_size)] if s.eval_batch_size else []
    ctx.progress(f"final protocol for {Path(model).name} in its own process")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # its progress, as ours
        lines.append(line.rstrip())
        ctx.progress(line.rstrip())
    if proc.wait() != 0 or not (out / REPORT_FILE).is_file():
        raise EvalFailed(f"the final protocol for {model} ended with exit code {proc.returncode}: "
                         f"{lines[-1] if lines else 'no output'}")
    return EvalReport.model_validate(json.loads((out / REPORT_FILE).read_text()))


def _closing(ctx: RunContext, state: RunState, result: FinalResult) -> dict:
    """The closing measurement, in the state and at the end of the experiment log."""
    lines = [f"\n## Final evaluation ({result.kind})", ""]
    if result.model is not None:
        m = result.model
        lines.append(f"- final_model/: {m.metric} {m.accuracy:.4f} ± {m.stderr:.4f} on {m.n} samples"
                     + ("" if m.canonical else " (CPU profile: not canonical)"))
    if result.base is not None:
        lines.append(f"- base model, same samples: {result.base.accuracy:.4f} ± {result.base.stderr:.4f}")
    if result.comparison is not None:
        lines.append(f"- paired: {result.comparison.text()}")
    lines += [f"- {label}: {text}" for label, text in (("identity", result.identity), ("note", result.note),
                                                      ("fallback", "yes" if result.fallback else "")) if text]
    lines += [f"- LLM tokens, {line}" for line in ctx.settings.token_lines(state.get("llm_tokens") or {})]
    ctx.ws.log_path.parent.mkdir(parents=True, exist_ok=True)
    if "\n## Final evaluation" not in (ctx.ws.log_path.read_text() if ctx.ws.log_path.is_file() else ""):
        with ctx.ws.log_path.open("a") as f:  # once, also when --resume runs this node again
            f.write("\n".join(lines) + "\n")
    ctx.progress(" ".join(lines[2:])[:300] or f"final evaluation {result.kind}")
    return {"final": result, **({"final_eval": result.model} if result.model is not None else {})}
