"""Shared fixtures. Real data comes from ../shared/data; models are the embedded SmolLM2 or tiny random-init
models built from its config and tokenizer (fast, and enough to exercise every real component)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("INSPECT_DISPLAY", "none")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("POSTTRAIN_GRAPH_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.fail(f"real GSM8K data not found under {SHARED_DATA} (set POSTTRAIN_GRAPH_DATA)")
    return SHARED_DATA


@pytest.fixture
def small_data_dir(data_dir: Path, tmp_path: Path) -> Path:
    """A GSM8K slice (the first 40 test rows, the first 300 train rows): a floor of 32, so evaluations are short."""
    d = tmp_path / "small-data" / "gsm8k"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text("".join((data_dir / "gsm8k" / "test.jsonl").read_text().splitlines(True)[:40]))
    (d / "train.jsonl").write_text("".join((data_dir / "gsm8k" / "train.jsonl").read_text().splitlines(True)[:300]))
    return d.parent


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from GGUF once (cached across sessions)."""
    from tools.model import convert_embedded

    return convert_embedded()


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-init model with SmolLM2's tokenizer and chat template: trains and generates in seconds."""
    return make_tiny_model(embedded_model_dir, tmp_path_factory.mktemp("tiny-model"))


def make_tiny_model(source: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(source)
    config.update(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, architectures=["LlamaForCausalLM"]))
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


@pytest.fixture
def make_context(tmp_path: Path, data_dir: Path, tiny_model_dir: Path):
    """A real run context (task, workspace, memory, playbook policies) around the tiny model."""
    from core.settings import RunSettings
    from graph.run import build_context

    def make(**overrides):
        fields = dict(workspace=tmp_path / "ws", data_dir=data_dir, base_model=str(tiny_model_dir), device="cpu")
        settings = RunSettings(**{"task": "gsm8k", **fields, **overrides})
        settings.save()
        return build_context(settings)

    return make


def eval_report_stub(accuracy: float = 0.0):
    """A baseline report as state (no evaluation ran): enough for the nodes after the planner."""
    from core.handoffs import EvalReport

    return EvalReport(model_dir="base", model_sha256="-", accuracy=accuracy, stderr=0.0, n=66, limit=66,
                      canonical=False, max_tokens=256, provider="hf", log_path="-", metrics_path="-",
                      summary_path="-", failure_modes=[], runtime_s=1.0)


def plan_of(**data):
    """An iteration-1 plan with these data knobs (training knobs left at their defaults, cutoff 1024)."""
    from core.handoffs import DataKnobs, IterationPlan, Stage, TrainKnobs

    return IterationPlan(iteration=1, stage=Stage.LOCAL, problems=["test"], objective="test", changes=["test"],
                         change_kind="data", success_criterion="test", data=DataKnobs(**data),
                         train=TrainKnobs(cutoff_len=1024))


class DataStage:
    """Drives the compiled graph from a given plan, pausing after every validation."""

    def __init__(self, ctx, plan):
        from langgraph.checkpoint.memory import InMemorySaver

        from core.handoffs import Best, Stage
        from graph.build import builder, checkpoint_serde

        self.ctx = ctx
        self.graph = builder().compile(checkpointer=InMemorySaver(serde=checkpoint_serde()),
                                       interrupt_after=["data_validation"])
        self.config = {"configurable": {"thread_id": "t"}}
        self.graph.update_state(self.config, {
            "stage": Stage.LOCAL, "iteration": 1, "plan": plan, "baseline": eval_report_stub(), "data_rounds": 0,
            "spent_s": 0.0, "best": Best(model_dir=ctx.base_model, score=0.0, iteration=0)}, as_node="planner")

    def step(self):
        self.graph.invoke(None, self.config, context=self.ctx)
        snap = self.graph.get_state(self.config)
        return snap.values["verdict"], snap.next

    @property
    def values(self) -> dict:
        return self.graph.get_state(self.config).values
