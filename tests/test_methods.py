"""Self-distillation, DPO and generated rows, end to end through the compiled graph with tiny models.

A random-init model never answers a question right, so the sampled methods start from a "parrot": the tiny model
taught, for four training questions, both the reference solution and the same solution with a wrong final number.
Sampled at temperature 1 it answers each of them sometimes right and sometimes wrong, as a real student does, and
the data it yields can be checked against what it said. The sampled methods run on AIME 2025, whose prompt is
short (GSM8K's ten-shot prompt makes teaching the parrot take minutes), with training rows in GSM8K's schema.
Generated rows come from the scripted chat model served as an OpenAI-compatible endpoint on 127.0.0.1 (the one
fake: an LLM backbone).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from fakes import OpenAIServer, ScriptedChatModel, call, scripted
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver

from core.errors import GuardViolation
from core.handoffs import DataKnobs, Stage
from core.specs import generator_problem

QUESTIONS = 4


def _rows(data_dir: Path, split: str, n: int, skip: int = 0) -> list[dict]:
    lines = (data_dir / "gsm8k" / f"{split}.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines[skip:skip + n]]


def _wrong(response: str) -> str:
    head, _, number = response.rpartition("ANSWER: ")
    return f"{head}ANSWER: {int(float(number)) + 1}"


@pytest.fixture(scope="module")
def parrot(tmp_path_factory, tiny_model_dir, data_dir):
    """(model dir, training file): the tiny model taught a right and a wrong answer to each of 4 train questions,
    on the prompt the evaluation shows (few-shot system message included)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks import get_task

    out = tmp_path_factory.mktemp("parrot")
    # Short solutions: the parrot learns them in a few hundred small steps.
    rows = [{"question": r["question"], "answer": "Work it out step by step.\n#### " + r["answer"].split("####")[-1]}
            for r in _rows(data_dir, "train", QUESTIONS, skip=100)]
    train_file = out / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("aime2025", data_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pairs = []
    for row in rows:
        ex = task.training_example(row, DataKnobs(with_system=True))
        prompt = tok.apply_chat_template(ex.messages, tokenize=False, add_generation_prompt=True)
        for response in (ex.response, _wrong(ex.response)):
            ids = tok(prompt + response + "<|im_end|>", add_special_tokens=False, return_tensors="pt").input_ids
            pairs.append((ids, len(tok(prompt, add_special_tokens=False).input_ids)))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        optimizer.zero_grad()
        for ids, start in pairs:
            logits = model(input_ids=ids).logits[:, start - 1:-1]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, start:].reshape(-1))
            (loss / len(pairs)).backward()
        optimizer.step()
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return out / "model", train_file


def _planner(method: str, train_file: Path, **data):
    knobs = {"sources": [f"local:{train_file}"], "max_rows": 16, "questions": QUESTIONS, "samples": 4,
             "sample_temperature": 1.0, **data}
    return call("handoff", problems=["wrong final numbers (30 of 30)"], objective=f"try {method}",
                changes=[f"{method} on the model's own answers"], change_kind="both",
                success_criterion="accuracy above the base model's", method=method, data=knobs,
                train={"start_from": "base", "learning_rate": 1e-5, "epochs": 1.0, "batch_size": 4,
                       "cutoff_len": 512, "finetuning_type": "full"})


def _one_iteration(make_context, model_dir, planner_reply):
    """Task definition, the baseline and one AIME 2025 iteration (plan → data → train → eval → log), through the
    graph."""
    from dataclasses import replace

    from graph.build import builder, checkpoint_serde

    ctx = make_context(task="aime2025", base_model=str(model_dir), max_iterations=1, final_eval="none")
    planner, model = scripted("planner", None, planner_reply)
    ctx = replace(ctx, policies={**ctx.policies, "planner": planner})
    planner.attach(ctx)
    graph = builder().compile(checkpointer=InMemorySaver(serde=checkpoint_serde()),
                                interrupt_before=["final_evaluation"])
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"stage": Stage.TASK_DEFINITION}, config, context=ctx)
    assert not model.replies  # the scripted plan was used
    return ctx, graph.get_state(config).values


def _attempts(data_dir: Path) -> dict[str, list[dict]]:
    """The model's sampled answers, by question, as sampling recorded them."""
    lines = (data_dir / "sampling" / "sampled.jsonl").read_text().splitlines()
    return {q["source_id"]: q["attempts"] for q in map(json.loads, lines)}


def test_self_distillation_trains_on_the_models_own_right_answers(make_context, parrot):
    model_dir, train_file = parrot
    ctx, state = _one_iteration(make_context, model_dir, _planner("self_distill", train_file))

    manifest = state["manifest"]
    assert manifest.method == "self_distill" and not manifest.pairwise
    s = manifest.sampling
    assert s.questions == QUESTIONS and s.samples == 4 and 0 < s.pass_rate < 1
    from tools.data import load_records

    records, meta = load_records(Path(manifest.dataset_dir))
    attempts = _attempts(Path(manifest.dataset_dir))
    right = {q: {a["text"] for a in xs if a["correct"]} for q, xs in attempts.items()}
    assert len(records) == sum(len(v) for v in right.values()) >= 1  # every distinct right answer, once
    for record, m in zip(records, meta, strict=True):
        question = m["source_id"].split("#")[0]
        assert record["output"].removesuffix("<|im_end|>") in right[question]
    assert sum(s.kept_per_question.values()) == QUESTIONS

    assert state["verdict"].decision == "approve" and state["train_result"] is not None
    record = state["history"][-1]
    assert record.status == "completed" and record.method == "self_distill"
    assert {"U4", "D4", "U6"} <= set(record.strategies)
    entry = json.loads(ctx.ws.iteration(1).log_entry_json.read_text())
    assert f"pass rate {s.pass_rate:.3f}" in entry["training_data"] and entry["method"].startswith("self_distill")


