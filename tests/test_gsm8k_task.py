"""The gsm8k task is PostTrainBench's: inspect-evals' own prompt and few-shot block, and an exact signed scorer."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tasks import get_task
from tasks.base import InputError, sample_floor
from tasks.scoring import last_number, numbers_equal


def _upstream_task_offline(monkeypatch, data_dir: Path):
    """inspect-evals' gsm8k task itself, its hub reads pointed at the local files (independently of tasks/)."""
    from inspect_ai.dataset import hf_dataset

    upstream = importlib.import_module("inspect_evals.gsm8k.gsm8k")

    def local(path, split, **kw):
        assert path == "openai/gsm8k"
        kw = {k: v for k, v in kw.items() if k not in ("data_dir", "revision")}
        return hf_dataset("json", data_files=str(data_dir / "gsm8k" / f"{split}.jsonl"), split="train", **kw)

    monkeypatch.setattr(upstream, "hf_dataset", local)
    return upstream.gsm8k()


def test_rendering_matches_inspect_evals_byte_for_byte(monkeypatch, data_dir, tmp_path, embedded_model_dir):
    import inspect_ai
    from transformers import AutoTokenizer

    ours = get_task("gsm8k", data_dir)
    ours.inspect_task()  # built before the monkeypatch, through our own adapter
    log = inspect_ai.eval(_upstream_task_offline(monkeypatch, data_dir), model="mockllm/model", limit=3,
                          log_dir=str(tmp_path), display="none")[0]
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    assert len(log.samples) == 3
    for sample in log.samples:
        theirs = [{"role": m.role, "content": m.text} for m in sample.messages if m.role in ("system", "user")]
        mine = ours.prompt_messages(str(sample.input))
        assert mine == theirs
        assert (tok.apply_chat_template(mine, tokenize=False, add_generation_prompt=True)
                == tok.apply_chat_template(theirs, tokenize=False, add_generation_prompt=True))
    assert log.samples[0].id == "gsm8k_4b7e54d8" and log.samples[0].target == "18"


def test_fewshot_examples_are_the_hub_path_ones(data_dir):
    """inspect's hf_dataset shuffle (HF `Dataset.shuffle`, seed 42), not Python's random: the ids measured
    against the hub dataset."""
    from inspect_ai.dataset import hf_dataset
    from inspect_evals.gsm8k.gsm8k import record_to_sample

    shots = hf_dataset("json", data_files=str(data_dir / "gsm8k" / "train.jsonl"), split="train",
                       sample_fields=record_to_sample, shuffle=True, seed=42, limit=10)
    assert [s.id for s in shots][:3] == ["gsm8k_4058cf42", "gsm8k_f1a44773", "gsm8k_d2fa163b"]
    system = get_task("gsm8k", data_dir).prompt_messages("q")[0]
    assert system["role"] == "system" and all(str(s.input) in system["content"] for s in shots)


@pytest.mark.parametrize("completion,target,correct", [
    ("Reasoning...\nANSWER: 15", "5", False),   # match(numeric=True) would accept: "15".endswith("5")
    ("ANSWER: 5", "5", True),
    ("ANSWER: -5", "5", False),
    ("ANSWER: -5", "-5", True),
    ("ANSWER: 5", "-5", False),
    ("ANSWER: 1,000", "1000", True),
    ("ANSWER: 1000", "1,000", True),
    ("ANSWER: $1,000.", "1000", True),
    ("ANSWER: 18.0", "18", True),
    ("so 3 + 4 = 7 apples", "7", True),
    ("no number at all", "7", False),
])
def test_exact_signed_last_number(completion, target, correct):
    assert numbers_equal(last_number(completion), target) is correct


def test_scorer_in_the_task_is_exact(data_dir):
    task = get_task("gsm8k", data_dir).inspect_task()
    assert "exact_last_number" in repr(task.scorer)


def test_sample_floor():
    assert sample_floor(1319) == 66 and sample_floor(100) == 32 and sample_floor(10) == 32 and sample_floor(1000) == 50


def test_unknown_task_lists_known_ones(data_dir):
    with pytest.raises(InputError, match="known tasks: .*gsm8k"):
        get_task("nope", data_dir)


def test_malformed_jsonl_names_file_and_line(tmp_path, data_dir):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "a", "answer": "b #### 1"}\n{"question": \n')
    with pytest.raises(InputError, match=r"train.jsonl:2"):
        get_task("gsm8k", tmp_path).load_train()
