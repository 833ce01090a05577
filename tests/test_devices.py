"""GPU memory caps: which device index a cap lands on (pure, CPU) and the real cap (GPU tier)."""

from __future__ import annotations

import pytest
import torch

from raysweep.devices import (GPUMemoryCapExceeded, batch_size_for_memory, cap_gpu_memory,
                              cuda_index, explain_out_of_memory)


def test_cuda_index_resolves_bare_numbered_and_integer_devices():
    # A bare `cuda` is the current device: index 0 inside a Ray actor (one visible GPU).
    assert cuda_index("cuda", current=0) == 0
    assert cuda_index("cuda", current=2) == 2
    assert cuda_index(torch.device("cuda"), current=1) == 1
    assert cuda_index("cuda:1", current=0) == 1
    assert cuda_index(torch.device("cuda", 3), current=0) == 3
    assert cuda_index(2, current=0) == 2


def test_cuda_index_refuses_a_cpu_device():
    with pytest.raises(ValueError, match="needs a CUDA device, got 'cpu'"):
        cuda_index("cpu", current=0)


def test_a_fraction_outside_zero_one_is_refused_before_touching_cuda():
    with pytest.raises(ValueError, match=r"must be in \(0, 1\], got 1.5"):
        cap_gpu_memory(1.5, "cuda")


def test_errors_other_than_out_of_memory_pass_through():
    with pytest.raises(KeyError):
        with explain_out_of_memory("test", "no fix needed"):
            raise KeyError("x")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", 0])
def test_cap_applies_to_the_named_gpu_and_oom_names_it(device):
    try:
        assert cap_gpu_memory(0.25, device) == 0
        assert torch.cuda.get_per_process_memory_fraction(0) == pytest.approx(0.25)
        total = torch.cuda.get_device_properties(0).total_memory
        with pytest.raises(GPUMemoryCapExceeded,
                           match=r"^test actor: .* cap of 25% of GPU 0 \(\d+\.\d GiB\); lower it"):
            with explain_out_of_memory("test actor", "lower it"):
                torch.empty(int(0.5 * total), dtype=torch.uint8, device=device)
        # Under the cap allocation still works.
        torch.empty(int(0.1 * total), dtype=torch.uint8, device=device)
    finally:
        cap_gpu_memory(1.0, 0)
        torch.cuda.empty_cache()


def test_batch_size_for_memory_is_the_largest_power_of_two_that_fits():
    gib = 2**30
    assert batch_size_for_memory(10 * gib, 0.44 * gib) == 16   # 22 fit: 16 is the power below
    assert batch_size_for_memory(100 * gib, 0.44 * gib) == 32  # capped at `largest`
    assert batch_size_for_memory(100 * gib, 0.44 * gib, largest=8) == 8
    assert batch_size_for_memory(0.1 * gib, 0.44 * gib) == 1   # one image even if it may not fit
    assert batch_size_for_memory(0, 0.44 * gib) == 1
