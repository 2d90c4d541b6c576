"""The data engineer: selection → construction → validation. Validation's verdict picks the next edge."""

from __future__ import annotations

from graph.context import RunContext
from graph.state import DatasetManifest, OpCount
from tools.data import SourceError, construct
from tools.validate import validate


def selection(state: dict, ctx: RunContext) -> dict:
    plan, verdict = state["plan"], _last_verdict(state)
    sel = ctx.policy("data_selection").select(plan, verdict)
    out = ctx.ws.iteration_dir(state["iteration"]) / "data"
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(sel.model_dump_json(indent=2))
    ctx.progress(f"selected {', '.join(f'{s.name} (≤{s.max_rows})' for s in sel.sources)}")
    return {"selection": sel}


def construction(state: dict, ctx: RunContext) -> dict:
    plan, sel, verdict = state["plan"], state["selection"], _last_verdict(state)
    request = ctx.policy("data_construction").construction(plan, sel, verdict)
    attempt = state.get("data_rounds", 0) + 1
    out = ctx.ws.iteration_dir(state["iteration"]) / "data"
    if request.note:
        ctx.progress(request.note)
    try:
        manifest = construct(ctx.task, ctx.base_model, sel.sources, request.knobs, out,
                             cutoff_len=plan.train.cutoff_len, exclude_ids=set(request.exclude_ids), attempt=attempt,
                             on_progress=ctx.progress)
    except SourceError as e:
        # An unreadable source is evidence for validation (zero usable rows → back to selection), not a crash.
        ctx.progress(f"source failed: {e}")
        manifest = DatasetManifest(dataset_dir=str(out), dataset_name="", rows=0, sources=[s.name for s in sel.sources],
                                   operations=[OpCount(op=f"extract failed: {e}", rows_after=0)], content_sha256="",
                                   with_system=request.knobs.with_system, attempt=attempt)
    return {"manifest": manifest}


def validation(state: dict, ctx: RunContext) -> dict:
    from graph.state import Check
    from tools.validate import ValidationFindings

    manifest: DatasetManifest = state["manifest"]
    rounds = state.get("data_rounds", 0) + 1
    out = ctx.ws.iteration_dir(state["iteration"]) / "data"
    if manifest.rows == 0:
        detail = "; ".join(o.op for o in manifest.operations[-1:])
        findings = ValidationFindings(checks=[Check(name="structure", passed=False, detail=f"no rows: {detail}")],
                                      usable_rows=0, report_md=f"# Validation report\n\nNo rows: {detail}\n")
    else:
        findings = validate(ctx.task, manifest, ctx.base_model, cutoff_len=state["plan"].train.cutoff_len,
                            index=ctx.test_index())
    verdict = ctx.policy("data_validation").judge(findings, manifest)
    report = findings.report_md + f"\n\n## Verdict: {verdict.decision}\n\n" + "\n".join(f"- {r}" for r in verdict.reasons)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"validation_report_attempt{rounds}.md").write_text(report)
    (out / "validation_report.md").write_text(report)
    (out / "verdict.json").write_text(verdict.model_dump_json(indent=2))
    ctx.memory.add("verdict", f"{ctx.ws.root.name}/verdict/{state['iteration']}/{rounds}",
                   f"validation {verdict.decision}: " + "; ".join(verdict.reasons),
                   {"task": ctx.task.name, "iteration": state["iteration"], "stage": int(state["stage"]),
                    "role": "data_validation", "decision": verdict.decision})
    ctx.progress(f"validation: {verdict.decision} ({'; '.join(verdict.reasons)[:160]})")
    return {"verdict": verdict, "data_rounds": rounds}


def _last_verdict(state: dict):
    """The verdict that sent the data back within this iteration, if any."""
    return state.get("verdict") if state.get("data_rounds", 0) > 0 else None
