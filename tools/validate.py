"""Data validation checks: structure, alignment with the evaluation, content quality and decontamination.

The checks only measure; which way the data goes next (approve, back to construction, back to selection)
is the validation role's decision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from core.handoffs import Check, DatasetManifest, ValidationFindings
from tasks.base import SAMPLE_PLACEHOLDER, BenchmarkTask
from tools.data import load_records

PAIRS = 5
PLACEHOLDER_TOOL = {"name": "placeholder_tool", "description": "<<SAMPLE TOOLS>>",
                    "parameters": {"type": "object", "properties": {}, "required": []}}


def validate(task: BenchmarkTask, manifest: DatasetManifest, model_dir: str, *, cutoff_len: int,
             index) -> ValidationFindings:
    """Run every check over the constructed dataset; `index` is the test set's n-gram index."""
    from transformers import AutoTokenizer

    from tools.decontam import find_contamination
    from tools.sft_data import end_of_turn

    records, meta = load_records(Path(manifest.dataset_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = task.chat_template(model_dir) or tokenizer.chat_template  # the evaluation's
    eot = end_of_turn(tokenizer)
    checks, lines = [], [f"# Validation report (construction attempt {manifest.attempt})", "",
                         f"{len(records)} rows from {', '.join(manifest.sources)}", ""]

    broken = [i for i, r in enumerate(records) if not _well_formed(r, eot, tokenizer, cutoff_len)]
    checks.append(Check(name="structure", passed=bool(records) and not broken,
                        detail=f"{len(records)} rows, {len(broken)} empty, truncated, over {cutoff_len} tokens or "
                               f"without the end-of-turn token" + (f" (first: row {broken[0]})" if broken else "")))

    align_ok, align_detail, pairs_md = _alignment(task, tokenizer, records, meta, manifest.with_system, eot)
    checks.append(Check(name="alignment", passed=align_ok, detail=align_detail))

    checks.append(_content(task, records, eot))

    # The row's own input and response, not our rendering: the evaluation's instruction is in every prompt.
    rows = [(m["source_id"], m.get("decontam") or f"{r['instruction']}\n{_response(r)}")
            for r, m in zip(records, meta)]
    contaminated = find_contamination(rows, index)
    hit_ids = sorted({t for ids in contaminated.values() for t in ids})
    checks.append(Check(name="decontamination", passed=not contaminated,
                        detail=f"{len(contaminated)} rows share a {index.n}-gram with {len(hit_ids)} test samples"
                               + (f": {', '.join(hit_ids)}" if hit_ids else "")))

    for c in checks:
        lines.append(f"- **{c.name}**: {'pass' if c.passed else 'FAIL'}. {c.detail}")
    lines += ["", "## Training samples beside evaluation prompts", "", pairs_md]
    usable = len(records) - len(broken)
    return ValidationFindings(checks=checks, usable_rows=usable, contaminated=contaminated, report_md="\n".join(lines))


def _response(record: dict) -> str:
    """The response a row teaches: its output, or a preference pair's chosen answer."""
    return record.get("output", record.get("chosen", ""))


def _well_formed(record: dict, eot: str, tokenizer, cutoff_len: int) -> bool:
    from tools.sft_data import record_tokens

    prompt = record.get("instruction", "")
    answers = [record.get("chosen", ""), record.get("rejected", "")] if "chosen" in record else [_response(record)]
    if not prompt.strip() or "\ufffd" in prompt:
        return False
    if any(not a.strip() or not a.endswith(eot) or "\ufffd" in a for a in answers):
        return False
    return record_tokens(tokenizer, record) <= cutoff_len


def _render(tokenizer, messages: list[dict], tools: list[dict] | None) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False, add_generation_prompt=True)


def _tool_masker(tokenizer) -> Callable[[str, list[dict] | None], str]:
    """A function that replaces the rendering of a prompt's tool definitions by a placeholder tool's, so that
    prompts differing only in their per-sample tools share one skeleton.

    Where and how tools appear is the chat template's business, so the span is found by rendering one probe turn
    with the prompt's tools and with the placeholder tool: what differs is the tools' rendering. A template that
    drops tools renders both alike and the prompt is left as it is; a span not found exactly once is left too
    (the prompt then keeps its own tools and fails the comparison, visibly).
    """
    probe = [{"role": "user", "content": SAMPLE_PLACEHOLDER}]
    rendered: list[str] = []  # the placeholder's rendering, made on first use

    def mask(prompt: str, tools: list[dict] | None) -> str:
        if not tools:
            return prompt
        if not rendered:
            rendered.append(_render(tokenizer, probe, [PLACEHOLDER_TOOL]))
        a, b = _render(tokenizer, probe, tools), rendered[0]
        head = 0
        while head < min(len(a), len(b)) and a[head] == b[head]:
            head += 1
        tail = 0
        while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
            tail += 1
        ours, placeholder = a[head:len(a) - tail], b[head:len(b) - tail]
        if not ours or prompt.count(ours) != 1:
            return prompt
        return prompt.replace(ours, placeholder)

    return mask


def _alignment(task: BenchmarkTask, tokenizer, records: list[dict], meta: list[dict], with_system: bool,
               eot: str) -> tuple[bool, str, str]:
    """Compare rendered training prompts with prompts rendered by the canonical evaluation path.

    With the sample input masked out (and the tool definitions, where prompts carry their own), every training
    prompt must equal the evaluation's prompt (minus the system block when the dataset deliberately leaves it
    out), and every response must end with the answer line the scorer reads, followed by the end-of-turn token.
    """
    eval_inputs = task.eval_inputs(PAIRS)
    mask_tools = _tool_masker(tokenizer)
    eval_skeletons = set()
    eval_rendered = []
    for text, tools in zip(eval_inputs, task.eval_tools(len(eval_inputs)), strict=True):
        messages = task.prompt_messages(text)
        if not with_system:
            messages = [m for m in messages if m["role"] != "system"]
        rendered = _render(tokenizer, messages, tools)
        eval_rendered.append(rendered)
        eval_skeletons.add(task.prompt_skeleton(mask_tools(rendered, tools), text))
    problems = []
    if len(eval_skeletons) != 1:
        problems.append("evaluation prompts do not share one template")
    mismatched = [i for i, (r, m) in enumerate(zip(records, meta))
                  if task.prompt_skeleton(mask_tools(r["instruction"], m.get("tools")), m["input"])
                  not in eval_skeletons]
    no_answer = [i for i, r in enumerate(records) if not task.answer_ok(_response(r).removesuffix(eot))]
    if mismatched:
        problems.append(f"{len(mismatched)} training prompts differ from the evaluation's prompt template "
                        f"(first: row {mismatched[0]})")
    if no_answer:
        problems.append(f"{len(no_answer)} responses lack the evaluation's answer line, {task.answer_line_hint} "
                        f"(first: row {no_answer[0]})")
    pairs = []
    for i in range(min(PAIRS, len(records))):
        pairs += [
            f"### Pair {i + 1}",
            "",
            "Training sample:",
            "",
            "```",
            records[i]["instruction"] + _response(records[i]),
            "```",
            "",
            "Evaluation prompt:",
            "",
            "```",
            eval_rendered[i % len(eval_rendered)],
            "```",
            "",
        ]
    system_note = "" if with_system else " (system block left out of training prompts by design)"
    detail = (
        "; ".join(problems)
        if problems
        else (
            f"all {len(records)} prompts match the evaluation template{system_note}; "
            "all responses end with the answer line"
        )
    )
    return not problems, detail, "\n".join(pairs)


def _content(task: BenchmarkTask, records: list[dict], eot: str) -> Check:
    outputs = [_response(r).removesuffix(eot) for r in records]
    # A prompt may recur with different responses (self-distillation keeps each distinct right answer); a row
    # may not.
    dupes = sum(n - 1 for n in Counter((r.get("instruction", ""), _response(r)) for r in records).values() if n > 1)
    garbage = [i for i, o in enumerate(outputs) if _garbage(o)]
    # Overly templated synthesis shows as many responses sharing one shape once numbers are masked.
    shapes = Counter("".join("9" if ch.isdigit() else ch for ch in o) for o in outputs)
    top_share = shapes.most_common(1)[0][1] / len(outputs) if outputs else 0.0
    templated = len(outputs) >= 20 and top_share > 0.2
    ok = bool(records) and not dupes and not garbage and not templated
    return Check(
        name="content",
        passed=ok,
        detail=f"{dupes} duplicate rows, {len(garbage)} garbage responses, most common response shape "
        f"covers {top_share:.0%} of rows",
    )


def _garbage(text: str) -> bool:
    if len(text.strip()) < 3:
        return True
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in text)
    return printable / len(text) < 0.95
