"""One trial of ratio.yaml's size through the training loop, no Ray: wall time and GPU use.

    python benchmarks/gpu_trial.py                 # resnet10t, 500 real + 1,000 synthetic,
                                                   # 10 epochs: on the CPU, then on CUDA if any
    python benchmarks/gpu_trial.py --device cuda   # one device only
    python benchmarks/gpu_trial.py --smoke-test    # test_resnet, 1 epoch, CPU; seconds

The trial is ratio.yaml's at ratio 2: mnist5k with 50 real images per class (500), 1,000
synthetic rows, resnet10t at 28x28, batch 32, 10 epochs, validation every epoch, test and TTA
at the end; `raysweep.training.train_classifier` is the same function the Tune trainable calls.
The synthetic rows are real training images shifted by one to three pixels: the time a trial
takes does not depend on what its images show, and this keeps the benchmark free of a
generator. The CPU run uses ratio.yaml's one thread per trial (`--threads` to change).

GPU utilisation is `torch.cuda.utilization()` (NVML, through the `nvidia-ml-py` package)
sampled every 50 ms while the trial runs; it prints n/a where NVML is missing.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch

from raysweep.training.compose import compose
from raysweep.data import load_splits
from raysweep.spec import DatasetSpec, TrainingSpec
from raysweep.training.device import autocast_dtype, resolve_device
from raysweep.training.loop import TrialData, train_classifier


def trial_data(smoke: bool) -> TrialData:
    dataset = DatasetSpec(name="digits" if smoke else "mnist5k",
                          per_class=8 if smoke else 50, val_fraction=0.1, test_fraction=0.2)
    splits = load_splits(dataset.model_dump())
    train = splits.train
    rng = np.random.default_rng(0)
    shifted = np.concatenate([np.roll(train.images, int(rng.integers(1, 4)), axis=(1, 2))
                              for _ in range(2)])
    images, labels, is_synthetic = compose(train.images, train.labels, shifted,
                                           np.concatenate([train.labels] * 2), 2.0, "add", 0)
    return TrialData(images, labels, is_synthetic, splits)


class UtilisationSampler:
    """Mean GPU utilisation (%) over a block, from NVML samples every 50 ms."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self.stop = device, [], threading.Event()
        try:
            torch.cuda.utilization(device)
            self.available = True
        except Exception:  # no NVML bindings or driver support: say so, do not fail
            self.available = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            self.samples.append(torch.cuda.utilization(self.device))

    def __enter__(self) -> "UtilisationSampler":
        if self.available:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.available:
            self.thread.join()

    def mean(self) -> str:
        return f"{np.mean(self.samples):.0f}%" if self.samples else "n/a"


def run(device_name: str, data: TrialData, settings: TrainingSpec, backbone: str) -> None:
    device = resolve_device(device_name)
    reports = []
    cuda = device.type == "cuda"
    sampler = UtilisationSampler(device) if cuda else None
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with sampler or threading.Lock():
        train_classifier(data, settings, backbone=backbone, augmentation="none", seed=0,
                         metric="val_balanced_accuracy", mode="max", device=device,
                         report=lambda metrics, state, final: reports.append(metrics))
        if cuda:
            torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    last = reports[-1]
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({settings.threads} thread(s))"
    extra = (f"  amp {str(autocast_dtype(device)).removeprefix('torch.')}  GPU utilisation "
             f"{sampler.mean()}  peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
             if cuda else "")
    print(f"{name}: {wall:.1f}s wall, {last['train_seconds']:.1f}s training, "
          f"{len(reports)} epochs, {last['train_images']} images/epoch, "
          f"test_accuracy {last['test_accuracy']:.3f}{extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None,
                        help="cpu or cuda; default: cpu, then cuda when present")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (1 for --smoke-test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--smoke-test", action="store_true",
                        help="digits, test_resnet, 1 epoch, on the CPU")
    args = parser.parse_args()
    devices = [args.device] if args.device else \
        ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.smoke_test else [])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("no CUDA device here; run with --device cpu or on a GPU machine")
    epochs = args.epochs or (1 if args.smoke_test else 10)
    settings = TrainingSpec(epochs=epochs, batch_size=32, lr=3e-3, weight_decay=0.05,
                            input_size=16 if args.smoke_test else 28,
                            threads=args.threads)
    backbone = "test_resnet" if args.smoke_test else "resnet10t"
    data = trial_data(args.smoke_test)
    print(f"trial: {backbone}, {int((~data.is_synthetic).sum())} real + "
          f"{int(data.is_synthetic.sum())} synthetic images, {epochs} epoch(s), batch 32, "
          f"torch {torch.__version__}")
    for device in devices:
        run(device, data, settings, backbone)


if __name__ == "__main__":
    main()
