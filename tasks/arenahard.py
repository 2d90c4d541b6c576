"""Arena-Hard-Auto as PostTrainBench scores it, as an inspect task (inspect-evals has none): the model answers each
question; a judge compares that answer with a baseline model's answer to the same question twice, once in each
position, with arena-hard-auto's judge prompt; the score is the candidate's win rate, strong verdicts counting
three times, and a question without both verdicts is dropped rather than lost.

PostTrainBench now judges 250 v2.0 creative-writing questions against Qwen3-1.7B's answers; the shipped data here
is v0.1 (500 questions), whose canonical baseline is gpt-4-0314. The baseline's answers are read from
`<data>/arenahard/model_answer/<baseline>.jsonl` (arena-hard-auto's format).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from tasks.base import BenchmarkTask, MaxTokens, TrainingExample, mean_and_stderr, read_jsonl
from tasks.judge import judge_model

if TYPE_CHECKING:
    from core.handoffs import DataKnobs

BASELINE = "gpt-4-0314"
"""v0.1's canonical baseline; another single file in model_answer/ is used when this one is absent."""
# arena-hard-auto's judge system prompt (lmarena/arena-hard-auto, Apache-2.0), as PostTrainBench passes it.
JUDGE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user prompt displayed below. You will be given assistant A's answer and assistant B's answer. Your job is "
    "to evaluate which assistant's answer is better.\n\nBegin your evaluation by generating your own answer to the "
    "prompt. You must provide your answers before judging any answers.\n\nWhen evaluating the assistants' answers, "
    "compare both assistants' answers with your answer. You must identify and correct any mistakes or inaccurate "
    "information.\n\nThen consider if the assistant's answers are helpful, relevant, and concise. Helpful means the "
    "answer correctly responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or "
    "more than one interpretation, it is more helpful and appropriate to ask for clarifications or more information "
    "from the user than providing an answer based on assumptions. Relevant means all parts of the response closely "
    "connect or are appropriate to what is being asked. Concise means the response is clear and not verbose or "
    "excessive.\n\nThen consider the creativity and novelty of the assistant's answers when needed. Finally, "
    "identify any missing important information in the assistants' answers that would be beneficial to include when "
    "responding to the user prompt.\n\nAfter providing your explanation, you must output only one of the following "
    "choices as your final verdict with a label:\n\n1. Assistant A is significantly better: [[A>>B]]\n2. Assistant "
    "A is slightly better: [[A>B]]\n3. Tie, relatively the same: [[A=B]]\n4. Assistant B is slightly better: "
    "[[B>A]]\n5. Assistant B is significantly better: [[B>>A]]\n\nExample output: \"My final verdict is tie: "
    "[[A=B]]\".")
GAME = ("<|User Prompt|>\n{question}\n\n<|The Start of Assistant A's Answer|>\n{a}\n<|The End of Assistant A's "
        "Answer|>\n\n<|The Start of Assistant B's Answer|>\n{b}\n<|The End of Assistant B's Answer|>")
VERDICT = (re.compile(r"\[\[([AB<>=]+)\]\]"), re.compile(r"\[([AB<>=]+)\]"))
STRONG = 3
# Assistant A's points per verdict (arena-hard-auto's score map).
POINTS = {"A>B": [1], "A>>B": [1] * STRONG, "A=B": [0.5], "B=A": [0.5], "B>A": [0], "B>>A": [0] * STRONG,
          "A<B": [0], "A<<B": [0] * STRONG, "B<A": [1], "B<<A": [1] * STRONG}


