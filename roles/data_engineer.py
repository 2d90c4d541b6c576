"""The data engineer: selection → construction → validation. Validation's verdict picks the next edge."""

from __future__ import annotations

from core.errors import SourceError
from core.handoffs import Check, DatasetManifest, OpCount, ValidationFindings
from core.state import RunState
from core.workspace import VALIDATION_REPORT
from roles import rules
from roles.context import RunContext
from tools.data import Models, construct
from tools.evaluate import choose_provider
from tools.validate import validate


def selection(state: RunState, ctx: RunContext) -> dict:
    plan, verdict = state["plan"], _last_verdict(state)
    sel = ctx.policy("data_selection").select(plan, verdict)
    rules.enforce("data selection", rules.selection_problems(sel, plan))
    out = ctx.ws.iteration(state["iteration"]).data
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(sel.model_dump_json(indent=2))
    ctx.progress(f"selected {', '.join(f'{s.name} (≤{s.max_rows})' for s in sel.sources)}")
    return {"selection": sel}


def construction(state: RunState, ctx: RunContext) -> dict:
    plan, sel, verdict = state["plan"], state["selection"], _last_verdict(state)
    request = ctx.policy("data_construction").construction(plan, sel, verdict)
    # Contaminated rows are excluded whatever the policy says, and every id flagged in this iteration stays out:
    # a fact, not a decision (otherwise two rebuilds could keep trading one flagged set for another).
    excluded = sorted(set(state.get("excluded_ids") or []) | set(request.exclude_ids))
    request = request.model_copy(update={"exclude_ids": excluded})
    rules.enforce("data construction", rules.construction_problems(request.knobs, plan))
    attempt = state.get("data_rounds", 0) + 1
    out = ctx.ws.iteration(state["iteration"]).data
    if request.note:
        ctx.progress(request.note + (f" (excluding {len(excluded)} contaminated test ids)" if excluded else ""))
    best = state["best"]
    start = best.model_dir if plan.train.start_from == "best" and best.iteration > 0 else ctx.base_model
    models = Models(start=start, provider=choose_provider(ctx.settings.eval_provider, ctx.on_gpu), on_gpu=ctx.on_gpu,
                    generator=ctx.settings.generator, batch_size=ctx.settings.eval_batch_size)
    try:
        manifest = construct(ctx.task, ctx.base_model, sel.sources, request.knobs, out,
                             cutoff_len=plan.train.cutoff_len, exclude_ids=set(excluded), attempt=attempt,
                             method=plan.method, models=models, index=ctx.test_index(), on_progress=ctx.progress)
    except SourceError as e:
        # An unreadable source is evidence for validation (zero usable rows → back to selection), not a crash.
        ctx.progress(f"source failed: {e}")
        manifest = DatasetManifest(dataset_dir=str(out), dataset_name="", rows=0, sources=[s.name for s in sel.sources],
                                   operations=[OpCount(op=f"extract failed: {e}", rows_after=0)], content_sha256="",
                                   with_system=request.knobs.with_system, attempt=attempt, method=plan.method)
    return {"manifest": manifest}


def validation(state: RunState, ctx: RunContext) -> dict:
    manifest: DatasetManifest = state["manifest"]
    rounds = state.get("data_rounds", 0) + 1
    out = ctx.ws.iteration(state["iteration"]).data
    if manifest.rows == 0:
        detail = "; ".join(o.op for o in manifest.operations[-1:])
        findings = ValidationFindings(checks=[Check(name="structure", passed=False, detail=f"no rows: {detail}")],
                                      usable_rows=0, report_md=f"# Validation report\n\nNo rows: {detail}\n")
    else:
        findings = validate(ctx.task, manifest, ctx.base_model, cutoff_len=state["plan"].train.cutoff_len,
                            index=ctx.test_index())
    verdict = ctx.policy("data_validation").judge(findings, manifest)
    # The measured checks and ids are facts: whatever decided, the verdict carries the findings' own.
    verdict = verdict.model_copy(update={"checks": findings.checks, "contaminated_ids": findings.contaminated_rows()})
    rules.enforce("data validation", rules.verdict_problems(verdict, findings))
    report = (
        findings.report_md + f"\n\n## Verdict: {verdict.decision}\n\n" + "\n".join(f"- {r}" for r in verdict.reasons)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"validation_report_attempt{rounds}.md").write_text(report)
    (out / VALIDATION_REPORT).write_text(report)
    (out / "verdict.json").write_text(verdict.model_dump_json(indent=2))
    ctx.memory.add(
        "verdict",
        f"{ctx.ws.root.name}/verdict/{state['iteration']}/{rounds}",
        f"validation {verdict.decision}: " + "; ".join(verdict.reasons),
        {
            "task": ctx.task.name,
            "iteration": state["iteration"],
            "stage": int(state["stage"]),
            "role": "data_validation",
            "decision": verdict.decision,
        },
    )
    ctx.progress(f"validation: {verdict.decision} ({'; '.join(verdict.reasons)[:160]})")
    excluded = sorted(set(state.get("excluded_ids") or []) | set(verdict.contaminated_ids))
    return {"verdict": verdict, "data_rounds": rounds, "excluded_ids": excluded}


def _last_verdict(state: RunState):
    """The verdict that sent the data back within this iteration, if any."""
    return state.get("verdict") if state.get("data_rounds", 0) > 0 else None
