"""Generator actors: each loads one generator once and serves image requests for the whole sweep.

The synthesis service (`service.py`) starts them, spreads chunks of pools over them and stops
them once no trial can ask for more images.

Ray's `num_gpus=0.25` is bookkeeping only, so an actor on a GPU also caps its own CUDA memory
to its share (`raysweep.devices`); running out under the cap fails with a message naming the
cap, and the request is retried. An actor given no GPU (`gpus_per_actor: 0`) sees no CUDA device at all. An actor
that dies is restarted by Ray and reloads the stored weights (it never retrains), a bounded
number of times; its in-flight request is retried, and since image i depends only on
(label, seed), the retry returns the same images. When the restarts run out, or a wait passes
its timeout, the request fails with `SynthesisFailed`, one line saying what happened.
"""

from __future__ import annotations

import os
import time

import numpy as np
import ray

from raysweep.data import load_splits
from raysweep.devices import GPUMemoryCapExceeded, cap_gpu_memory, explain_out_of_memory
from raysweep.store import PoolImages, SyntheticStore
from raysweep.synthesis.fitting import ensure_generator
from raysweep.synthesis.identity import Mask, Variation
from raysweep.synthesis.img2img import Varier

# An actor killed (OOM, node lost) is restarted and its request retried this many times.
ACTOR_RESTARTS = 3
# The longest wait for the small bookkeeping calls between actors.
CALL_TIMEOUT_S = 120.0


@ray.remote(num_cpus=0)
class LoadLedger:
    """Counts generator loads: each actor process records one when its constructor finishes,
    so a restarted actor counts again. (Ray's own restart counts sit behind its state API,
    which needs the dashboard; sweeps run without one.)"""

    def __init__(self):
        self.pids: list[int] = []

    def loaded(self, pid: int) -> None:
        self.pids.append(pid)

    def count(self) -> int:
        return len(self.pids)


@ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
class GeneratorActor:
    """Holds one trained generator in memory; `generate` turns (labels, seeds) into images."""

    def __init__(self, name: str, options: dict, dataset: dict, fit_seed: int,
                 store_root: str, threads: int, gpu_fraction: float, masking=None,
                 ledger: str | None = None):
        import torch

        torch.set_num_threads(max(1, threads))
        # The training split is loaded here, not shipped: the same call every trial makes.
        train = load_splits(dataset).train
        # Ray set CUDA_VISIBLE_DEVICES to this actor's GPU: `cuda` is it, whatever its number.
        if gpu_fraction > 0 and torch.cuda.is_available():
            cap_gpu_memory(min(1.0, gpu_fraction), "cuda")
        self.name = name
        start = time.perf_counter()
        self.trained = ensure_generator(SyntheticStore(store_root), name, options, train, fit_seed,
                                        log=lambda message: print(f"[raysweep] {message}",
                                                                  flush=True))
        # An inpainting source also loads the reference classifier, once, for its masks.
        self.repainter = None
        if masking is not None:
            from raysweep.synthesis.inpaint import Repainter

            self.repainter = Repainter(self.trained.generator, train, masking,
                                       SyntheticStore(store_root))
        self.train = train
        self.load_seconds = time.perf_counter() - start
        self.loaded_at = time.time()  # when its generator was ready (trained or loaded)
        self.images_generated = 0
        self.generate_seconds = 0.0
        if ledger is not None:  # its name: a handle among restartable arguments would warn
            ray.get(ray.get_actor(ledger).loaded.remote(os.getpid()), timeout=CALL_TIMEOUT_S)

    @ray.method(max_task_retries=ACTOR_RESTARTS, retry_exceptions=[GPUMemoryCapExceeded])
    def vary(self, sources: np.ndarray, targets: np.ndarray, seeds: np.ndarray,
             variation: Variation, gamma: float) -> PoolImages:
        """Pool images (with provenance and soft-label weights) varying these training images
        toward `targets` at the variation's strength."""
        start = time.perf_counter()
        with explain_out_of_memory(f"generator actor {self.name} (pid {os.getpid()})",
                                   "lower the generator's batch_size or raise "
                                   "synthesis.gpus_per_actor"):
            images = Varier(self.trained.generator, self.train).vary(sources, targets, seeds,
                                                                     variation, gamma)
        self.generate_seconds += time.perf_counter() - start
        self.images_generated += len(seeds)
        return images

    def busy(self) -> dict:
        """Seconds spent fitting (or loading) and generating: what the actor held its
        resources for."""
        return {"load_seconds": self.load_seconds, "generate_seconds": self.generate_seconds,
                "images_generated": self.images_generated}

    def info(self) -> dict:
        """Who this actor is and what it has done (a restart shows as a new pid)."""
        import torch

        return {"pid": os.getpid(), "generator_key": self.trained.key,
                "weights_sha256": self.trained.weights_sha256, "reused": self.trained.reused,
                "fit_seconds": self.trained.fit_seconds, "load_seconds": self.load_seconds,
                "loaded_at": self.loaded_at, "images_generated": self.images_generated,
                "generate_seconds": self.generate_seconds,
                "inpaint_config": getattr(self.trained.generator, "inpaint_config", dict)(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "cuda_devices": torch.cuda.device_count()}

    # Out of memory under the cap is retried (a neighbour's peak may have passed); image i
    # depends only on (label, seed), so a retry returns the same images.
    @ray.method(max_task_retries=ACTOR_RESTARTS, retry_exceptions=[GPUMemoryCapExceeded])
    def generate(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        with explain_out_of_memory(f"generator actor {self.name} (pid {os.getpid()})",
                                   "lower the generator's batch_size or raise "
                                   "synthesis.gpus_per_actor"):
            images = self.trained.generator.sample(labels, seeds)
        self.generate_seconds += time.perf_counter() - start
        self.images_generated += len(labels)
        return images

    @ray.method(max_task_retries=ACTOR_RESTARTS, retry_exceptions=[GPUMemoryCapExceeded])
    def repaint(self, sources: np.ndarray, seeds: np.ndarray, mask: Mask) -> PoolImages:
        """Pool images (with provenance) repainting these training images' masks."""
        start = time.perf_counter()
        with explain_out_of_memory(f"generator actor {self.name} (pid {os.getpid()})",
                                   "lower the generator's batch_size or raise "
                                   "synthesis.gpus_per_actor"):
            images = self.repainter.repaint(sources, seeds, mask)
        self.generate_seconds += time.perf_counter() - start
        self.images_generated += len(seeds)
        return images
