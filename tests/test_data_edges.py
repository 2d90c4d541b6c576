"""Every validation verdict takes its own graph edge, through the real data tools and the real graph."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DataStage, plan_of


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(data_dir: Path, split: str) -> list[dict]:
    return [json.loads(x) for x in (data_dir / "gsm8k" / f"{split}.jsonl").read_text().splitlines()]


def test_copied_test_questions_go_back_to_construction_then_get_excluded(make_context, data_dir, tmp_path):
    ctx = make_context()
    from inspect_evals.utils import create_stable_id

    index = ctx.test_index()
    clean = [r for r in _rows(data_dir, "train") if not index.hits(r["question"] + "\n" + r["answer"])][:5000]
    leaked = _rows(data_dir, "test")[100:120]
    leaked_ids = {create_stable_id(r["question"], prefix="gsm8k") for r in leaked}
    source = _write_jsonl(tmp_path / "mixed.jsonl", clean[:2500] + leaked + clean[2500:])
    stage = DataStage(ctx, plan_of(sources=[f"local:{source}"], max_rows=6000))

    verdict, nxt = stage.step()
    assert verdict.decision == "back_to_construction" and nxt == ("data_construction",)
    decon = next(c for c in verdict.checks if c.name == "decontamination")
    named = {t for t in leaked_ids if t in decon.detail}
    assert named == leaked_ids
    assert set(decon.detail.split(": ", 1)[1].split(", ")) == leaked_ids  # those 20 and no others
    assert set(verdict.contaminated_ids) == leaked_ids

    verdict, nxt = stage.step()  # construction drops the contaminated rows
    assert verdict.decision == "approve" and nxt == ("trainer",)
    assert verdict.checks[-1].passed


def test_answers_without_the_answer_line_go_back_to_construction(make_context):
    ctx = make_context()
    stage = DataStage(ctx, plan_of(max_rows=24, rewrite_answers=False))
    verdict, nxt = stage.step()
    assert verdict.decision == "back_to_construction" and nxt == ("data_construction",)
    align = next(c for c in verdict.checks if c.name == "alignment")
    assert not align.passed and "lack the evaluation's answer line" in align.detail
    report = (ctx.ws.iteration_dir(1) / "data" / "validation_report_attempt1.md").read_text()
    assert "Training sample:" in report and "Evaluation prompt:" in report and "####" in report

    verdict, nxt = stage.step()  # the playbook rebuilds with answers rewritten to the evaluation's format
    assert verdict.decision == "approve" and nxt == ("trainer",)


def test_a_source_with_no_usable_rows_goes_back_to_selection(make_context, tmp_path):
    ctx = make_context()
    source = _write_jsonl(tmp_path / "empty.jsonl", [{"question": f"q{i}", "answer": ""} for i in range(50)])
    stage = DataStage(ctx, plan_of(sources=[f"local:{source}"], max_rows=24))
    verdict, nxt = stage.step()
    assert verdict.decision == "back_to_selection" and nxt == ("data_selection",)
    assert "no usable rows" in verdict.reasons[0]

    verdict, nxt = stage.step()  # selection falls back to the benchmark's train split
    assert verdict.decision == "approve" and nxt == ("trainer",)


def test_exclusions_accumulate_across_rebuilds(make_context, data_dir, tmp_path):
    """Rows are drawn afresh on every rebuild, so each one can meet other contaminated rows: every id flagged in the
    iteration stays out of every later rebuild (otherwise two flagged sets can take turns until the round cap)."""
    ctx = make_context()
    index = ctx.test_index()
    clean = [r for r in _rows(data_dir, "train")[:600] if not index.hits(r["question"] + "\n" + r["answer"])][:300]
    leaked = _rows(data_dir, "test")[200:260]
    # Interleaved, so that the rows a build draws from hold some of them each time.
    source = _write_jsonl(tmp_path / "mixed.jsonl", [r for pair in zip(leaked, clean) for r in pair] + clean[60:])
    stage = DataStage(ctx, plan_of(sources=[f"local:{source}"], max_rows=60))
    flagged: list[set[str]] = []
    for _ in range(4):
        verdict, nxt = stage.step()
        values = stage.graph.get_state(stage.config).values
        if verdict.decision == "approve":
            break
        flagged.append(set(verdict.contaminated_ids))
        assert set(values["excluded_ids"]) == set().union(*flagged)  # the union of every round's flags
    assert len(flagged) >= 2 and all(not (a & b) for a, b in zip(flagged, flagged[1:]))  # never flagged twice
