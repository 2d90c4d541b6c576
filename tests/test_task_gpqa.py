"""The gpqa_diamond task is inspect-evals' own (multiple choice with chain of thought, choice() scorer), read from
a local CSV. The fixtures are invented rows in simple-evals' column schema (tests/fixtures/gpqa/make_fixture.py):
GPQA's own rows are not to be republished."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import pytest
from test_task_aime2025 import assert_package_checksummed, mock_model, through_first_validation

from core.handoffs import DataKnobs
from tasks import get_task
from tasks.base import InputError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gpqa"
TRAIN = FIXTURES / "train.jsonl"


def _upstream_offline(monkeypatch):
    """inspect-evals' gpqa_diamond task itself, its download pointed at the fixture (independently of tasks/)."""
    upstream = importlib.import_module("inspect_evals.gpqa.gpqa")
    monkeypatch.setattr(upstream, "download", lambda url, sha256, dest, **kw: dest)
    monkeypatch.setattr(upstream, "GPQA_DIAMOND_CACHE_PATH", FIXTURES / "gpqa_diamond" / "gpqa_diamond.csv")
    return upstream.gpqa_diamond()


def test_fixtures_are_the_generator_output_and_invented(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpqa_make_fixture", FIXTURES / "make_fixture.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    monkeypatch.setattr(gen, "HERE", tmp_path)
    gen.write()
    for rel in ("gpqa_diamond/gpqa_diamond.csv", "train.jsonl"):
        assert (tmp_path / rel).read_text() == (FIXTURES / rel).read_text(), rel
    rows = list(csv.DictReader((FIXTURES / "gpqa_diamond" / "gpqa_diamond.csv").open()))
    assert len(rows) >= 32 and all(r["Question"].startswith("FIXTURE (invented)") for r in rows)
    train = [json.loads(x) for x in TRAIN.read_text().splitlines()]
    assert all(r["Question"].startswith("Invented practice item") for r in train)


def test_prompt_is_inspect_evals_own(monkeypatch, tmp_path, tiny_model_dir):
    import inspect_ai
    from transformers import AutoTokenizer

    ours = get_task("gpqa_diamond", FIXTURES)
    by_id = {str(s.id): text for s, text in zip(ours.inspect_task().dataset, ours.eval_inputs(40), strict=True)}
    log = inspect_ai.eval(_upstream_offline(monkeypatch), model=mock_model(["ANSWER: A"] * 3), limit=3, epochs=1,
                          log_dir=str(tmp_path), display="none")[0]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(log.samples) == 3 and log.samples[0].id == "recFIXTURE0000"
    for sample in log.samples:
        theirs = [{"role": m.role, "content": m.text} for m in sample.messages if m.role in ("system", "user")]
        mine = ours.prompt_messages(by_id[str(sample.id)])
        assert mine == theirs
        assert (tok.apply_chat_template(mine, tokenize=False, add_generation_prompt=True)
                == tok.apply_chat_template(theirs, tokenize=False, add_generation_prompt=True))
    # The same seeded choice order (seed 42) and targets as the canonical task.
    theirs_ds = _upstream_offline(monkeypatch).dataset
    assert [(s.choices, s.target) for s in theirs_ds] == [(s.choices, s.target) for s in ours.inspect_task().dataset]


def test_one_epoch_and_the_choice_scorer(tmp_path):
    """PostTrainBench's one epoch; the letter on the last line decides, through the canonical solver and scorer."""
    import inspect_ai

    task = get_task("gpqa_diamond", FIXTURES)
    it = task.inspect_task()
    assert it.epochs == 1 and "choice" in repr(it.scorer)
    targets = {str(s.id): s.target for s in it.dataset}
    inputs = dict(zip(targets, task.eval_inputs(len(targets)), strict=True))

    def answer(right: bool):
        def respond(messages, *_):
            sid = next(i for i, text in inputs.items() if text in messages[-1].text)
            letter = targets[sid] if right else "ABCD"[("ABCD".index(targets[sid]) + 1) % 4]
            return f"Working it out step by step.\nANSWER: {letter}"
        return respond

    for right, expected in ((True, "C"), (False, "I")):
        log = inspect_ai.eval(it, model=mock_model(answer(right)), limit=4, log_dir=str(tmp_path), display="none")[0]
        assert len(log.samples) == 4
        assert {next(iter(s.scores.values())).value for s in log.samples} == {expected}


def test_training_rows_render_as_the_evaluation(tmp_path):
    task = get_task("gpqa_diamond", FIXTURES)
    with pytest.raises(InputError, match="no training split of its own: give --train-file"):
        task.load_train()
    rows = [json.loads(x) for x in TRAIN.read_text().splitlines()]
    ex = task.training_example(rows[0], DataKnobs())
    assert ex.messages == task.prompt_messages(ex.input_text)
    assert ex.input_text.startswith(rows[0]["Question"] + "\n\nA) ") and ex.response.startswith(rows[0]["Explanation"])
    letter = ex.response[-1]
    assert task.answer_ok(ex.response) and f"{letter}) {rows[0]['Correct Answer']}" in ex.input_text
    letters = {task.training_example(r, DataKnobs()).response[-1] for r in rows}
    assert letters == set("ABCD")  # shuffled per row, not always A
    raw = task.training_example(rows[0], DataKnobs(rewrite_answers=False))
    assert not task.answer_ok(raw.response) and raw.response.endswith(rows[0]["Correct Answer"])
    texts = task.test_texts()
    assert len(texts) == 40 and texts["recFIXTURE0000"].endswith("\n12")


def test_bad_csv_names_file_and_row(tmp_path):
    folder = tmp_path / "gpqa_diamond"
    folder.mkdir()
    rows = list(csv.DictReader((FIXTURES / "gpqa_diamond" / "gpqa_diamond.csv").open()))
    rows[4]["Incorrect Answer 2"] = ""
    with (folder / "gpqa_diamond.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(InputError, match=r"gpqa_diamond.csv row 5 .*Incorrect Answer 2"):
        get_task("gpqa_diamond", tmp_path).load_test()


def test_graph_baseline_then_data_reaches_approve(make_context):
    ctx = make_context(task="gpqa_diamond", data_dir=FIXTURES, train_file=TRAIN)
    values, nxt = through_first_validation(ctx)
    assert_package_checksummed(ctx, ("inspect_evals.gpqa",))
    base = values["baseline"]
    assert base.n == 32 and base.limit == 32 and not base.canonical
    verdict = values["verdict"]
    assert verdict.decision == "approve" and nxt == ("trainer",), verdict.reasons
    assert all(c.passed for c in verdict.checks), verdict.checks
    assert values["manifest"].rows == 40
