"""What each trial runs: the typed `TrialPlan` a trial resolves from its config.

A searcher such as Optuna picks configs only at run time, so the sweep ships a `TrialPlanner`
(small, picklable): the part every trial of the sweep shares, fixed once by the plan. Its
`trial_plan(config)` adds what one trial varies, the same way wherever it runs: in the trial,
and in the tracking callback on the driver. A `TrialPlan` holds its planner, so nothing
sweep-wide is copied field by field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raysweep.spec import DatasetSpec, TrainingSpec
from raysweep.synthesis.identity import Mask, PoolId, Variation
from raysweep.synthesis.kinds import split_augmentation, trial_source
from raysweep.training.compose import synthetic_count
from raysweep.training.reference import ReferenceOptions


@dataclass(frozen=True)
class TrialPlanner:
    """What every trial of one sweep shares.

    Args:
        default_generator: the spec's `generator.name` (augmentation values without a
            synthesis kind draw from it).
        services: synthesis source name -> the Ray actor name of its synthesis service.
        n_real: real training images (what ratios multiply).
        dataset: the spec's validated `dataset:` block.
        training: the spec's validated `training:` block (the loop reads it as it is).
        synthesis_mode: `add`, `replace` or `only`.
        store_root: the synthetic store's resolved root (local path or s3:// URI).
        metric, mode: what early stopping and Tune watch.
        checkpoint_interval_s: the least time between two resumable checkpoints.
        gpus_per_trial: `tune.gpus_per_trial`.
        reference: the sweep's reference classifier, for trials that filter; None when no
            part of the sweep uses one.
    """

    default_generator: str
    services: dict[str, str]
    n_real: int
    dataset: DatasetSpec
    training: TrainingSpec
    synthesis_mode: str
    store_root: str
    metric: str
    mode: str
    checkpoint_interval_s: float
    gpus_per_trial: float
    reference: ReferenceOptions | None

    def trial_plan(self, config: dict) -> TrialPlan:
        ratio = float(config["synthetic_ratio"])
        n_synthetic = synthetic_count(ratio, self.synthesis_mode, self.n_real)
        pool = None
        if n_synthetic:
            source = trial_source(config["augmentation"], self.default_generator)
            mask = Mask(config["mask_fraction"], config["mask_region"]) if source.inpaint \
                else None
            variation = Variation(config["strength"], config["translation"]) \
                if source.img2img else None
            pool = PoolId(source.name, config["seed"], mask, variation)
        per_class = config.get("real_per_class", self.dataset.per_class)
        return TrialPlan(
            planner=self, swept=dict(config), backbone=str(config["backbone"]),
            online_augmentation=split_augmentation(config["augmentation"])[1],
            synthetic_ratio=ratio, filter_threshold=float(config.get("filter_threshold", 0.0)),
            seed=int(config["seed"]), pool=pool, n_synthetic=n_synthetic,
            real_per_class=None if per_class is None else int(per_class))


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial needs, resolved from its config once.

    Args:
        planner: the sweep-wide part (dataset, training recipe, store, metric, ...).
        swept: the trial's config (the swept axes, as the search algorithm chose them).
        backbone: timm model name.
        online_augmentation: the online part of `augmentation` (`none` when empty).
        synthetic_ratio: synthetic images per real training image.
        filter_threshold: the reference classifier's confidence in its own label that a
            synthetic image needs to be kept (0 = keep all).
        seed: the trial's seed (model init, batches, augmentation, its pool).
        pool: the pool it reads a prefix of; None when it reads no synthetic image.
        n_synthetic: how many pool images it reads (a prefix of the pool).
        real_per_class: real training images per class it trains on: the spec's
            `dataset.per_class`, or a yardstick arm's size.
    """

    planner: TrialPlanner
    swept: dict[str, Any]
    backbone: str
    online_augmentation: str
    synthetic_ratio: float
    filter_threshold: float
    seed: int
    pool: PoolId | None
    n_synthetic: int
    real_per_class: int | None

    @property
    def generator(self) -> str | None:
        """The synthesis source it draws from (`ddpm`, `inpaint-ddpm`, ...), or None."""
        return self.pool.source if self.pool is not None else None

    @property
    def service(self) -> str | None:
        """The Ray actor name of the synthesis service that fills its pool."""
        return self.planner.services[self.pool.source] if self.pool is not None else None

    @property
    def dataset(self) -> dict:
        """The `dataset:` block this trial loads its splits with (its own per_class)."""
        return {**self.planner.dataset.model_dump(), "per_class": self.real_per_class}

    @property
    def requester(self) -> str:
        """Who asks the synthesis service for images, so that the images its asking made are
        charged to this trial: its config, written canonically."""
        return json.dumps(self.swept, sort_keys=True, default=str)

    @property
    def device(self) -> str:
        """The device it asks for: `cuda` when the sweep gives trials GPUs."""
        return "cuda" if self.planner.gpus_per_trial > 0 else "cpu"

    @property
    def gpu_memory_fraction(self) -> float | None:
        """Its share of its GPU's memory when it shares the GPU, else None."""
        share = self.planner.gpus_per_trial
        return share if 0 < share < 1 else None


def service_name(sweep_id: str, source: str) -> str:
    """The Ray actor name of the synthesis service that serves `source` in this sweep."""
    return f"raysweep-synthesis-{sweep_id}-{source}"
