"""Which device a trial trains on, and what that device offers (mixed precision, memory).

CPU keeps full precision and today's numbers; CUDA gets bf16 autocast where the GPU supports
it (fp16 with a gradient scaler otherwise) and keeps the training set resident when it fits.
"""

from __future__ import annotations

import torch

from raysweep.devices import memory_budget

# Share of the GPU memory this process may still use (its cap, or what is free) that the
# resident training data may take: the rest is for the model,
# activations and, on a shared GPU, the generator actors beside the trial.
RESIDENT_DATA_SHARE = 0.25


def resolve_device(requested: str | torch.device) -> torch.device:
    """`requested` if this process can use it, else the CPU.

    Under Ray a trial with `gpus_per_trial > 0` sees its own GPU(s) through CUDA_VISIBLE_DEVICES,
    so `cuda` means index 0 of what Ray gave it. Logical GPUs (`ray.init(num_gpus=2)` on a
    machine without CUDA) are bookkeeping only: such a trial trains on the CPU.
    """
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `device`: bf16 on CUDA where supported, else fp16; None on CPU
    (full precision, so CPU runs reproduce earlier numbers exactly)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether `nbytes` of training data may stay resident on `device` for the whole trial."""
    if device.type != "cuda":
        return True
    return nbytes <= RESIDENT_DATA_SHARE * memory_budget(device)
