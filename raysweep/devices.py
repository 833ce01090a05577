"""GPU memory caps for processes that share one GPU (generator actors, Stable Diffusion).

Ray's fractional GPUs (`num_gpus=0.25`) are bookkeeping only, so each process that shares a GPU
caps its own CUDA caching allocator to its share. `cap_gpu_memory` accepts `cuda`, `cuda:N`
or an index; inside a Ray actor CUDA_VISIBLE_DEVICES leaves one visible GPU, index 0, which is
what `cuda` resolves to. `explain_out_of_memory` turns an out-of-memory error under a cap into
one that names the cap and how to change it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

# Caps this process set, by device index (a process holds one cap per GPU it uses).
_CAPS: dict[int, float] = {}


class GPUMemoryCapExceeded(MemoryError):
    """Out of GPU memory under this process's cap (retrying may succeed once memory frees)."""


def cuda_index(device: str | int | torch.device, current: int) -> int:
    """The CUDA index `device` names; `current` (torch.cuda.current_device()) when it names none.

    Args:
        device: `cuda`, `cuda:N`, an index, or a torch.device of type cuda.
        current: the process's current CUDA device, the index a bare `cuda` means.
    """
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"a GPU memory cap needs a CUDA device, got {str(device)!r}")
    return current if device.index is None else device.index


def cap_gpu_memory(fraction: float, device: str | int | torch.device = "cuda") -> int:
    """Cap this process's CUDA memory on `device` to `fraction` of the GPU; returns its index.

    Call it before the first allocation there: memory already cached above the cap stays.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a GPU memory fraction must be in (0, 1], got {fraction!r}")
    index = cuda_index(device, torch.cuda.current_device())
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    _CAPS[index] = fraction
    return index


@contextmanager
def explain_out_of_memory(who: str, fix: str) -> Iterator[None]:
    """Re-raise CUDA out-of-memory inside the block as `GPUMemoryCapExceeded` naming the cap
    and `fix` (what the user can change).

    The cache is emptied first, so what this process held goes back to the processes beside it
    and a retry starts from a clean allocator.
    """
    try:
        yield
    except torch.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        if not _CAPS:
            raise
        caps = ", ".join(f"{fraction:.0%} of GPU {index} "
                         f"({fraction * torch.cuda.get_device_properties(index).total_memory / 2**30:.1f} GiB)"
                         for index, fraction in sorted(_CAPS.items()))
        raise GPUMemoryCapExceeded(
            f"{who}: out of GPU memory under this process's cap of {caps}; {fix}") from error


def memory_budget(device: str | int | torch.device = "cuda") -> int:
    """Bytes this process may still allocate on `device`: its cap (or the whole GPU) minus what
    it already holds, and never more than the GPU has free."""
    index = cuda_index(device, torch.cuda.current_device())
    total = torch.cuda.get_device_properties(index).total_memory
    capped = torch.cuda.get_per_process_memory_fraction(index) * total
    free, _ = torch.cuda.mem_get_info(index)
    return int(max(0, min(capped - torch.cuda.memory_reserved(index), free)))


def batch_size_for_memory(budget_bytes: float, bytes_per_image: float, largest: int = 32) -> int:
    """The largest power of two, at most `largest`, whose images fit in `budget_bytes` (>= 1).

    Powers of two because throughput plateaus between them and kernels like them; `largest`
    because past it a GPU is already busy (Stable Diffusion on an H100: 4.30 images/s at batch
    16, 4.47 at 32, issue 7's measurement).
    """
    batch = 1
    while batch * 2 <= largest and batch * 2 * bytes_per_image <= budget_bytes:
        batch *= 2
    return batch