class ArenaHard(BenchmarkTask):
    name = "arenahard"
    description = ("Hard, open-ended user questions; a judge compares each answer with a baseline model's answer; "
                   "the score is the win rate against that baseline.")
    answer_line_hint = "a complete, helpful answer to the user's question"
    free_text_prompts = True
    metric = "win rate vs the baseline"
    max_tokens = MaxTokens(canonical=16384, cascade=(12288, 8192), cpu=256)
    ptb_weight = 0.098  # PostTrainBench v1.2's weight in its average
    train_cutoff = 1024
    train_source = "none of its own (Arena-Hard has no training split): give --train-file with uid, prompt, answer"
    needs_judge = True

    def load_test(self) -> list[dict[str, Any]]:
        rows = read_jsonl(self._dir() / "question.jsonl", required=("uid", "prompt"))
        random.Random(42).shuffle(rows)  # PostTrainBench's order: its development slice is the first ones
        return rows

    def baseline_answers(self) -> dict[str, str]:
        folder = self._dir() / "model_answer"
        files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
        chosen = [f for f in files if f.stem == BASELINE] or files[:1]
        if not chosen:
            raise InputError(f"arenahard judges against a baseline model's answers: put them in {folder}/"
                             f"{BASELINE}.jsonl (arena-hard-auto's model_answer format, from lmarena/arena-hard-auto)")
        return {uid: text for uid, text in map(_answer, read_jsonl(chosen[0])) if uid}

    def load_train(self) -> list[dict[str, Any]]:
        raise InputError("arenahard has no training split of its own: give --train-file FILE, a JSONL with uid, "
                         "prompt and answer fields whose prompts are not Arena-Hard questions")

    def test_row_problem(self, row: dict[str, Any]) -> str | None:
        return None if isinstance(row.get("prompt"), str) and row["prompt"].strip() else "prompt must be a string"

    def row_ok(self, row: dict[str, Any]) -> bool:
        return bool(str(row.get("prompt", "")).strip()) and bool(str(row.get("answer", "")).strip())

    def dedup_text(self, row: dict[str, Any]) -> str:
        return str(row.get("prompt", ""))

    def training_example(self, row: dict[str, Any], knobs: DataKnobs) -> TrainingExample:
        # The evaluation sends the question alone, as the one user turn.
        return TrainingExample([{"role": "user", "content": row["prompt"]}], row["answer"].strip(),
                               str(row.get("uid", "")), row["prompt"])

    def test_texts(self) -> dict[str, str]:
        return {str(r["uid"]): r["prompt"] for r in self.load_test()}

    def inspect_task(self):
        if getattr(self, "_task", None) is None:
            from inspect_ai import Task
            from inspect_ai.dataset import MemoryDataset, Sample
            from inspect_ai.solver import generate

            baseline = self.baseline_answers()
            missing = [r["uid"] for r in self.load_test() if r["uid"] not in baseline]
            if missing:
                raise InputError(f"the baseline answers lack {len(missing)} questions (first: {missing[0]})")
            samples = [Sample(id=r["uid"], input=r["prompt"], metadata={"category": r.get("category", "")})
                       for r in self.load_test()]
            judge = judge_model(self.judge, max_tokens=49152, reasoning_effort="medium")
            self._task = Task(dataset=MemoryDataset(samples, name=self.name), solver=generate(),
                              scorer=arena_judge(baseline, judge), name=self.name)
        return self._task

    def answer_ok(self, response: str) -> bool:
        return bool(response.strip())

    def sample_value(self, score: Any) -> float:
        battle = (score.metadata or {}).get("battle") or []
        return sum(battle) / len(battle) if battle else float("nan")

    def score_samples(self, scores: list[Any]) -> tuple[float, float]:
        """PostTrainBench's: the mean over every game point (a strong verdict is three points), and the standard
        error over those points."""
        points = [p for s in scores for p in (s.metadata or {}).get("battle") or []]
        return mean_and_stderr(points) if points else (0.0, 0.0)

    def _dir(self) -> Path:
        if self.data_dir is None:
            raise InputError("arenahard's questions and baseline answers come from --data-dir <dir>/arenahard/ "
                             "(question.jsonl and model_answer/<baseline>.jsonl, from lmarena/arena-hard-auto)")
        return self.data_dir / self.name


def _answer(row: dict[str, Any]) -> tuple[str, str]:
    """(uid, answer) from any of arena-hard-auto's answer formats (v0.1 choices/turns, v2.0 messages, plain)."""
    uid = str(row.get("uid") or row.get("question_id") or "")
    if "answer" in row:
        return uid, str(row["answer"])
    if row.get("choices"):
        return uid, str(row["choices"][0]["turns"][0]["content"])
    last = (row.get("messages") or [{}])[-1].get("content")
    return uid, str(last.get("answer") if isinstance(last, dict) else last or "")


def clean(answer: str, max_repeats: int = 5) -> str:
    """The candidate as the judge sees it: without a <think> block, and no line repeated more than `max_repeats`
    times in a row (PostTrainBench caps runaway repetition before judging; this is the line-level part of it)."""
    text = answer.strip()
    if text.startswith("<think>") and "</think>" in text:
        text = text.split("</think>", 1)[1].strip()
    out: list[str] = []
    for line in text.splitlines():
        if len(out) >= max_repeats and all(x == line for x in out[-max_repeats:]):
            continue
        out.append(line)
    return "\n".join(out)


def verdict(judgment: str) -> str | None:
    """The last verdict label of the first pattern that matches, as arena-hard-auto reads it."""
    for pattern in VERDICT:
        found = [m for m in pattern.findall(judgment.upper()) if m]
        if found:
            return found[-1]
    return None


def arena_judge(baseline: dict[str, str], judge: Any):
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser
    from inspect_ai.scorer import Score, mean, scorer, stderr

    @scorer(metrics=[mean(), stderr()])
    def pairwise_vs_baseline():
        async def score(state, target) -> Score:
            candidate, base = clean(state.output.completion), baseline[str(state.sample_id)]
            labels = []
            for a, b in ((base, candidate), (candidate, base)):  # game 1: the baseline is A; game 2: it is B
                out = await judge.generate([ChatMessageSystem(content=JUDGE_SYSTEM),
                                            ChatMessageUser(content=GAME.format(question=state.input_text, a=a, b=b))])
                labels.append(verdict(out.completion))
            if None in labels or any(label not in POINTS for label in labels):
                return Score(value=float("nan"), answer=candidate, metadata={"battle": [], "labels": labels})
            # The candidate's points: B's in game 1, A's in game 2.
            battle = [1 - p for p in POINTS[labels[0]]] + POINTS[labels[1]]
            return Score(value=sum(battle) / len(battle), answer=candidate,
                         metadata={"battle": battle, "labels": labels})

        return score

    return pairwise_vs_baseline()


def baseline_file(uids: list[str], answers: list[str], path: Path) -> Path:
    """Write baseline answers in arena-hard-auto's plain form (uid, answer): for tests and self-made baselines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"uid": u, "answer": a}) + "\n" for u, a in zip(uids, answers)))
    return path
