"""From a validated spec to what will run: names checked, Tune's param space, pools, resources.

`build_plan` is the second half of validation: it checks every name against its registry
(dataset, generator, augmentation, timm backbone), loads the real data (cheap) to size the
synthetic pools, and turns the `sweep:` axes into Tune's search space. Nothing here trains.

Each trial gets a typed `TrialPlan`. A searcher such as Optuna picks configs only at run time,
so the sweep ships a `TrialPlanner` (small, picklable) whose `trial_plan(config)` resolves the
config the same way wherever it runs: in the trial, and in the tracking callback on the driver.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from raysweep.augment import TTA_TRANSFORMS, check_augmentation
from raysweep.backbones import check_backbone
from raysweep.compose import synthetic_count
from raysweep.data import DataSplits, load_splits
from raysweep.errors import UserError
from raysweep.generators import create_generator, generator_class, list_generators
from raysweep.spec import Axis, Spec
from raysweep.synthesis.kinds import SynthesisSource, split_augmentation, trial_source
from raysweep.synthesis.store import SyntheticStore

# One pool larger than this is a typo in a ratio, not a study (at 32x32 RGB it is ~6 GB).
MAX_POOL_IMAGES = 2_000_000


@dataclass(frozen=True)
class PoolRequest:
    """The sweep needs the first `count` images of this source's pool for this seed (and, for
    an inpainting source, this mask)."""

    generator: str
    seed: int
    count: int
    mask_fraction: float | None = None
    mask_region: str | None = None

    @property
    def pool_id(self) -> int | tuple:
        """What the synthesis service calls this pool: the seed, or (seed, fraction, region)."""
        if self.mask_fraction is None:
            return self.seed
        return self.seed, self.mask_fraction, self.mask_region


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


def sources_used(spec: Spec) -> dict[str, SynthesisSource]:
    """The synthesis sources trials draw from, by name (none when every ratio is 0)."""
    if not spec.needs_synthetic:
        return {}
    sources = {trial_source(value, spec.generator.name)
               for value in spec.axes()["augmentation"].candidates()}
    return {source.name: source for source in sorted(sources, key=lambda s: s.name)}


def generators_used(spec: Spec) -> dict[str, dict]:
    """The sources trials draw from, with their generator's options."""
    return {name: spec.generator.options_for(source.generator)
            for name, source in sources_used(spec).items()}


def check_names(spec: Spec) -> None:
    """Every name in the spec exists in its registry; one-line UserError otherwise."""
    axes = spec.axes()
    for value in axes["augmentation"].candidates():
        check_augmentation(split_augmentation(value)[1], spec.training.augmentation_params)
    for name, source in sources_used(spec).items():
        generator = check_generator(source.generator, spec.generator.options_for(source.generator))
        if source.inpaint and not hasattr(generator, "sample_inpaint"):
            raise UserError(f"sweep.augmentation: inpainting asks generator {source.generator!r}, "
                            f"which cannot inpaint; set generator.name to ddpm or sd-inpaint, or "
                            f"use blur or erase")
    check_masks(spec)
    for name in axes["backbone"].candidates():
        check_backbone(name, spec.training.pretrained)
    for name in spec.training.tta.transforms:
        if name not in TTA_TRANSFORMS:
            raise UserError(f"training.tta.transforms: unknown transform {name!r}; "
                            f"known: {', '.join(TTA_TRANSFORMS)}")
    if axes["seed"].kind in ("uniform", "loguniform", "randint") and spec.needs_synthetic:
        raise UserError("sweep.seed: each seed needs its own synthetic pool, made before trials "
                        "start; give seeds as a list, e.g. seed: [0, 1, 2]")
    check_quality(spec)


def check_quality(spec: Spec) -> None:
    """Inception weights are only read when pools are judged, and must be Inception's."""
    synthesis = spec.synthesis
    if synthesis.inception_weights is None:
        return
    if synthesis.quality_epochs == 0 or not generators_used(spec):
        raise UserError("synthesis.inception_weights: set, but no pool is judged; set "
                        "synthesis.quality_epochs > 0 in a sweep with generated images, or "
                        "remove inception_weights")
    from raysweep.quality.inception import load_inception_weights

    load_inception_weights(synthesis.inception_weights)


