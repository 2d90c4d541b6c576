"""Every iteration names its strategies in the seed paper's vocabulary, from what it did; the table counts them."""

from __future__ import annotations

from core.handoffs import DataKnobs, IterationPlan, Stage, TrainKnobs
from readers.strategies import render, table
from roles.strategies import strategies


def plan(it: int, method: str = "sft", **knobs) -> IterationPlan:
    data = {k: v for k, v in knobs.items() if k in DataKnobs.model_fields}
    train = {k: v for k, v in knobs.items() if k in TrainKnobs.model_fields}
    return IterationPlan(iteration=it, stage=Stage.LOCAL, problems=["no answer line (53 of 66)"], objective="o",
                         changes=["c"], change_kind="both", success_criterion="s", method=method,
                         data=DataKnobs(**data), train=TrainKnobs(**train))


def test_the_first_sft_iteration():
    assert strategies(plan(1, max_rows=160), None, None) == ["P1", "P2", "D1", "O3", "U1", "U6"]


def test_later_iterations_name_what_changed():
    last = plan(1, max_rows=160, learning_rate=5e-5)
    assert "D2" in strategies(plan(2, max_rows=320), last, None)
    annealed = strategies(plan(2, start_from="best", learning_rate=2e-5), last, None)
    assert {"U5", "U7"} <= set(annealed) and "U6" not in annealed
    assert {"U3"} <= set(strategies(plan(2, "dpo"), last, None)) and "U1" not in strategies(plan(2, "dpo"), last, None)
    assert {"U1", "U4", "D4"} <= set(strategies(plan(2, "self_distill"), last, None))
    assert {"D3", "D5", "T1", "U2"} <= set(strategies(plan(2, difficulty="harder", augment="paraphrase",
                                                           with_system=True, finetuning_type="lora"), last, None))
    assert "T2" in strategies(plan(2), last, None, own_template=True)


def test_the_table_counts_tries_and_moves():
    counts = table([(["D1", "U1"], True, True, True), (["D1", "U3"], False, True, False),
                    (["D1"], False, False, False)])
    assert counts["D1"] == {"tried": 3, "improved": 1, "up": 2, "kept": 1}
    assert list(counts) == ["D1", "U1", "U3"]
    assert "U3 DPO-style training" in render(counts)
