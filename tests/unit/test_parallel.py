"""The GPU memory estimate, the training recipe it picks and steps down from, the DeepSpeed configs that ship with
the project, the multi-GPU launch, and vLLM's parallelism: pure functions, checked without a GPU."""

from __future__ import annotations

import json

import pytest

from tools.parallel import DEEPSPEED_DIR, Shape, choose_recipe, estimate_gib, next_recipe, vllm_parallelism

SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True}
QWEN3_1_7B_SHAPE = {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 49152,
                    "tie_word_embeddings": True}


@pytest.mark.parametrize("config,measured_gib", [(SMOLLM2_135M, 6.7), (QWEN3_1_7B_SHAPE, 25.5)])
def test_the_estimate_is_within_20_percent_of_the_measured_peaks(config, measured_gib):
    """H100, bf16 full SFT, batch 16, cutoff 512 (LlamaFactory's defaults): the two calibration points."""
    gib = estimate_gib(Shape.from_config(config), method="full", zero=0, offload=False, micro_batch=16, cutoff=512,
                       gpus=1)
    assert abs(gib - measured_gib) / measured_gib <= 0.2, gib


def test_parameter_count_from_the_config():
    assert Shape.from_config(SMOLLM2_135M).params == 134_515_008  # what the converted student loads with


def test_the_recipe_steps_from_plain_to_sharded_to_offload_to_lora():
    shape = Shape.from_config(QWEN3_1_7B_SHAPE)
    assert choose_recipe(shape, batch=16, cutoff=512, gpus=1, gpu_gib=80).method == "full"
    assert choose_recipe(shape, batch=16, cutoff=512, gpus=1, gpu_gib=80).micro_batch == 16
    four = choose_recipe(shape, batch=64, cutoff=2048, gpus=4, gpu_gib=24)
    assert (four.zero, four.offload, four.micro_batch, four.grad_accum) == (2, False, 8, 2)
    assert four.deepspeed == DEEPSPEED_DIR / "ds_z2.json" and "not full" in four.why
    one_small = choose_recipe(shape, batch=16, cutoff=512, gpus=1, gpu_gib=24)
    assert (one_small.zero, one_small.offload) == (3, True)
    assert choose_recipe(shape, batch=16, cutoff=512, gpus=1, gpu_gib=6).method == "lora"
    with pytest.raises(ValueError, match="no recipe fits"):
        choose_recipe(shape, batch=16, cutoff=512, gpus=1, gpu_gib=3)


def test_an_out_of_memory_halves_the_micro_batch_then_moves_down_a_recipe():
    shape = Shape.from_config(QWEN3_1_7B_SHAPE)
    r = choose_recipe(shape, batch=16, cutoff=512, gpus=1, gpu_gib=80)
    r2 = next_recipe(shape, r, batch=16, cutoff=512, gpus=1, gpu_gib=80)
    assert (r2.method, r2.micro_batch, r2.grad_accum) == ("full", 8, 2)
    one = r2
    while one.micro_batch > 1:
        one = next_recipe(shape, one, batch=16, cutoff=512, gpus=1, gpu_gib=80)
    down = next_recipe(shape, one, batch=16, cutoff=512, gpus=1, gpu_gib=80)
    assert (down.zero, down.offload) == (3, True)
    lora = choose_recipe(shape, batch=16, cutoff=512, gpus=1, gpu_gib=80, method="lora")
    while lora.micro_batch > 1:
        lora = next_recipe(shape, lora, batch=16, cutoff=512, gpus=1, gpu_gib=80, method="lora")
    assert next_recipe(shape, lora, batch=16, cutoff=512, gpus=1, gpu_gib=80, method="lora") is None


@pytest.mark.parametrize("name,stage", [("ds_z2.json", 2), ("ds_z3.json", 3), ("ds_z3_offload.json", 3)])
def test_the_deepspeed_configs_leave_the_batch_to_the_trainer(name, stage):
    config = json.loads((DEEPSPEED_DIR / name).read_text())
    assert config["zero_optimization"]["stage"] == stage
    assert {config[k] for k in ("train_batch_size", "train_micro_batch_size_per_gpu",
                                "gradient_accumulation_steps")} == {"auto"}
    assert ("offload_optimizer" in config["zero_optimization"]) == name.endswith("offload.json")


def test_the_multi_gpu_recipe_renders_a_config_llamafactory_reads(tmp_path):
    """The rendered recipe names the DeepSpeed config, and the trainer launches torchrun through LlamaFactory."""
    from roles.trainer import _apply
    from tools.llamafactory import TrainConfig

    shape = Shape.from_config(QWEN3_1_7B_SHAPE)
    recipe = choose_recipe(shape, batch=64, cutoff=2048, gpus=4, gpu_gib=24)
    cfg = _apply(TrainConfig.for_device(on_gpu=True, model_name_or_path="m", dataset="d", dataset_dir="x",
                                        output_dir="o", cutoff_len=2048), recipe)
    rendered = cfg.to_dict()
    assert rendered["deepspeed"].endswith("ds_z2.json") and rendered["per_device_train_batch_size"] == 8
    assert rendered["gradient_accumulation_steps"] == 2 and rendered["bf16"] is True


def test_vllm_replicas_or_tensor_parallel():
    small, big = Shape.from_config(SMOLLM2_135M), Shape.from_config(QWEN3_1_7B_SHAPE)
    assert vllm_parallelism(small, gpus=1, gpu_gib=80, utilization=0.85) == {}
    assert vllm_parallelism(small, gpus=4, gpu_gib=80, utilization=0.85) == {"data_parallel_size": 4}
    assert vllm_parallelism(big, gpus=8, gpu_gib=2, utilization=0.85) == {"tensor_parallel_size": 4}


def test_dpo_counts_two_sequences_per_row_and_a_reference_copy():
    shape = Shape(params=7_000_000_000, hidden=4096, layers=32, intermediate=11008, vocab=32000)
    kw = dict(zero=0, offload=False, micro_batch=4, cutoff=2048, gpus=1)
    sft, dpo = estimate_gib(shape, method="full", **kw), estimate_gib(shape, method="full", pairwise=True, **kw)
    assert dpo - sft > shape.params * 2 / (1 << 30)  # at least the bf16 reference copy
    lora = estimate_gib(shape, method="lora", **kw), estimate_gib(shape, method="lora", pairwise=True, **kw)
    assert lora[1] > lora[0]  # two sequences per row, no reference copy
    small = choose_recipe(shape, batch=16, cutoff=2048, gpus=1, gpu_gib=80, pairwise=True)
    assert small.micro_batch <= choose_recipe(shape, batch=16, cutoff=2048, gpus=1, gpu_gib=80).micro_batch
