"""From a validated spec to what will run: names checked, Tune's param space, pools, resources.

`build_plan` is the second half of validation: it checks every name against its registry
(`names.py`) and the resource budget (`budget.py`), loads the real data (cheap) to size the
synthetic pools (`pools.py`), and turns the `sweep:` axes into Tune's search space
(`space.py`). Each trial then resolves its own typed plan (`trials.py`). Nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raysweep.data import DataSplits, load_splits
from raysweep.errors import UserError
from raysweep.plan.budget import check_budget, check_threads, local_resources
from raysweep.plan.names import check_names
from raysweep.plan.pools import (MAX_POOL_IMAGES, PoolRequest, generators_used, planned_pools,
                                 sources_used)
from raysweep.plan.reference import reference_options, uses_reference
from raysweep.plan.space import describe_axis, fixed_configs, param_space, proposer, scheduler
from raysweep.plan.trials import TrialPlan, TrialPlanner, service_name
from raysweep.plan.yardstick import REAL_PER_CLASS, check_yardstick, yardstick_configs
from raysweep.spec import Spec
from raysweep.store import SyntheticStore
from raysweep.store.budget import check_pool_budget
from raysweep.synthesis.kinds import SynthesisSource
from raysweep.training.reference import ReferenceOptions

__all__ = ["MAX_POOL_IMAGES", "Plan", "PoolRequest", "TrialPlan", "TrialPlanner", "build_plan",
           "check_budget", "proposer", "scheduler", "service_name"]


@dataclass
class Plan:
    """What a validated spec will run.

    Args:
        spec: the validated spec.
        splits: the real splits, loaded once.
        param_space: Tune's search space of the `sweep:` axes.
        configs: every trial's config, when the search knows them up front (grid, random,
            with the yardstick's real-only arms); None for Optuna.
        trial_count: how many trials the search runs.
        pools: every pool the trials can read, each sized for the largest ratio.
        resources: what each trial asks Ray for (`cpu`, `gpu`).
        generators: synthesis source name -> its generator's options.
        fixed_params: what every trial's MLflow run records besides its swept values.
        sources: synthesis source name -> the source.
        reference: the sweep's reference classifier, when masks, filtering or judging use it.
        extra: configs that run besides a model-based searcher's (Optuna): the yardstick's.
    """

    spec: Spec
    splits: DataSplits
    param_space: dict
    configs: list[dict] | None
    trial_count: int
    pools: list[PoolRequest]
    resources: dict
    generators: dict[str, dict] = field(default_factory=dict)
    fixed_params: dict = field(default_factory=dict)
    sources: dict[str, SynthesisSource] = field(default_factory=dict)
    reference: ReferenceOptions | None = None
    extra: list[dict] = field(default_factory=list)

    def trial_planner(self, sweep_id: str, store_root: str) -> TrialPlanner:
        """The per-trial resolver for this sweep: its services are named after `sweep_id`,
        `store_root` is the store's resolved root (Tune moves trials to their own folders)."""
        spec = self.spec
        return TrialPlanner(
            default_generator=spec.generator.name,
            services={name: service_name(sweep_id, name) for name in self.generators},
            n_real=len(self.splits.train), dataset=spec.dataset,
            training=spec.training.model_copy(update={"threads": trial_threads(spec)}),
            synthesis_mode=spec.synthesis.mode, store_root=store_root,
            metric=spec.tune.metric, mode=spec.tune.mode,
            checkpoint_interval_s=spec.tune.checkpoint_interval_s,
            gpus_per_trial=spec.tune.gpus_per_trial, reference=self.reference)

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
            pools = [p for p in self.pools if p.pool.source == name]
            shown = ", ".join(f"{p.pool.describe()}: {p.count} images" for p in pools[:3])
            more = f", and {len(pools) - 3} more" if len(pools) > 3 else ""
            lines.append(f"generator {name} ({synthesis.mode} mode): {synthesis.actors} actor(s), "
                         f"{synthesis.cpus_per_actor:g} CPU and {synthesis.gpus_per_actor:g} GPU "
                         f"each; {len(pools)} pool(s): {shown}{more}")
        if self.reference is not None:
            options = self.reference
            lines.append(f"reference classifier: {options.backbone}, {options.epochs} epochs on "
                         f"the training split (seed {options.seed}); masks by "
                         f"{self.spec.saliency.method}")
        if not self.pools:
            lines.append("no synthetic data (every synthetic_ratio is 0)")
        if self.spec.yardstick is not None:
            sizes = ", ".join(map(str, self.spec.yardstick.per_class))
            lines.append(f"yardstick: real-only trials at {sizes} real images per class "
                         f"(the sweep's own: {self.spec.dataset.per_class})")
        for name, axis in self.spec.axes().items():
            lines.append(f"  {name}: {describe_axis(axis)}")
        return "\n".join(lines)


def trial_threads(spec: Spec) -> int:
    """torch threads per trial: `training.threads`, else as many as the CPUs it holds, so
    trials beside generator actors never oversubscribe the machine."""
    return spec.training.threads or max(1, int(spec.tune.cpus_per_trial))


def build_plan(spec: Spec, num_cpus: float | None = None, num_gpus: float | None = None,
               local: bool = True) -> Plan:
    """Check names, load the real splits and derive Tune's param space and the pools.

    `local`: the sweep starts its own Ray instance, so its resources are known now and the
    budget of actors and trials is checked here (on a cluster, `run` checks it after connecting).
    """
    check_names(spec)
    check_threads(spec)
    if local:
        check_budget(spec, *local_resources(num_cpus, num_gpus))
    if spec.needs_synthetic:
        SyntheticStore(spec.store.path).check()
    splits = load_splits(spec.dataset.model_dump())
    check_translation(spec, splits)
    check_yardstick(spec, splits)
    pools = planned_pools(spec, len(splits.train))
    if pools:
        train = splits.train
        # Pixels, and for pools made from real images their provenance (mask + saliency).
        bytes_per_image = train.images[0].nbytes + 2 * train.image_size ** 2 + 24
        check_pool_budget(len(pools), max(p.count for p in pools), bytes_per_image)
    resources = {"cpu": spec.tune.cpus_per_trial, "gpu": spec.tune.gpus_per_trial}
    fixed = {"dataset": spec.dataset.name, "per_class": spec.dataset.per_class,
             "synthesis_mode": spec.synthesis.mode, "epochs": spec.training.epochs,
             "batch_size": spec.training.batch_size, "lr": spec.training.lr,
             "input_size": spec.training.input_size, "pretrained": spec.training.pretrained,
             "train_images_real": len(splits.train)}
    space = {**param_space(spec), REAL_PER_CLASS: spec.dataset.per_class}
    configs = fixed_configs(spec, space)
    extra = yardstick_configs(spec, configs)
    if configs is not None:
        configs, extra = configs + extra, []
    count = len(configs) if configs is not None else spec.tune.num_samples + len(extra)
    return Plan(spec, splits, space, configs, count, pools, resources, generators_used(spec),
                fixed, sources_used(spec),
                reference_options(spec) if uses_reference(spec) else None, extra)


def check_translation(spec: Spec, splits: DataSplits) -> None:
    """`translation: other` moves an image toward another class: there must be one."""
    if "other" in spec.axes()["translation"].candidates() and \
            any(source.img2img for source in sources_used(spec).values()) and \
            splits.train.num_classes < 2:
        raise UserError(f"sweep.translation: 'other' denoises toward another class, but "
                        f"dataset {spec.dataset.name!r} has {splits.train.num_classes} class; "
                        f"use translation: same")
