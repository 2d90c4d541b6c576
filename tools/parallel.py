"""How a model is spread over the GPUs there are: the training recipe that fits (full fine-tuning, DeepSpeed ZeRO-2,
ZeRO-3, ZeRO-3 with CPU offload, or LoRA) with the largest micro-batch, and vLLM's data or tensor parallelism for
evaluation. Pure functions of the model's shape and the hardware, so they can be checked anywhere.

The memory model, per GPU, for LlamaFactory's bf16 mixed precision (trainable weights kept in fp32):

- model state: 16 bytes per trainable parameter (fp32 weights 4, gradients 4, Adam moments 8), divided over the GPUs
  as ZeRO shards it; a frozen (LoRA) base costs 2 bytes per parameter;
- the loss's logits: rows × tokens × vocabulary × 4 bytes, about twice over (the logits and their gradient);
- activations, with gradient checkpointing (LlamaFactory's default): rows × tokens × hidden × layers × 2 bytes;
- a fixed overhead for the CUDA context and the allocator.

Calibrated on two measured peaks (an H100, bf16 full SFT, batch 16, cutoff 512, SmolLM2's 49k vocabulary): 6.7 GiB
for the SmolLM2-135M shape and 25.5 GiB for the Qwen3-1.7B shape (1.51 B parameters with that vocabulary). The
estimates are 6.0 and 27.1 GiB: within 20%, on the safe side for the larger model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

GIB = 1 << 30
STATE_BYTES = 16
FROZEN_BYTES = 2
LOGIT_COPIES = 2
ACTIVATION_BYTES = 2
OVERHEAD_GIB = 0.75
HEADROOM = 0.9
"""Plan to use at most this share of a GPU's memory."""
LORA_RANK = 8
DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"


@dataclass(frozen=True)
class Shape:
    """What the memory model needs to know of a decoder-only transformer (from its config.json)."""

    params: int
    hidden: int
    layers: int
    vocab: int
    intermediate: int

    @classmethod
    def from_config(cls, config: dict) -> Shape:
        h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        heads = config["num_attention_heads"]
        kv = config.get("num_key_value_heads", heads)
        head_dim = config.get("head_dim") or h // heads
        inter = config["intermediate_size"]
        attention = h * heads * head_dim * 2 + h * kv * head_dim * 2
        per_layer = attention + 3 * h * inter + 2 * h
        embed = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
        return cls(params=layers * per_layer + embed + h, hidden=h, layers=layers, vocab=vocab, intermediate=inter)

    @classmethod
    def from_model(cls, model_dir: str | Path) -> Shape:
        return cls.from_config(json.loads((Path(model_dir) / "config.json").read_text()))

    @property
    def lora_params(self) -> int:
        """Trainable parameters of rank-8 LoRA on every linear layer (the `all` target)."""
        per_layer = 4 * 2 * self.hidden + 3 * (self.hidden + self.intermediate)
        return LORA_RANK * per_layer * self.layers


Method = Literal["full", "lora"]


@dataclass(frozen=True)
class Recipe:
    method: Method
    zero: Literal[0, 2, 3]
    offload: bool
    micro_batch: int
    grad_accum: int
    gib: float
    """Estimated peak memory per GPU."""
    why: str

    @property
    def deepspeed(self) -> Path | None:
        """The DeepSpeed config that ships with the project for this recipe (None: plain DDP or one GPU)."""
        if not self.zero:
            return None
        return DEEPSPEED_DIR / f"ds_z{self.zero}{'_offload' if self.offload else ''}.json"


def estimate_gib(shape: Shape, *, method: Method, zero: int, offload: bool, micro_batch: int, cutoff: int,
                 gpus: int, pairwise: bool = False) -> float:
    """Peak GPU memory of one training step, per GPU. `pairwise` (DPO): every row is two sequences, and full
    fine-tuning keeps a frozen reference copy of the model (LoRA's reference is the model with its adapters off)."""
    if method == "lora":
        state = shape.params * FROZEN_BYTES + shape.lora_params * STATE_BYTES
    elif zero == 3:
        state = shape.params * (4 if offload else STATE_BYTES) / gpus  # offload keeps the shards' states on CPU
    elif zero == 2:
        state = shape.params * (4 + (STATE_BYTES - 4) / gpus)  # weights replicated; gradients and Adam sharded
    else:
        state = shape.params * STATE_BYTES
    if pairwise and method == "full":
        state += shape.params * FROZEN_BYTES / (gpus if zero == 3 else 1)
    tokens = micro_batch * cutoff * (2 if pairwise else 1)
    logits = tokens * shape.vocab * 4 * LOGIT_COPIES
    activations = tokens * shape.hidden * shape.layers * ACTIVATION_BYTES
    return (state + logits + activations) / GIB + OVERHEAD_GIB


