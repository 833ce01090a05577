"""What each trial runs: the typed `TrialPlan` a trial resolves from its config.

A searcher such as Optuna picks configs only at run time, so the sweep ships a `TrialPlanner`
(small, picklable) whose `trial_plan(config)` resolves the config the same way wherever it
runs: in the trial, and in the tracking callback on the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raysweep.synthesis.kinds import split_augmentation, trial_source
from raysweep.training.compose import synthetic_count

@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial needs, resolved from its config once.

    Args:
        swept: the trial's config (the swept axes, as the search algorithm chose them).
        backbone: timm model name.
        online_augmentation: the online part of `augmentation` (`none` when empty).
        synthetic_ratio: synthetic images per real training image.
        filter_threshold: the reference classifier's confidence in its own label that a
            synthetic image needs to be kept (0 = keep all).
        seed: the trial's seed (model init, batches, augmentation, its pool).
        generator: the synthesis source whose pool it reads (`ddpm`, `inpaint-ddpm`, `blur`,
            ...; see `SynthesisSource.name`); None when it reads no synthetic image.
        service: the Ray actor name of the synthesis service for `generator`.
        mask_fraction, mask_region: the mask of its inpainted pool; None for a
            class-conditional source or no synthetic images.
        n_synthetic: how many pool images it reads (a prefix of the pool).
        device: the device it asks for (`cuda` when the sweep gives trials GPUs).
        gpu_memory_fraction: the trial's share of its GPU's memory when it shares the GPU
            (`tune.gpus_per_trial` below 1), else None.
        dataset, training: the spec's blocks, as dicts.
        synthesis_mode: `add`, `replace` or `only`.
        store_root: the synthetic store (local path or s3:// URI).
        metric, mode: what early stopping and Tune watch.
        checkpoint_interval_s: the least time between two resumable checkpoints.
    """

    swept: dict[str, Any]
    backbone: str
    online_augmentation: str
    synthetic_ratio: float
    filter_threshold: float
    seed: int
    generator: str | None
    service: str | None
    n_synthetic: int
    mask_fraction: float | None
    mask_region: str | None
    device: str
    gpu_memory_fraction: float | None
    dataset: dict
    training: dict
    synthesis_mode: str
    store_root: str
    metric: str
    mode: str
    checkpoint_interval_s: float



@dataclass(frozen=True)
class TrialPlanner:
    """Resolves a trial's config into its `TrialPlan`; the sweep-wide part is fixed here."""

    default_generator: str
    services: dict[str, str]
    n_real: int
    gpus_per_trial: float
    dataset: dict
    training: dict
    synthesis_mode: str
    store_root: str
    metric: str
    mode: str
    checkpoint_interval_s: float

    def trial_plan(self, config: dict) -> TrialPlan:
        ratio = float(config["synthetic_ratio"])
        online = split_augmentation(config["augmentation"])[1]
        n_synthetic = synthetic_count(ratio, self.synthesis_mode, self.n_real)
        source = trial_source(config["augmentation"], self.default_generator)
        generator = source.name if n_synthetic else None
        masked = bool(n_synthetic) and source.inpaint
        return TrialPlan(
            swept=dict(config), backbone=str(config["backbone"]), online_augmentation=online,
            synthetic_ratio=ratio, filter_threshold=float(config.get("filter_threshold", 0.0)),
            seed=int(config["seed"]), generator=generator,
            service=self.services.get(generator), n_synthetic=n_synthetic,
            mask_fraction=float(config["mask_fraction"]) if masked else None,
            mask_region=str(config["mask_region"]) if masked else None,
            device="cuda" if self.gpus_per_trial > 0 else "cpu",
            gpu_memory_fraction=self.gpus_per_trial if 0 < self.gpus_per_trial < 1 else None,
            dataset=self.dataset, training=self.training, synthesis_mode=self.synthesis_mode,
            store_root=self.store_root, metric=self.metric, mode=self.mode,
            checkpoint_interval_s=self.checkpoint_interval_s)



def service_name(sweep_id: str, generator: str) -> str:
    """The Ray actor name of the synthesis service that serves `generator` in this sweep."""
    return f"raysweep-synthesis-{sweep_id}-{generator}"
