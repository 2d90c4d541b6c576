"""Benchmark: decontaminate N training rows against the 1,319 GSM8K test items; print time and peak memory.

    python bench/decontam.py                      # N = 10k and 100k
    python bench/decontam.py --sizes 10000,100000,1000000

Rows beyond GSM8K's 7,473 train rows are light augmentations of them (numbers substituted, the question's
sentences before its last one shuffled), reshuffled every pass, with about one row in a thousand replaced by a
verbatim test question so the hit path is exercised too. Rows are streamed, as a reader of a large JSONL file
would stream them.

Each size runs in a child process of its own, so the peak RSS (ru_maxrss, a high-water mark) belongs to that
size alone. It is the whole process: interpreter, inspect-evals (loaded to compute the test ids), index and
batches. Generation is timed in a separate pass and subtracted, so `decontam_s` is the decontamination itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from tasks.gsm8k import GSM8K  # noqa: E402
from tools.decontam import DEFAULT_N, NgramIndex, find_contamination  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("POSTTRAIN_GRAPH_DATA", REPO.parent / "shared" / "data"))
NUMBER = re.compile(r"\d+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated row counts (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="holds gsm8k/{train,test}.jsonl")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="gram length in words (default: %(default)s)")
    parser.add_argument("--inject-rate", type=float, default=0.001, help="share of rows that are test questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args()

    if args.child is not None:
        print(json.dumps(measure(args.child, args.data_dir, args.n, args.inject_rate, args.seed)))
        return
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    print(f"cpus={os.cpu_count()} load_avg_1m={os.getloadavg()[0]:.2f} (timings are noisy on a shared machine)")
    print(f"{'rows':>9} {'build_s':>8} {'gen_s':>7} {'decontam_s':>10} {'rows/s':>9} {'hit_rows':>8} "
          f"{'injected':>8} {'rss_setup_MB':>12} {'rss_peak_MB':>11}")
    for size in sizes:
        result = run_child(size, args)
        print(f"{size:>9} {result['build_s']:>8.2f} {result['gen_s']:>7.2f} {result['decontam_s']:>10.2f} "
              f"{size / result['decontam_s']:>9.0f} {result['hit_rows']:>8} {result['injected']:>8} "
              f"{result['rss_setup_mb']:>12.0f} {result['rss_peak_mb']:>11.0f}", flush=True)


def run_child(size: int, args: argparse.Namespace) -> dict[str, float]:
    """Measure one size in a fresh process (ru_maxrss cannot be reset within one)."""
    command = [sys.executable, __file__, "--child", str(size), "--data-dir", str(args.data_dir), "--n", str(args.n),
               "--inject-rate", str(args.inject_rate), "--seed", str(args.seed)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(size: int, data_dir: Path, n: int, inject_rate: float, seed: int) -> dict[str, float]:
    """Build the index, time generation alone, then time generation + decontamination; return the figures."""
    task = GSM8K(data_dir)
    test_texts = task.test_texts()
    questions = [r["question"] for r in task.load_test()]
    train = [(r["question"], r["answer"]) for r in task.load_train()]

    start = time.perf_counter()
    index = NgramIndex.build(test_texts, n=n)
    build_s = time.perf_counter() - start
    rss_setup_mb = _peak_rss_mb()

    start = time.perf_counter()
    injected = sum(1 for row_id, _ in rows(size, train, questions, inject_rate, seed) if row_id.endswith("*"))
    gen_s = time.perf_counter() - start

    start = time.perf_counter()
    found = find_contamination(rows(size, train, questions, inject_rate, seed), index)
    total_s = time.perf_counter() - start

    missed = injected - sum(1 for row_id in found if row_id.endswith("*"))
    if missed:
        raise RuntimeError(f"{missed} injected test questions were not found")
    return dict(build_s=build_s, gen_s=gen_s, decontam_s=total_s - gen_s, hit_rows=len(found), injected=injected,
                rss_setup_mb=rss_setup_mb, rss_peak_mb=_peak_rss_mb())


def rows(size: int, train: list[tuple[str, str]], test_questions: list[str], inject_rate: float,
         seed: int) -> Iterator[tuple[str, str]]:
    """`size` (row id, question + answer) rows: train as is, then augmented passes; injected ids end with "*"."""
    rng = random.Random(seed)
    order = list(range(len(train)))
    for k in range(size):
        if k % len(train) == 0:
            rng.shuffle(order)
        question, answer = train[order[k % len(train)]]
        if k >= len(train):  # later passes: variants, not copies
            question, answer = augment(question, answer, rng)
        if rng.random() < inject_rate:
            yield f"row-{k}*", f"{rng.choice(test_questions)}\n{answer}"
        else:
            yield f"row-{k}", f"{question}\n{answer}"


def augment(question: str, answer: str, rng: random.Random) -> tuple[str, str]:
    """Substitute every number (consistently across question and answer) and shuffle the leading sentences."""
    mapping: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        return mapping.setdefault(match.group(), str(rng.randint(2, 999)))

    question, answer = NUMBER.sub(substitute, question), NUMBER.sub(substitute, answer)
    sentences = SENTENCE_END.split(question)
    if len(sentences) > 2:  # keep the final sentence (the question proper) last
        head = sentences[:-1]
        rng.shuffle(head)
        question = " ".join([*head, sentences[-1]])
    return question, answer


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


if __name__ == "__main__":
    main()
