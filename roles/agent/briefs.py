"""The inputs of a decision, as compact Markdown: the evidence it rests on, so that even a model without tools sees
it, and the handoff's fields described one per line (small models do not read tool schemas)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from core.handoffs import DatasetManifest, Evidence, IterationPlan, ValidationFindings, ValidationVerdict

HANDOFF = "handoff"


def clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def section(title: str, body: str) -> str:
    return f"## {title}\n\n{body.strip()}\n\n"


def describe_form(form: type[BaseModel]) -> str:
    """The handoff's fields, one line each with type, bounds and default (small models do not see tool schemas)."""
    schema = form.model_json_schema()
    defs = schema.get("$defs", {})
    lines = [f"Call `{HANDOFF}` with these fields. {(form.__doc__ or '').strip()}"]

    def walk(props: dict, required: set[str], prefix: str) -> None:
        for name, spec in props.items():
            spec = _deref(spec, defs)
            items = _deref(spec.get("items", {}), defs)
            if spec.get("type") == "object" and "properties" in spec:
                walk(spec["properties"], set(spec.get("required", [])), f"{prefix}{name}.")
                continue
            lines.append(f"- `{prefix}{name}` ({_type(spec, defs)}{'' if name in required else ', optional'})"
                         f"{': ' + spec['description'] if spec.get('description') else ''}")
            if "properties" in items:
                walk(items["properties"], set(items.get("required", [])), f"{prefix}{name}[].")

    walk(schema["properties"], set(schema.get("required", [])), "")
    return "\n".join(lines)


def _deref(spec: dict, defs: dict) -> dict:
    return defs[spec["$ref"].split("/")[-1]] if "$ref" in spec else spec


def _type(spec: dict, defs: dict) -> str:
    if "enum" in spec:
        kind = " | ".join(json.dumps(v) for v in spec["enum"])
    elif spec.get("type") == "array":
        item = _deref(spec.get("items", {}), defs)
        inner = "objects" if "properties" in item else _type(item, defs)
        kind = (f"list of {inner}" if inner == "objects" else f"list of ({inner})") + (
            f", at most {spec['maxItems']} items" if "maxItems" in spec else "")
    else:
        kind = spec.get("type", "any")
    bounds = [f"{label} {spec[key]}" for key, label in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                                       ("maximum", "≤")) if key in spec]
    if "maxLength" in spec:
        bounds.append(f"at most {spec['maxLength']} characters")
    default = f"default {json.dumps(spec['default'])}" if "default" in spec else ""
    return ", ".join(filter(None, [kind, *bounds, default]))


def plan_inputs(ev: Evidence, cap: int) -> str:
    report = ev.last_eval or ev.baseline
    modes = "\n".join(f"- {m.label} ({m.category}, {m.count} of {report.n})"
                      + (f": e.g. {clip(m.examples[0], 200)}" if m.examples else "")
                      for m in report.failure_modes[:3]) or "- none recorded"
    history = "\n".join(f"- iteration {r.iteration} (stage {int(r.stage)}, {r.status}): {clip(r.objective, 120)}; "
                        f"{r.rows} rows; score {r.score}; {'kept' if r.kept else 'not kept'}"
                        + (f"; strategies {' '.join(r.strategies)}" if r.strategies else "")
                        for r in ev.history[-5:]) or "- none yet"
    methods = (f"methods: {', '.join(ev.methods)}"
               + (f"; sampling affords about {ev.affordable_answers} answers" if len(ev.methods) > 1 else "")
               + f"; local generator: {'yes' if ev.can_generate else 'none'}")
    memory = "\n".join(f"- {clip(h, 220)}" for h in ev.memory_hits[:5]) or "- nothing recalled"
    last = (f"objective: {ev.last_plan.objective}\ndata: {ev.last_plan.data.model_dump_json()}\n"
            f"method: {ev.last_plan.method}\ntrain: {ev.last_plan.train.model_dump_json()}" if ev.last_plan
            else "none (first iteration)")
    train = (f"{ev.last_train.runtime_s:.0f} s, {ev.last_train.steps} steps, loss {ev.last_train.train_loss}"
             if ev.last_train else "none yet")
    return (section("Run", f"iteration {ev.iteration}, stage {int(ev.stage)}; {'GPU' if ev.on_gpu else 'CPU'}; "
                            f"{ev.budget_left_s / 60:.0f} min of budget left, enough for about {cap} training rows\n"
                            f"{methods}")
            + section("Scores", f"baseline {ev.baseline.accuracy:.4f} (n={ev.baseline.n}); best "
                                 f"{ev.best.score:.4f} (iteration {ev.best.iteration})")
            + section("Latest evaluation" if ev.last_eval else "Baseline evaluation",
                       f"accuracy {report.accuracy:.4f} on {report.n} samples; failure modes:\n{modes}")
            + section("History", history) + section("Previous plan", last) + section("Last training", train)
            + section("Memory", memory))


def plan_brief(plan: IterationPlan) -> str:
    return (f"iteration {plan.iteration}, stage {int(plan.stage)}\nproblems: {'; '.join(plan.problems)}\n"
            f"objective: {plan.objective}\nchanges: {'; '.join(plan.changes)}\nmethod: {plan.method}\n"
            f"data knobs: {plan.data.model_dump_json()}\ntraining knobs: {plan.train.model_dump_json()}")


def verdict_section(verdict: ValidationVerdict | None) -> str:
    if verdict is None:
        return ""
    failed = "; ".join(f"{c.name}: {c.detail}" for c in verdict.checks if not c.passed) or "none"
    return section("Last validation verdict", f"decision: {verdict.decision}\nreasons: {'; '.join(verdict.reasons)}"
                                               f"\nfailed checks: {clip(failed, 600)}\ncontaminated ids: "
                                               f"{len(verdict.contaminated_ids)} (excluded automatically)")


def findings_brief(findings: ValidationFindings, contaminated: list[str]) -> str:
    checks = "\n".join(f"- {c.name}: {'pass' if c.passed else 'FAIL'}. {clip(c.detail, 300)}"
                       for c in findings.checks)
    return (f"{checks}\n- usable rows: {findings.usable_rows}\n- contaminated rows: {len(findings.contaminated)}, "
            f"sharing n-grams with {len(contaminated)} test samples")


def manifest_brief(m: DatasetManifest) -> str:
    ops = " → ".join(f"{o.op}: {o.rows_after}" for o in m.operations)
    return f"{m.rows} rows from {', '.join(m.sources)} (attempt {m.attempt}); {ops}"


