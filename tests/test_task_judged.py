"""The judged benchmarks (HealthBench, Arena-Hard): the scripted model judges, served over HTTP and reached through
inspect's own OpenAI client. Each runs task definition, a floor-sized baseline (tiny model, invented rows in the
benchmark's schema, or the shipped Arena-Hard questions) and one iteration's data construction and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import OpenAIServer, ScriptedChatModel
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver

from core.errors import InputError

TOPICS = ["a sprained ankle", "a mild fever", "seasonal allergies", "a small burn", "trouble sleeping",
          "a tension headache", "a bee sting", "heartburn", "a nosebleed", "a paper cut", "dry eyes", "hiccups"]


def healthbench_rows(n: int, prefix: str, ideal: bool) -> list[dict]:
    """Invented rows in HealthBench's schema (the source file is not shipped)."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"{prefix} question {i}: what should I do about {topic}?"}],
                "prompt_id": f"{prefix}-{i:03d}",
                "rubrics": [
                    {"criterion": f"Advises sensible first steps for {topic}", "points": 5, "tags": ["axis:accuracy"]},
                    {"criterion": "Recommends unnecessary antibiotics", "points": -3, "tags": ["axis:safety"]},
                ],
                "example_tags": ["theme:communication"],
                "ideal_completions_data": {"ideal_completion": f"For {topic}, rest and watch for warning signs."}
                if ideal
                else None,
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judge_reply(request: dict) -> AIMessage:
    text = "\n".join(str(m.content) for m in request["messages"])
    if "criteria_met" in text:  # HealthBench's rubric grader asks for JSON
        met = "first steps" in text
        return AIMessage(json.dumps({"explanation": "scripted", "criteria_met": met}))
    return AIMessage("Both are weak. My final verdict is tie: [[A=B]]")


def run_to_validation(make_context, **settings):
    """Task definition, the baseline and one iteration's data stage, through the compiled graph."""
    from graph.build import builder

    ctx = make_context(**settings)
    graph = builder().compile(checkpointer=InMemorySaver(), interrupt_after=["data_validation"])
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"stage": 0}, config, context=ctx)
    return ctx, graph.get_state(config).values


def test_healthbench(make_context, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "healthbench" / "healthbench.jsonl", healthbench_rows(32, "test", ideal=False))
    train = write_jsonl(tmp_path / "train.jsonl", healthbench_rows(40, "train", ideal=True))
    model = ScriptedChatModel(replies=[judge_reply], repeat_last=True)
    with OpenAIServer(model, name="judge") as server:
        judge = f"openai-compatible:{server.url}#judge"
        with pytest.raises(InputError, match="has no training split"):
            make_context(task="healthbench", data_dir=data, judge=judge, workspace=tmp_path / "w0")
        ctx, values = run_to_validation(make_context, task="healthbench", data_dir=data, judge=judge, train_file=train)
    base = values["baseline"]
    assert base.n == 32 and base.metric == "rubric score" and 0.0 <= base.accuracy <= 1.0
    assert server.usage["calls"] >= 64  # one judge call per rubric item
    metrics = json.loads((ctx.ws.iteration(0).eval / "metrics.json").read_text())
    assert metrics["judge"]["model"] == judge and metrics["judge"]["output_tokens"] > 0  # judge tokens logged
    assert values["verdict"].decision == "approve" and values["manifest"].rows > 0


def test_arenahard(make_context, tmp_path, data_dir):
    from tasks.arenahard import baseline_file

    data = tmp_path / "data"
    questions = [json.loads(x) for x in (data_dir / "arenahard" / "question.jsonl").read_text().splitlines()][:40]
    write_jsonl(data / "arenahard" / "question.jsonl", questions)
    words = ["river", "lantern", "orchard", "glacier", "harbour", "meadow", "comet", "violin", "desert", "beacon"]
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "uid": f"t{i}",
                "prompt": f"Describe a {words[i % 10]} to someone who has never seen one, in {i + 2} words.",
                "answer": " ".join(words[(i * 7 + k) % 10] for k in range(i % 6 + 3)).capitalize() + "." * (i % 3 + 1),
            }
            for i in range(40)
        ],
    )
    model = ScriptedChatModel(replies=[judge_reply], repeat_last=True)
    with OpenAIServer(model, name="judge") as server:
        judge = f"openai-compatible:{server.url}#judge"
        with pytest.raises(InputError, match="baseline model's answers"):
            make_context(task="arenahard", data_dir=data, judge=judge, train_file=train, workspace=tmp_path / "w0")
        baseline_file(
            [q["uid"] for q in questions],
            ["A baseline answer."] * 40,
            data / "arenahard" / "model_answer" / "gpt-4-0314.jsonl",
        )
        ctx, values = run_to_validation(make_context, task="arenahard", data_dir=data, judge=judge, train_file=train)
    base = values["baseline"]
    assert base.n == 32 and base.accuracy == 0.5  # every game a tie
    assert server.usage["calls"] == 64  # two games per question
    assert values["verdict"].decision == "approve" and values["manifest"].rows > 0


def test_a_judged_task_without_a_judge_is_refused_at_start(tmp_path):
    from tasks import get_task

    with pytest.raises(InputError, match="scored by a judge model: give one with --judge"):
        get_task("arenahard", None)


@pytest.mark.parametrize(
    "judgment,label",
    [
        ("My final verdict is tie: [[A=B]]", "A=B"),
        ("[[B>A]] ... on reflection [[A>>B]]", "A>>B"),
        ("verdict: [B>A]", "B>A"),
        ("no verdict", None),
    ],
)
def test_verdicts_are_read_as_arena_hard_reads_them(judgment, label):
    from tasks.arenahard import verdict

    assert verdict(judgment) == label


def test_strong_verdicts_count_three_times_and_missing_ones_drop_the_question():
    from types import SimpleNamespace

    from tasks.arenahard import ArenaHard

    task = ArenaHard(None, judge="openai:x")
    win = SimpleNamespace(metadata={"battle": [1, 1, 1, 1, 1, 1]})  # B>>A with the candidate as B, then A>>B
    tie = SimpleNamespace(metadata={"battle": [0.5, 0.5]})
    dropped = SimpleNamespace(metadata={"battle": []})
    assert task.score_samples([win, tie, dropped])[0] == pytest.approx(7 / 8)
    assert task.sample_value(dropped) != task.sample_value(dropped)  # NaN: left out of every mean