def _options(method: Method, gpus: int) -> list[tuple[Method, int, bool]]:
    """Recipes from the cheapest in memory use of the GPU's time to the most frugal in memory."""
    if method == "lora":
        return [("lora", 0, False)]
    sharded = [("full", 2, False), ("full", 3, False)] if gpus > 1 else []
    return [("full", 0, False), *sharded, ("full", 3, True), ("lora", 0, False)]


def _recipe(shape: Shape, option: tuple[Method, int, bool], *, batch: int, cutoff: int, gpus: int, gpu_gib: float,
            micro: int, why: str, pairwise: bool = False) -> Recipe:
    m, zero, offload = option
    gib = estimate_gib(shape, method=m, zero=zero, offload=offload, micro_batch=micro, cutoff=cutoff, gpus=gpus,
                       pairwise=pairwise)
    return Recipe(method=m, zero=zero, offload=offload, micro_batch=micro,
                  grad_accum=max(1, math.ceil(batch / (micro * gpus))), gib=round(gib, 2), why=why)


def choose_recipe(shape: Shape, *, batch: int, cutoff: int, gpus: int, gpu_gib: float,
                  method: Method = "full", start: int = 0, pairwise: bool = False) -> Recipe:
    """The first recipe that fits (full fine-tuning plain, with ZeRO-2, with ZeRO-3 when there are several GPUs,
    ZeRO-3 with CPU offload, then LoRA; or LoRA when asked for), with the largest power-of-two micro-batch:
    gradient accumulation makes up the requested batch. `ValueError` when nothing fits even one row."""
    budget = gpu_gib * HEADROOM
    per_gpu = max(1, math.ceil(batch / gpus))
    options = _options(method, gpus)
    tried = [_name(*o) for o in options[:start]]
    for option in options[start:]:
        micro = 1 << int(math.log2(per_gpu))
        while micro >= 1:
            gib = estimate_gib(shape, method=option[0], zero=option[1], offload=option[2], micro_batch=micro,
                               cutoff=cutoff, gpus=gpus, pairwise=pairwise)
            if gib <= budget:
                why = (f"{_name(*option)} fits: about {gib:.1f} GiB of {gpu_gib:.0f} GiB per GPU with micro-batch "
                       f"{micro} ({shape.params / 1e9:.2f} B parameters, cutoff {cutoff}, {gpus} GPU(s))"
                       + (f"; not {', '.join(tried)}" if tried else ""))
                return _recipe(shape, option, batch=batch, cutoff=cutoff, gpus=gpus, gpu_gib=gpu_gib, micro=micro,
                               why=why, pairwise=pairwise)
            micro //= 2
        tried.append(_name(*option))
    raise ValueError(f"no recipe fits {gpu_gib:.0f} GiB per GPU for {shape.params / 1e9:.2f} B parameters at "
                     f"cutoff {cutoff} (tried {', '.join(tried)})")


def next_recipe(shape: Shape, recipe: Recipe, *, batch: int, cutoff: int, gpus: int, gpu_gib: float,
                method: Method = "full", pairwise: bool = False) -> Recipe | None:
    """One step down after an out-of-memory: half the micro-batch, or, at 1, the next recipe (None: none left)."""
    if recipe.micro_batch > 1:
        micro = recipe.micro_batch // 2
        return _recipe(shape, (recipe.method, recipe.zero, recipe.offload), batch=batch, cutoff=cutoff, gpus=gpus,
                       gpu_gib=gpu_gib, micro=micro, why=f"{recipe.why}; out of memory, so micro-batch {micro}",
                       pairwise=pairwise)
    options = _options(method, gpus)
    here = options.index((recipe.method, recipe.zero, recipe.offload))
    if here + 1 >= len(options):
        return None
    try:
        return choose_recipe(shape, batch=batch, cutoff=cutoff, gpus=gpus, gpu_gib=gpu_gib, method=method,
                             start=here + 1, pairwise=pairwise)
    except ValueError:  # the estimate says nothing fits: try the next one at one row anyway
        option = options[here + 1]
        return _recipe(shape, option, batch=batch, cutoff=cutoff, gpus=gpus, gpu_gib=gpu_gib, micro=1,
                       why=f"{_name(*option)} at micro-batch 1, after {_name(*options[here])} ran out of memory",
                       pairwise=pairwise)


def vllm_parallelism(shape: Shape, *, gpus: int, gpu_gib: float, utilization: float) -> dict[str, int]:
    """One replica per GPU when the weights (bf16, with room for the KV cache) fit on one, else tensor parallelism
    over the largest power of two of GPUs it needs."""
    need = shape.params * 2 * 1.3 / GIB
    if gpus <= 1:
        return {}
    if need <= gpu_gib * utilization:
        return {"data_parallel_size": gpus}
    tp = 1
    while tp < gpus and need / tp > gpu_gib * utilization:
        tp *= 2
    return {"tensor_parallel_size": min(tp, 1 << int(math.log2(gpus)))}


def _name(method: str, zero: int, offload: bool) -> str:
    if method == "lora":
        return "LoRA"
    return "full" + (f" + ZeRO-{zero}" if zero else "") + (" + CPU offload" if offload else "")