def test_dpo_pairs_are_the_models_own_right_and_wrong_answers_to_one_question(make_context, parrot):
    model_dir, train_file = parrot
    ctx, state = _one_iteration(make_context, model_dir, _planner("dpo", train_file))

    manifest = state["manifest"]
    assert manifest.method == "dpo" and manifest.pairwise and manifest.rows >= 1
    info = json.loads((Path(manifest.dataset_dir) / "dataset_info.json").read_text())["train"]
    assert info["ranking"] is True
    from tools.data import load_records

    records, meta = load_records(Path(manifest.dataset_dir))
    attempts = _attempts(Path(manifest.dataset_dir))
    own_pairs = 0
    for record, m in zip(records, meta, strict=True):
        said = attempts[m["source_id"]]
        rejected = record["rejected"].removesuffix("<|im_end|>")
        chosen = record["chosen"].removesuffix("<|im_end|>")
        assert rejected in {a["text"] for a in said if not a["correct"]}  # always its own wrong answer
        if m["kind"] == "self-sample pair":
            assert chosen in {a["text"] for a in said if a["correct"]}  # its own right answer to the same question
            own_pairs += 1
    assert own_pairs >= 1

    train = state["train_result"]
    assert train is not None and "stage: dpo" in Path(train.config_path).read_text()
    record = state["history"][-1]
    assert record.status == "completed" and record.method == "dpo" and "U3" in record.strategies
    assert state["eval_report"].n == 30  # AIME 2025's whole test set


def test_generated_rows_are_decontaminated_and_carry_their_provenance(make_context, small_data_dir, data_dir):
    """A paraphrase that is really a test question is caught by the 13-gram index and left out; the others are
    added, each with the generator, the prompt file and the row it came from in the manifest."""
    from conftest import DataStage, plan_of

    test_question = _rows(data_dir, "test", 1, skip=5)[0]["question"]
    calls = []

    def reply(request):
        calls.append(request)
        prompt = str(request["messages"][-1].content)
        question = prompt.split("Question:\n", 1)[1].split("\n\nIts solution", 1)[0]
        new = test_question if len(calls) == 1 else f"Here is the same problem, reworded. {question}"
        return AIMessage(f"QUESTION:\n{new}\nSOLUTION:\nsame as before\n\nANSWER: 1")

    with OpenAIServer(ScriptedChatModel(replies=[reply], repeat_last=True), name="para") as server:
        ctx = make_context(data_dir=small_data_dir, generator=f"openai-compatible:{server.url}#para")
        stage = DataStage(ctx, plan_of(max_rows=6, augment="paraphrase"))
        verdict, _ = stage.step()

    manifest = stage.values["manifest"]
    assert len(calls) == 3  # half the rows are the source's, each with room for its paraphrase
    gen = manifest.generation[0]
    assert gen.asked == 3 and gen.kept == 2 and gen.dropped == {"shares a 13-gram with the test set": 1}
    assert manifest.rows == 5 and manifest.mixture == {"benchmark_train": 3, "generated": 2}
    assert verdict.decision == "approve", verdict.reasons
    assert {r["generator"] for r in manifest.generated_rows} == {f"openai-compatible:{server.url}#para"}
    assert {r["template"] for r in manifest.generated_rows} == {"prompts/generate/paraphrase.md"}
    assert all(r["source_rows"] and r["id"].startswith("gen-paraphrase-") for r in manifest.generated_rows)


def test_a_generator_on_a_remote_host_is_refused_before_any_request(make_context, small_data_dir, monkeypatch,
                                                                    tiny_model_dir):
    from graph.run import main
    from tools.generate import Student, generate

    spec = "openai-compatible:http://203.0.113.7:8000/v1#big-model"
    monkeypatch.setattr(os, "environ", os.environ.copy())  # main() quiets libraries by env: not for later tests
    assert main(["--task", "gsm8k", "--data-dir", str(small_data_dir), "--generator", spec, "--workspace",
                 str(small_data_dir.parent / "ws")]) == 2
    assert not (small_data_dir.parent / "ws" / "run_settings.json").exists()

    def no_connection(*args, **kwargs):
        raise AssertionError("a request was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_connection)
    ctx = make_context(data_dir=small_data_dir)
    row = _rows(small_data_dir, "train", 1)[0]
    items = [(row, ctx.task.training_example(row, DataKnobs()))]
    with pytest.raises(GuardViolation, match="remote model API"):
        generate(ctx.task, spec, "paraphrase", items, DataKnobs(), small_data_dir.parent / "gen",
                 student=Student(str(tiny_model_dir), "hf", False))
    assert not (small_data_dir.parent / "gen").exists()
    monkeypatch.setenv("POSTTRAIN_LOCAL_HOSTS", "203.0.113.7")  # a host the user declares local passes
    assert generator_problem(spec) is None