def check_generator(name: str, options: dict) -> None:
    """The generator exists, takes these options, and has its weights where it needs them."""
    if name not in list_generators():
        raise UserError(f"generator.name: unknown generator {name!r}; "
                        f"known: {', '.join(list_generators())}")
    # Options are checked against the constructor's signature, so that a TypeError raised
    # inside a constructor (a bug) stays a traceback instead of passing for a user mistake.
    try:
        inspect.signature(generator_class(name)).bind(**options)
    except TypeError as error:
        known = ", ".join(inspect.signature(generator_class(name)).parameters)
        raise UserError(f"generator.options for {name}: {error}; known options: {known}") from None
    try:
        generator = create_generator(name, **options)
    except ValueError as error:
        raise UserError(f"generator.options for {name}: {error}") from None
    check_available = getattr(generator, "check_available", None)
    if check_available is not None:
        check_available()
    return generator


def check_masks(spec: Spec) -> None:
    """Mask axes mean something only to inpainting trials; the saliency model must be buildable."""
    axes, sources = spec.axes(), sources_used(spec)
    swept = [name for name in ("mask_fraction", "mask_region") if not axes[name].is_fixed]
    ignoring = sorted({value for value in axes["augmentation"].candidates()
                       if not trial_source(value, spec.generator.name).inpaint})
    if swept and (ignoring or not spec.needs_synthetic):
        kinds = f"augmentation {', '.join(map(repr, ignoring))}" if ignoring else \
            "synthetic_ratio 0 (no synthetic images)"
        raise UserError(f"sweep.{swept[0]}: swept, but trials with {kinds} use no masks and "
                        f"would repeat identically; fix {swept[0]} to one value or use an "
                        f"inpainting kind (inpaint, blur, erase)")
    if swept and 0 in [float(v) for v in axes["synthetic_ratio"].candidates()]:
        raise UserError(f"sweep.{swept[0]}: swept, but trials at synthetic_ratio 0 use no masks "
                        f"and would repeat once per mask value; drop 0 from synthetic_ratio (run "
                        f"the baseline as its own sweep, e.g. search_spaces/ratio.yaml)")
    if not any(source.inpaint for source in sources.values()):
        return
    if axes["mask_fraction"].kind in ("uniform", "loguniform", "randint"):
        raise UserError("sweep.mask_fraction: each fraction needs its own inpainted pool, made "
                        "before trials start; give fractions as a list, e.g. [0.1, 0.3]")
    saliency = spec.saliency
    from raysweep.saliency import list_cam_methods

    if saliency.method not in list_cam_methods():
        raise UserError(f"saliency.method: unknown CAM method {saliency.method!r}; "
                        f"known: {', '.join(list_cam_methods())}")
    check_backbone(saliency.backbone, False)
    from raysweep.reference_classifier import ReferenceOptions, build_reference_model
    from raysweep.saliency.target_layer import TargetLayerError, find_target_layer

    options = ReferenceOptions(backbone=saliency.backbone, epochs=saliency.epochs,
                               input_size=saliency.input_size)
    model = build_reference_model(options, in_chans=3, num_classes=2)
    try:
        find_target_layer(model, saliency.target_layer, (3, options.input_size, options.input_size))
    except TargetLayerError as error:
        raise UserError(f"saliency.target_layer: {saliency.backbone}: {error}; name a layer with "
                        f"a spatial feature map, e.g. saliency.target_layer: layer4") from None


def reference_options(spec: Spec) -> dict:
    """The reference classifier options the spec's `saliency:` block names."""
    saliency = spec.saliency
    return {"backbone": saliency.backbone, "epochs": saliency.epochs,
            "input_size": saliency.input_size}


def local_resources(num_cpus: float | None, num_gpus: float | None) -> tuple[float, float]:
    """What a local Ray instance started by `raysweep run` will have."""
    if num_gpus is None:
        import torch

        num_gpus = torch.cuda.device_count()
    return float(num_cpus or os.cpu_count() or 1), float(num_gpus)


