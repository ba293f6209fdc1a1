"""The GPU behind a cloud size, and which configured models are likely to fit in its memory.

A documented table: the clouds' size lists give a GPU count at most, not its memory. A model's size is
estimated from the parameter count in its tag (``llama3.2:1b`` -> 1 billion) at Ollama's default
4-bit quantisation, about 0.6 GB per billion parameters with the runtime's overhead; ``ollastack status``
shows the real sizes once the host has the models.

Example::

    gpu_of("Standard_NC4as_T4_v3")                    # ("NVIDIA T4", 16)
    fits(["llama3.2:1b", "llama3.1:70b"], 16)         # [("llama3.2:1b", 0.6, True), ("llama3.1:70b", 42.0, False)]
"""

from __future__ import annotations

import re

# size -> (GPU, GPU memory in GB in all): the vendors' size pages (Azure NCasT4_v3, NCv3, NC_A100_v4,
# NVadsA10_v5 with its GPU fractions; Alibaba gn6i = T4, gn7i = A10, gn6v = V100).
GPU_SIZES = {
    "Standard_NC4as_T4_v3": ("NVIDIA T4", 16), "Standard_NC8as_T4_v3": ("NVIDIA T4", 16),
    "Standard_NC16as_T4_v3": ("NVIDIA T4", 16), "Standard_NC64as_T4_v3": ("4x NVIDIA T4", 64),
    "Standard_NC6s_v3": ("NVIDIA V100", 16), "Standard_NC12s_v3": ("2x NVIDIA V100", 32),
    "Standard_NC24s_v3": ("4x NVIDIA V100", 64),
    "Standard_NC24ads_A100_v4": ("NVIDIA A100 80GB", 80), "Standard_NC48ads_A100_v4": ("2x NVIDIA A100 80GB", 160),
    "Standard_NC96ads_A100_v4": ("4x NVIDIA A100 80GB", 320),
    "Standard_NV6ads_A10_v5": ("1/6 NVIDIA A10", 4), "Standard_NV12ads_A10_v5": ("1/3 NVIDIA A10", 8),
    "Standard_NV18ads_A10_v5": ("1/2 NVIDIA A10", 12), "Standard_NV36ads_A10_v5": ("NVIDIA A10", 24),
    "Standard_NV72ads_A10_v5": ("2x NVIDIA A10", 48),
    "ecs.gn6i-c4g1.xlarge": ("NVIDIA T4", 16), "ecs.gn6i-c8g1.2xlarge": ("NVIDIA T4", 16),
    "ecs.gn6i-c16g1.4xlarge": ("NVIDIA T4", 16),
    "ecs.gn7i-c8g1.2xlarge": ("NVIDIA A10", 24), "ecs.gn7i-c16g1.4xlarge": ("NVIDIA A10", 24),
    "ecs.gn7i-c32g1.8xlarge": ("NVIDIA A10", 24),
    "ecs.gn6v-c8g1.2xlarge": ("NVIDIA V100", 16),
}
GB_PER_BILLION = 0.6
PARAMETERS_RE = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)b(?![a-z])", re.IGNORECASE)


def gpu_of(size: str) -> tuple[str, int] | None:
    """(GPU, memory in GB) of a cloud size in the table, else None."""
    return GPU_SIZES.get(size)


def estimated_gb(model: str) -> float | None:
    """A model's likely size in GB from the parameter count in its tag (``qwen2.5:7b`` -> 4.2); None if no count."""
    tag = model.rsplit(":", 1)[-1] if ":" in model else ""
    found = PARAMETERS_RE.search(tag)
    return round(float(found.group(1)) * GB_PER_BILLION, 1) if found else None


def fits(models: list[str], memory_gb: int) -> list[tuple[str, float | None, bool | None]]:
    """(model, estimated GB, likely fits) for each model; None where the tag gives no parameter count."""
    result = []
    for model in models:
        size = estimated_gb(model)
        result.append((model, size, None if size is None else size <= memory_gb * 0.9))
    return result


def lines(size: str, models: list[str]) -> list[str]:
    """The plan's GPU lines for ``size``: the GPU, then each model and whether it likely fits."""
    gpu = gpu_of(size)
    if gpu is None:
        return [f"{size}: not in ollastack's GPU table (ollastack/gpus.py); `ollastack status` shows the GPU once it runs"]
    name, memory = gpu
    out = [f"{size}: {name}, {memory} GB GPU memory"]
    for model, estimate, ok in fits(models, memory):
        out.append(f"{model}: size unknown from its tag" if estimate is None else
                   f"{model}: about {estimate} GB at 4-bit, {'likely fits' if ok else 'does NOT fit: runs partly on the CPU'}")
    return out
