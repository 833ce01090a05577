"""What the generators raysweep trains itself (ddpm, dcgan, vae) share: `fit`'s frame (the
checks, a `TrainingLog`, the record of what it saw), their runtime options, and a state made
of their weights and that record."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from raysweep.generators.base import BaseGenerator, register_to_config


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Use `num_threads` intra-op threads inside the block only, then restore the old count;
    None or 0 leaves torch's setting alone."""
    if not num_threads:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)



class TrainingLog:
    """A training run's losses: smoothed (a 0.9 / 0.1 moving average), checked to stay finite,
    and reported to `progress` ten times a run."""

    def __init__(self, name: str, steps: int, progress: Callable[[str], None] | None,
                 fix: str) -> None:
        """`fix` ends the error raised when a loss stops being finite (e.g. "lower lr")."""
        self.name, self.steps, self.progress, self.fix = name, steps, progress, fix
        self.report_every = max(1, steps // 10)
        self.started = time.perf_counter()
        self.smoothed: dict[str, float] = {}

    def record(self, step: int, **losses: float) -> None:
        for key, value in losses.items():
            if not math.isfinite(value):
                raise FloatingPointError(f"{self.name}.fit: {key} became {value} at step {step}; "
                                         f"{self.fix}")
            last = self.smoothed.get(key)
            self.smoothed[key] = value if last is None else 0.9 * last + 0.1 * value
        if self.progress is not None and (step % self.report_every == 0 or step == self.steps):
            shown = " ".join(f"{key} {value:.4g}" for key, value in self.smoothed.items())
            self.progress(f"{self.name} step {step}/{self.steps} {shown} "
                          f"({self.seconds():.0f}s)")

    def seconds(self) -> float:
        return time.perf_counter() - self.started


class TrainedGenerator(BaseGenerator):
    """A generator raysweep trains itself (ddpm, dcgan, vae).

    `fit` checks the data, trains (`_train`, at the square resolution `_model_size_for` picks)
    with a `TrainingLog`, and records what sampling needs to know of the data; the state `save`
    writes is the weights (`_save_weights` / `_load_weights`) and that record. A subclass's
    constructor takes the options below as `**runtime` and passes them on.

    Args:
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ... Not part of `config()`.
        num_threads: torch intra-op threads while fitting/sampling (restored afterwards); None
            leaves torch's setting alone. Not part of `config()`. On a CPU that other processes
            keep busy, 1 is much faster than 2 for these small models (measured with the ddpm:
            a training step 0.18 s with 1 thread, up to 5 s with 2 at load average 2 on 2 cores).
        sample_batch_size: images per network call when sampling. Not part of `config()`.
    """

    runtime_options = frozenset({"device", "num_threads", "sample_batch_size"})
    # How to make a diverging run converge: the end of the error that says it diverged.
    divergence_hint: ClassVar[str] = "lower lr"
    model_size: int | None = None  # the square resolution the model works at
    train_seconds: float | None = None
    last_losses: dict[str, float] | None = None  # smoothed, at the end of fit()

    @register_to_config
    def __init__(self, *, device: str = "auto", num_threads: int | None = None,
                 sample_batch_size: int = 256) -> None:
        self._require_positive_ints(sample_batch_size=sample_batch_size)

    def fit(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
            progress: Callable[[str], None] | None = None) -> None:
        """Train from scratch on `images` (uint8 (N, H, W, C)) with `labels` (int, < num_classes).

        The same data, config and seed give the same weights on the same device and thread
        count; torch's global random state is left alone.
        """
        images, labels = self._check_fit_inputs(images, labels, num_classes)
        height, width, channels = (int(s) for s in images.shape[1:])
        size = self._model_size_for(height, width)
        log = TrainingLog(self.name, self.steps, progress, self.divergence_hint)
        with torch_threads(self.num_threads):
            self._train(images, labels, num_classes, seed=seed, size=size, log=log)
        self.data_shape = (height, width, channels)
        self.num_classes = int(num_classes)
        self.model_size = int(size)
        self.train_seconds = log.seconds()
        self.last_losses = dict(log.smoothed)

    def _model_size_for(self, height: int, width: int) -> int:
        """The square resolution the model trains and samples at, for data of this size."""
        raise NotImplementedError

    def _train(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
               size: int, log: TrainingLog) -> None:
        """Build the network from `seed`, train it (recording each step's losses in `log`) and
        keep it, in eval mode, on this generator's device."""
        raise NotImplementedError

    def _save_state(self, directory: str) -> dict[str, Any]:
        self._save_weights(directory)
        return {"data_shape": list(self.data_shape), "num_classes": self.num_classes,
                "model_size": self.model_size, "train_seconds": self.train_seconds}

    def _load_state(self, directory: str, state: dict[str, Any]) -> None:
        self.data_shape = tuple(int(s) for s in state["data_shape"])
        self.num_classes = int(state["num_classes"])
        self.model_size = int(state["model_size"])
        self.train_seconds = state.get("train_seconds")
        self._load_weights(directory)

    def _save_weights(self, directory: str) -> None:
        raise NotImplementedError

    def _load_weights(self, directory: str) -> None:
        """Build the network for `data_shape`, `num_classes` and `model_size`, then load it."""
        raise NotImplementedError
