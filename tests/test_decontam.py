"""Decontamination (13-gram index against the GSM8K test set) and dedup (exact and MinHash near-duplicates)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from tasks.gsm8k import GSM8K
from tools.decontam import NgramIndex, find_contamination, normalize, tokens
from tools.dedup import exact_duplicates, near_duplicates

N_TRAIN = 5000
N_INJECTED = 20
# Real GSM8K train already shares 13-grams with test: 11 of its 7,473 rows hit 10 test items, 4 of them through
# the question, the rest through stock solution phrasing and calculator notes. The first 5,000 rows hit these.
NATURAL_OVERLAP = {
    20: ["gsm8k_689011d2"],  # question: "... bought stamps at the post office. Some of the stamps had a snowflake ..."
    406: ["gsm8k_6409dfe2"],  # question: "the first movie is 1 hour and 30 minutes long while the second ..."
    699: ["gsm8k_45bdfdbc"],  # answer: "... number of students in each grade to find the total number of students"
    1314: ["gsm8k_3379ef4b"],  # question: "... miles in 3 hours. At the same rate, how many additional hours would ..."
    2049: ["gsm8k_0d9f5ee0"],  # answer: "he spends walking 15 miles / 3 miles/hour = <<15/3=5>>5 hours"
}


@pytest.fixture(scope="module")
def gsm8k(data_dir: Path) -> GSM8K:
    return GSM8K(data_dir)


@pytest.fixture(scope="module")
def test_texts(gsm8k: GSM8K) -> dict[str, str]:
    return gsm8k.test_texts()


@pytest.fixture(scope="module")
def test_questions(gsm8k: GSM8K, test_texts: dict[str, str]) -> dict[str, str]:
    """Test id -> question alone (the id is inspect-evals' stable hash of the question)."""
    from inspect_evals.utils import create_stable_id

    questions = {create_stable_id(r["question"], prefix="gsm8k"): r["question"] for r in gsm8k.load_test()}
    assert questions.keys() == test_texts.keys()
    return questions


@pytest.fixture(scope="module")
def index(test_texts: dict[str, str]) -> NgramIndex:
    return NgramIndex.build(test_texts)


@pytest.fixture(scope="module")
def train_rows(gsm8k: GSM8K) -> list[tuple[str, str]]:
    """The first 5,000 GSM8K train rows as (row id, question + answer)."""
    return [(f"train-{i}", f"{r['question']}\n{r['answer']}") for i, r in enumerate(gsm8k.load_train()[:N_TRAIN])]


def test_normalisation_ignores_case_unicode_forms_and_punctuation() -> None:
    assert tokens("Janet’s ducks lay １６ eggs; she sells them at $2.50!") == \
        ["janet", "s", "ducks", "lay", "16", "eggs", "she", "sells", "them", "at", "2", "50"]
    assert normalize("JANET'S  ducks\n<<16-3-4=9>>9") == "janet s ducks 16 3 4 9 9"
    assert tokens("the 5th ﬁle") == ["the", "5", "th", "file"]  # digits stay tokens, split from letters


def test_clean_baseline_is_the_natural_overlap(train_rows: list[tuple[str, str]], index: NgramIndex) -> None:
    assert len(index.test_ids) == 1319
    found = find_contamination(train_rows, index)
    assert found == {f"train-{i}": ids for i, ids in NATURAL_OVERLAP.items()}


def test_twenty_copied_test_questions_are_found_and_nothing_else(
    train_rows: list[tuple[str, str]], index: NgramIndex, test_questions: dict[str, str]
) -> None:
    rng = random.Random(0)
    natural_ids = {t for ids in NATURAL_OVERLAP.values() for t in ids}
    injected_ids = rng.sample(sorted(test_questions.keys() - natural_ids), N_INJECTED)
    clean_rows = [i for i in range(N_TRAIN) if i not in NATURAL_OVERLAP]
    # Copy each test question word for word over a clean train row's question, keeping that row's answer.
    targets = dict(zip(rng.sample(clean_rows, N_INJECTED), injected_ids, strict=True))
    mixed = list(train_rows)
    for row, test_id in targets.items():
        answer = train_rows[row][1].split("\n", 1)[1]
        mixed[row] = (f"train-{row}", f"{test_questions[test_id]}\n{answer}")

    found = find_contamination(iter(mixed), index)  # a one-shot iterator, as a streamed file would be

    expected = {f"train-{i}": ids for i, ids in NATURAL_OVERLAP.items()}
    expected |= {f"train-{row}": [test_id] for row, test_id in targets.items()}
    assert found == expected
    assert {t for ids in found.values() for t in ids} == natural_ids | set(injected_ids)


def test_reworded_numbers_caught_while_a_13_gram_survives(index: NgramIndex, test_questions: dict[str, str]) -> None:
    # "She eats three for breakfast every morning and bakes muffins for her friends every day with four" is
    # 16 number-free words, so changing the digits leaves three intact 13-grams.
    janet = next(t for t, q in test_questions.items() if q.startswith("Janet’s ducks lay 16 eggs"))
    reworded = test_questions[janet].replace("16", "21").replace("$2", "$3")
    assert reworded != test_questions[janet]
    assert index.hits(reworded) == {janet}

    # And across the test set: wherever >= 13 number-free tokens run together, shifted numbers are still caught.
    survivors = [t for t, q in test_questions.items() if _longest_number_free_run(q) >= 13]
    assert len(survivors) > 500
    assert all(t in index.hits(_shift_numbers(test_questions[t])) for t in survivors)


def test_reworded_numbers_missed_once_every_13_gram_is_broken(index: NgramIndex,
                                                              test_questions: dict[str, str]) -> None:
    # Questions whose every 13-token window holds a number: shifting all numbers breaks every window.
    dense = [t for t, q in test_questions.items() if _longest_number_free_run(q) < 13]
    assert len(dense) > 50
    for test_id in dense:
        question = test_questions[test_id]
        assert test_id in index.hits(question)
        assert index.hits(_shift_numbers(question)) == set(), test_id


def test_window_boundary_is_exactly_n_tokens() -> None:
    words = [f"w{c}" for c in "abcdefghijklmnopqrstuvwxyz"]  # "wa", "wb", ...: letters only, one token each
    index = NgramIndex.build({"t": " ".join(words)}, n=13)
    assert index.hits("x y " + " ".join(words[5:18]) + " z") == {"t"}  # 13 shared tokens in a row
    assert index.hits("x y " + " ".join(words[5:17]) + " z") == set()  # 12
    broken = words[:26]
    broken[12] = "CHANGED"  # every 13-window of the first 25 tokens (starts 0..12) covers position 12
    assert index.hits(" ".join(broken[:25])) == set()
    assert index.hits(" ".join(broken)) == {"t"}  # tokens 13..25 are 13 intact ones


def test_short_texts_are_one_whole_gram() -> None:
    index = NgramIndex.build({"short": "What is two plus two?", "long": " ".join(f"w{c}" for c in "abcdefghijklmnop")})
    assert index.short_lengths == (5,)
    assert index.hits("what IS two plus two") == {"short"}
    assert index.hits("Q: what is two plus two? Show your work.") == {"short"}  # contains the short test item
    assert index.hits("is two plus two") == set()  # a part of a short test item is not it
    assert index.hits("wc wd we") == set()  # a short training text inside a long test item: ordinary wording
    assert index.hits("") == set() and index.hits("?!") == set()


def test_empty_test_set_matches_nothing() -> None:
    index = NgramIndex.build({})
    assert len(index) == 0
    assert find_contamination([("a", "anything at all " * 10)], index) == {}


def test_exact_duplicates_compare_normalised_text() -> None:
    texts = ["Tom has 3 apples.", "tom HAS 3 apples", "Tom has 4 apples.", "Tom  has 3, apples!", "other"]
    assert exact_duplicates(texts) == [1, 3]
    assert exact_duplicates([]) == []


def test_near_duplicates_drop_small_edits_and_keep_different_texts() -> None:
    rng = random.Random(0)
    vocab = ["apple", "river", "train", "seven", "garden", "market", "coin", "basket", "teacher", "window",
             "bicycle", "orange", "paper", "dollar", "minute", "school", "farmer", "cookie", "bottle", "candle"]
    base = [rng.choice(vocab) for _ in range(150)]
    one_word_changed = base[:70] + ["elephant"] + base[71:]
    recased = " ".join(base).upper() + "!"
    unrelated = [rng.choice(vocab) for _ in range(150)]
    half = base[:75] + unrelated[75:]
    texts = [" ".join(base), " ".join(one_word_changed), recased, " ".join(unrelated), " ".join(half)]
    assert near_duplicates(texts) == [1, 2]
    assert near_duplicates(texts[::-1]) == [3, 4]  # the first of a group is kept, whichever it is
    assert near_duplicates(["tiny", "Tiny!", "other"]) == [1]  # texts shorter than a shingle: one whole shingle
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError):
            near_duplicates(texts, threshold=bad)


def _shift_numbers(text: str) -> str:
    """Every number in `text` replaced by another (n + 7): same token count, every number token changed."""
    return re.sub(r"\d+", lambda m: str(int(m.group()) + 7), text)


def _longest_number_free_run(text: str) -> int:
    runs = re.split(r"\d+", " ".join(tokens(text)))
    return max(len(run.split()) for run in runs)
