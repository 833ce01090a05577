"""From a validated spec to what will run: names checked, Tune's param space, pools, resources.

`build_plan` is the second half of validation: it checks every name against its registry
(`names.py`) and the resource budget (`budget.py`), loads the real data (cheap) to size the
synthetic pools (`pools.py`), and turns the `sweep:` axes into Tune's search space
(`space.py`). Each trial then resolves its own typed plan (`trials.py`). Nothing here trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ray import tune

from raysweep.data import DataSplits, load_splits
from raysweep.errors import UserError
from raysweep.plan.budget import check_budget, local_resources
from raysweep.plan.names import check_names
from raysweep.plan.pools import (MAX_POOL_IMAGES, PoolRequest, describe_pool, generators_used,
                                 sources_used)
from raysweep.plan.space import _describe, _to_tune, search_and_scheduler
from raysweep.plan.trials import TrialPlan, TrialPlanner, service_name
from raysweep.spec import Spec
from raysweep.store import SyntheticStore
from raysweep.synthesis.kinds import SynthesisSource
from raysweep.training.compose import synthetic_count

__all__ = ["MAX_POOL_IMAGES", "Plan", "PoolRequest", "TrialPlan", "TrialPlanner", "build_plan",
           "check_budget", "describe_pool", "search_and_scheduler", "service_name"]

@dataclass
class Plan:
    spec: Spec
    splits: DataSplits
    param_space: dict
    num_samples: int
    trial_count: int
    pools: list[PoolRequest]
    resources: dict
    generators: dict[str, dict] = field(default_factory=dict)
    fixed_params: dict = field(default_factory=dict)
    sources: dict[str, SynthesisSource] = field(default_factory=dict)

    def trial_planner(self, sweep_id: str, store_root: str) -> TrialPlanner:
        """The per-trial resolver for this sweep: its services are named after `sweep_id`,
        `store_root` is the store's resolved root (Tune moves trials to their own folders)."""
        spec = self.spec
        return TrialPlanner(
            default_generator=spec.generator.name,
            services={name: service_name(sweep_id, name) for name in self.generators},
            n_real=len(self.splits.train),
            gpus_per_trial=spec.tune.gpus_per_trial,
            dataset=spec.dataset.model_dump(), training=spec.training.model_dump(),
            synthesis_mode=spec.synthesis.mode, store_root=store_root,
            metric=spec.tune.metric, mode=spec.tune.mode,
            checkpoint_interval_s=spec.tune.checkpoint_interval_s)

    def summary(self) -> str:
        train, val, test = self.splits.train, self.splits.val, self.splits.test
        lines = [
            f"spec {self.spec.name}: {self.trial_count} trial(s), "
            f"search {self.spec.tune.search_alg}, metric {self.spec.tune.metric} ({self.spec.tune.mode})",
            f"data {self.spec.dataset.name}: train {len(train)} / val {len(val)} / test {len(test)} "
            f"images, {train.num_classes} classes, {train.image_size}x{train.image_size}x{train.channels}",
            f"resources per trial: {self.resources['cpu']:g} CPU, {self.resources['gpu']:g} GPU",
        ]
        synthesis = self.spec.synthesis
        for name in self.generators:
            lines.append(f"generator {name} ({synthesis.mode} mode): {synthesis.actors} actor(s), "
                         f"{synthesis.cpus_per_actor:g} CPU and {synthesis.gpus_per_actor:g} GPU "
                         f"each; pools: " + ", ".join(f"{describe_pool(p)}: {p.count} images"
                                                      for p in self.pools if p.generator == name))
        if any(source.inpaint for source in self.sources.values()):
            saliency = self.spec.saliency
            lines.append(f"masks: {saliency.method} on a {saliency.backbone} reference classifier "
                         f"({saliency.epochs} epochs on the training split)")
        if not self.pools:
            lines.append("no synthetic data (every synthetic_ratio is 0)")
        for name, axis in self.spec.axes().items():
            lines.append(f"  {name}: {_describe(axis)}")
        return "\n".join(lines)



def reference_options(spec: Spec) -> dict:
    """The reference classifier options the spec's `saliency:` block names."""
    saliency = spec.saliency
    return {"backbone": saliency.backbone, "epochs": saliency.epochs,
            "input_size": saliency.input_size}



def build_plan(spec: Spec, num_cpus: float | None = None, num_gpus: float | None = None,
               local: bool = True) -> Plan:
    """Check names, load the real splits and derive Tune's param space and the pools.

    `local`: the sweep starts its own Ray instance, so its resources are known now and the
    budget of actors and trials is checked here (on a cluster, `run` checks it after connecting).
    """
    check_names(spec)
    if local:
        check_budget(spec, *local_resources(num_cpus, num_gpus))
    if spec.needs_synthetic:
        SyntheticStore(spec.store.path).check()
    splits = load_splits(spec.dataset.model_dump())
    axes = spec.axes()
    param_space = {name: _to_tune(axis, spec.tune.search_alg) for name, axis in axes.items()}
    ratio = axes["synthetic_ratio"]
    if spec.tune.search_alg == "grid" and ratio.kind == "grid":
        # Tune starts grid trials in order and the ratio varies slowest: largest training sets
        # first, so the trials left running at the end, beside idle slots, are the short ones.
        param_space["synthetic_ratio"] = tune.grid_search(sorted(ratio.values, reverse=True))
    grid = math.prod(len(a.values) for a in axes.values()
                     if spec.tune.search_alg == "grid" and a.kind == "grid")
    trial_count = grid * spec.tune.num_samples
    generators = generators_used(spec)
    sources = sources_used(spec)
    count = synthetic_count(axes["synthetic_ratio"].max_value, spec.synthesis.mode,
                            len(splits.train))
    if generators and count > MAX_POOL_IMAGES:
        raise UserError(f"sweep.synthetic_ratio: {axes['synthetic_ratio'].max_value:g} x "
                        f"{len(splits.train)} real images plans {count} synthetic images per pool, "
                        f"more than {MAX_POOL_IMAGES}; use a smaller ratio or dataset.per_class")
    pools = []
    for name, source in sources.items():
        masks = [(float(f), str(r)) for f in axes["mask_fraction"].candidates()
                 for r in axes["mask_region"].candidates()] if source.inpaint else [(None, None)]
        pools += [PoolRequest(name, int(seed), count, fraction, region)
                  for seed in axes["seed"].candidates() for fraction, region in masks]
    resources = {"cpu": spec.tune.cpus_per_trial, "gpu": spec.tune.gpus_per_trial}
    fixed = {"dataset": spec.dataset.name, "per_class": spec.dataset.per_class,
             "synthesis_mode": spec.synthesis.mode, "epochs": spec.training.epochs,
             "batch_size": spec.training.batch_size, "lr": spec.training.lr,
             "input_size": spec.training.input_size, "pretrained": spec.training.pretrained,
             "train_images_real": len(splits.train)}
    return Plan(spec, splits, param_space, spec.tune.num_samples, trial_count, pools,
                resources, generators, fixed, sources)
