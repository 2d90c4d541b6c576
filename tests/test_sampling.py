"""Self-distillation and DPO sample the model's own answers to training questions: prompts exactly as the evaluation
renders them, answers generated through the evaluation's own provider, graded by the benchmark's own scorer, and
kept in sampled.jsonl so a rebuild or a resumed run does not sample again."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.errors import EvalFailed, InputError
from core.handoffs import DataKnobs
from core.workspace import INSPECT_DIR
from tasks import get_task, task_class
from tasks.base import MaxTokens
from tools.sampling import SAMPLED_FILE, Attempt, _digest, grade, sample_answers

GPQA = Path(__file__).resolve().parent / "fixtures" / "gpqa"
KNOBS = DataKnobs()


def _messages(sample) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text} for m in sample.input]


def _logs(out: Path) -> list[Path]:
    return sorted((out / INSPECT_DIR).glob("*.json"))


@pytest.fixture(scope="module")
def gsm8k(data_dir):
    task = get_task("gsm8k", data_dir)
    m = task.max_tokens
    task.max_tokens = MaxTokens(m.canonical, m.cascade, cpu=12)  # the tiny model's answers need not be long
    return task


def test_sample_answers_grades_every_attempt_and_reuses_them(gsm8k, tiny_model_dir, tmp_path):
    import inspect_ai.log

    rows = gsm8k.load_train()[:4]
    out = tmp_path / "sampling"
    lines: list[str] = []
    kwargs = dict(k=2, temperature=0.8, provider="prefixcache", on_gpu=False, seed=0, on_progress=lines.append)
    sampled = sample_answers(gsm8k, str(tiny_model_dir), rows[:3], KNOBS, out, **kwargs)

    ids = [str(gsm8k.graded_sample(r, KNOBS).id) for r in rows]
    assert [s.source_id for s in sampled] == ids[:3] and [s.row for s in sampled] == rows[:3]
    assert all(len(s.attempts) == 2 for s in sampled)
    for s in sampled:
        assert s.pass_rate == sum(a.correct for a in s.attempts) / 2
        for a in s.attempts:
            assert isinstance(a, Attempt) and a.value in (0.0, 1.0) and a.correct == (a.value == 1.0)
            assert a.correct == grade(gsm8k, s.row, KNOBS, a.text)  # the eval's verdict is the scorer's
    assert any(line.startswith("sampling 2 answer(s) to each of 3") for line in lines)
    [log_path] = _logs(out)
    log = inspect_ai.log.read_eval_log(str(log_path))
    assert log.eval.config.epochs == 2 and log.plan.config.temperature == 0.8
    assert log.plan.config.max_tokens == 12 and log.eval.model_args["do_sample"] is True
    for sample in log.samples:  # what the model was shown: the evaluation's own prompt for that question
        row = rows[ids.index(str(sample.id))]
        shown = [{"role": m.role, "content": m.text} for m in sample.messages if m.role != "assistant"]
        assert shown == gsm8k.prompt_messages(row["question"])
        assert sample.output.completion in [a.text for a in sampled[ids.index(str(sample.id))].attempts]
    cached = [json.loads(x) for x in (out / SAMPLED_FILE).read_text().splitlines()]
    assert [c["source_id"] for c in cached] == ids[:3] and all(c["samples"] == 2 for c in cached)

    again = sample_answers(gsm8k, str(tiny_model_dir), rows[:3], KNOBS, out, **kwargs)
    assert again == sampled and len(_logs(out)) == 1  # reused: no new eval
    assert any("reusing 3 sampled question(s)" in line for line in lines)

    more = sample_answers(gsm8k, str(tiny_model_dir), rows, KNOBS, out, **kwargs)
    assert more[:3] == sampled and len(more[3].attempts) == 2
    new_log = next(p for p in _logs(out) if p != log_path)
    assert {str(s.id) for s in inspect_ai.log.read_eval_log(str(new_log)).samples} == {ids[3]}  # only the new one
    assert len((out / SAMPLED_FILE).read_text().splitlines()) == 4

    sample_answers(gsm8k, str(tiny_model_dir), rows[:1], KNOBS, out, **{**kwargs, "k": 1})
    assert len(_logs(out)) == 3  # another k: sampled again


def test_failed_eval_and_vllm_seed(gsm8k, data_dir, tmp_path, monkeypatch):
    """A failed eval is EvalFailed; on vllm/ the seed goes to the server, not to every request (k copies)."""
    import inspect_ai

    import tools.sampling as sampling

    calls = []

    def fake_eval(task, **kwargs):
        calls.append(kwargs)
        return [SimpleNamespace(status="error", samples=[], error=SimpleNamespace(message="boom"))]

    monkeypatch.setattr(inspect_ai, "eval", fake_eval)
    monkeypatch.setattr(sampling, "provider_model_args", lambda *a, **kw: {"gpu_memory_utilization": 0.85})
    rows = gsm8k.load_train()[:2]
    with pytest.raises(EvalFailed, match="boom"):
        sample_answers(gsm8k, "some/model", rows, KNOBS, tmp_path, k=4, temperature=1.0, provider="vllm",
                       on_gpu=True, seed=7)
    [call] = calls
    assert call["seed"] is None and call["model_args"]["seed"] == 7 and call["epochs"] == 4
    assert call["max_tokens"] == gsm8k.max_tokens.canonical and call["model"] == "vllm/some/model"
    assert not (tmp_path / SAMPLED_FILE).exists()


def test_grade_gsm8k_and_aime(gsm8k, data_dir):
    row = gsm8k.load_train()[0]
    reference = gsm8k.training_example(row, KNOBS).response  # rewritten to "...\n\nANSWER: <n>"
    target = reference.rsplit("ANSWER: ", 1)[1]
    assert grade(gsm8k, row, KNOBS, reference)
    assert not grade(gsm8k, row, KNOBS, reference.replace(f"ANSWER: {target}", f"ANSWER: {int(target) + 1}"))
    assert not grade(gsm8k, row, KNOBS, reference.replace(f"ANSWER: {target}", f"ANSWER: -{target}"))
    aime = get_task("aime2025", data_dir)  # trains on GSM8K rows in AIME's answer format
    assert aime.graded_sample(row, KNOBS).target == target
    assert grade(aime, row, KNOBS, aime.training_example(row, KNOBS).response)
    assert not grade(aime, row, KNOBS, f"ANSWER: {int(target) + 1}")


def test_grade_gpqa_with_the_shown_choice_order():
    task = get_task("gpqa_diamond", GPQA, train_file=GPQA / "train.jsonl")
    rows = task.training_rows()[:4]
    letters = set()
    for row in rows:
        sample = task.graded_sample(row, KNOBS)
        example = task.training_example(row, KNOBS)
        right = ord(sample.target) - ord("A")
        assert sample.choices[right] == row["Correct Answer"] and sorted(sample.choices) == sorted(
            row[c] for c in ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"))
        assert _messages(sample) == task.prompt_messages(example.input_text)  # the choices as the prompt shows them
        assert grade(task, row, KNOBS, example.response)
        wrong = next(c for c in "ABCD" if c != sample.target)
        assert not grade(task, row, KNOBS, f"Thinking.\nANSWER: {wrong}")
        assert not grade(task, row, KNOBS, "no letter at all")
        letters.add(sample.target)
    assert len(letters) > 1  # shuffled: the right answer is not always A
    # Another seed shows the choices in another order: sampled answers to one are not reused for the other.
    other = [task.graded_sample(r, DataKnobs(seed=1)) for r in rows]
    assert [s.id for s in other] == [task.graded_sample(r, KNOBS).id for r in rows]
    assert {_digest(s) for s in other}.isdisjoint({_digest(task.graded_sample(r, KNOBS)) for r in rows})


def test_graded_sample_is_the_evaluation_prompt(gsm8k, data_dir, tmp_path):
    """A test row taken as if it were a training row becomes exactly the sample the evaluation sends."""
    import inspect_ai
    from test_task_aime2025 import mock_model

    for task in (gsm8k, get_task("aime2025", data_dir)):
        [log] = inspect_ai.eval(task.inspect_task(), model=mock_model(["ANSWER: 1"] * 2), limit=2,
                                log_dir=str(tmp_path), display="none")
        rows = {(r.get("question") or r.get("problem")): r for r in task.load_test()}
        for sample in log.samples:
            graded = task.graded_sample(rows[str(sample.input)], KNOBS)
            shown = [{"role": m.role, "content": m.text} for m in sample.messages if m.role != "assistant"]
            assert _messages(graded) == shown == task.prompt_messages(str(sample.input))
            assert (str(graded.id), graded.target) == (str(sample.id), sample.target)
    bfcl = get_task("bfcl", data_dir)
    canonical = {str(s.id): s for s in bfcl.inspect_task().dataset}
    for row in bfcl.load_test()[:5]:
        graded, theirs = bfcl.graded_sample(row, KNOBS), canonical[str(row["id"])]
        assert _messages(graded) == [{"role": m.role, "content": m.text} for m in theirs.input]
        assert (graded.target, graded.metadata) == (theirs.target, theirs.metadata)


def test_grade_bfcl_and_humaneval(data_dir):
    bfcl = get_task("bfcl", data_dir)
    row = bfcl.load_train()[0]
    call = bfcl.training_example(row, KNOBS).response
    assert grade(bfcl, row, KNOBS, call)
    assert not grade(bfcl, row, KNOBS, call.replace('"arguments": {', '"arguments": {"extra": 1, '))
    assert not grade(bfcl, row, KNOBS, "I would call the function.")

    humaneval = get_task("humaneval", data_dir)
    mbpp = {r["task_id"]: r for r in humaneval.load_train()}
    sample = humaneval.graded_sample(mbpp[602], KNOBS)
    assert sample.metadata["entry_point"] == "first_repeated_char"
    assert sample.metadata["test"] == "\n".join(mbpp[602]["test_list"])
    reference = humaneval.training_example(mbpp[602], KNOBS).response
    assert grade(humaneval, mbpp[602], KNOBS, reference)
    assert not grade(humaneval, mbpp[602], KNOBS, reference.replace("return 'None'", "return None"))
    with pytest.raises(InputError, match="plain literals"):  # its tests pass Pair objects
        humaneval.graded_sample(mbpp[601], KNOBS)


def test_which_tasks_grade_their_training_rows():
    grading = {name: task_class(name)(None, judge="x").grades_training_rows
               for name in ("gsm8k", "aime2025", "gpqa_diamond", "bfcl", "humaneval", "arenahard", "healthbench")}
    assert grading == {"gsm8k": True, "aime2025": True, "gpqa_diamond": True, "bfcl": True, "humaneval": True,
                       "arenahard": False, "healthbench": False}
    with pytest.raises(NotImplementedError):
        task_class("arenahard")(None, judge="x").graded_sample({}, KNOBS)