def check_budget(spec: Spec, cpus: float, gpus: float, spread: bool = False) -> None:
    """A trial must fit beside the generator actors, or Tune would wait forever. (`run` releases
    the actors once the pools are full; this still guards any phase where both run.)

    `spread`: the GPUs are on several nodes, so fractional actors may fragment them.
    """
    synthesis, settings = spec.synthesis, spec.tune
    actors = synthesis.actors * len(sources_used(spec))
    held_cpu, held_gpu = actors * synthesis.cpus_per_actor, actors * synthesis.gpus_per_actor
    if held_gpu > gpus:
        raise UserError(f"synthesis: {actors} actor(s) x {synthesis.gpus_per_actor:g} GPU "
                        f"need {held_gpu:g} GPUs but {gpus:g} are available; lower synthesis.actors "
                        f"or synthesis.gpus_per_actor, or pass --num-gpus")
    if 0 < synthesis.gpus_per_actor < 1 and settings.gpus_per_trial >= 1:
        # A trial asking whole GPUs needs them whole. One node packs fractional actors onto
        # as few GPUs as fit; across nodes (`spread`) each actor may sit on a GPU of its own.
        touched = min(actors, math.floor(gpus)) if spread else math.ceil(held_gpu)
        if gpus - touched < settings.gpus_per_trial:
            raise UserError(
                f"tune.gpus_per_trial: a trial needs {settings.gpus_per_trial:g} whole GPU(s), but "
                f"{actors} actor(s) of {synthesis.gpus_per_actor:g} GPU may leave only "
                f"{max(0, gpus - touched):g} of {gpus:g} GPUs whole; trials would wait forever. "
                f"Use fewer actors, gpus_per_actor: 1, or a fractional tune.gpus_per_trial")
    for kind, held, total, per_trial in (("CPU", held_cpu, cpus, settings.cpus_per_trial),
                                         ("GPU", held_gpu, gpus, settings.gpus_per_trial)):
        if per_trial > 0 and total - held < per_trial:
            raise UserError(
                f"tune.{kind.lower()}s_per_trial: a trial needs {per_trial:g} {kind} but only "
                f"{max(0.0, total - held):g} of {total:g} stay free beside the generator actors "
                f"({held:g} held); trials would wait forever. Lower synthesis.actors or "
                f"synthesis.{kind.lower()}s_per_actor, or tune.{kind.lower()}s_per_trial")


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


def search_and_scheduler(spec: Spec):
    """Tune's search algorithm and trial scheduler for the spec's `tune:` block."""
    settings = spec.tune
    if settings.search_alg == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(sampler=TPESampler(seed=settings.search_seed))
        if settings.max_concurrent_trials:
            search = ConcurrencyLimiter(search, max_concurrent=settings.max_concurrent_trials)
    else:
        search = BasicVariantGenerator(random_state=settings.search_seed)
    scheduler = None
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=spec.training.epochs,
                                  grace_period=min(settings.asha.grace_period, spec.training.epochs),
                                  reduction_factor=settings.asha.reduction_factor)
    return search, scheduler


def _to_tune(axis: Axis, search_alg: str):
    values = axis.values
    if axis.kind == "fixed":
        return values[0]
    if axis.kind == "grid":
        return tune.grid_search(values) if search_alg == "grid" else tune.choice(values)
    if axis.kind == "choice":
        return tune.choice(values)
    if axis.kind == "uniform":
        return tune.uniform(*values)
    if axis.kind == "loguniform":
        return tune.loguniform(*values)
    return tune.randint(int(values[0]), int(values[1]) + 1)  # spec bounds are inclusive


def describe_pool(pool: PoolRequest) -> str:
    if pool.mask_fraction is None:
        return f"seed {pool.seed}"
    return f"seed {pool.seed} {pool.mask_region} {pool.mask_fraction:g}"


def _describe(axis: Axis) -> str:
    if axis.kind == "fixed":
        return f"{axis.values[0]!r}"
    return f"{axis.kind} {axis.values!r}"

