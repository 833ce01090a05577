"""Run a sweep: plan → generator and pools → Tune trials → MLflow → report.

Everything that can be wrong with the input is found by `build_plan` before Ray starts. How
the sweep ends (FINISHED, FAILED, KILLED) is `lifecycle.py`'s; `--resume` restores Tune's
state from the storage path tagged on the sweep's parent run.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune
from mlflow.tracking import MlflowClient

from raysweep.deploy.cluster import worker_env
from raysweep.errors import UserError
from raysweep.figures import sample_grid
from raysweep.sweep.lifecycle import Interruptible, SweepInterrupted, end_sweep_runs
from raysweep.plan import Plan, TrialPlanner, search_and_scheduler
from raysweep.quality.judge import judge_pools
from raysweep.redaction import redact_uri
from raysweep.sweep.progress import TrialProgress, wait_for_pools
from raysweep.synthesis.identity import PoolId
from raysweep.training.reference import (ReferenceClassifier, ensure_reference_classifier,
                                         near_chance, reference_key)
from raysweep.spec import spec_to_yaml
from raysweep.deploy.storage import absolute, artifact_location
from raysweep.synthesis.actors import CALL_TIMEOUT_S, CHUNK_TIMEOUT_S, start_synthesis
from raysweep.synthesis.inpaint import Masking
from raysweep.store.store import SyntheticStore
from raysweep.tracking import (SWEEP_TAG, MLflowTrialCallback, latest_unfinished_sweep,
                               log_params, start_parent_run)
from raysweep.trial import train_fn

# The parent run's tag for Tune's storage path, so `--resume` finds the sweep's state even
# when the spec's defaults have changed since.
STORAGE_TAG = "raysweep.tune_storage"


def log(message: str) -> None:
    print(f"[raysweep] {message}", flush=True)


@dataclass
class SweepResult:
    experiment: str
    sweep_id: str
    parent_run_id: str
    tracking_uri: str
    trials: int
    errors: int
    seconds: float


def prepare_synthetic(plan: Plan, store: SyntheticStore, planner: TrialPlanner):
    """Start each generator's actors and synthesis service (under the name the planner gives
    trials), and fill every pool the plan knows it needs (all seeds at once, chunks spread over
    the actors).

    Returns {source: service handle}, all actor handles, {PoolId: content key} and the costs
    to log on the parent run.
    """
    spec, synthesis = plan.spec, plan.spec.synthesis
    services, actors, costs = {}, [], {}
    masking = prepare_masking(plan, store)
    for name, options in plan.generators.items():
        start = time.perf_counter()
        source = plan.sources[name]
        services[name], handles, first = start_synthesis(
            source.generator, options, plan.splits.train, spec.generator.seed, store,
            [p.pool for p in plan.pools if p.pool.source == name], actors=synthesis.actors,
            cpus_per_actor=synthesis.cpus_per_actor, gpus_per_actor=synthesis.gpus_per_actor,
            chunk_size=synthesis.chunk_size, service_name=planner.services[name], log=log,
            masking=masking if source.inpaint else None)
        actors += handles
        costs[f"{name}_fit_seconds"] = first["fit_seconds"]
        costs[f"{name}_reused"] = float(first["reused"])
        costs[f"{name}_load_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    keys = {name: ray.get(service.stats.remote())["keys"] for name, service in services.items()}
    # Each chunk has its own timeout inside the service; this bounds the whole fill as a backstop.
    chunks = sum(-(-p.count // synthesis.chunk_size) for p in plan.pools)
    statuses = wait_for_pools([services[p.pool.source].ensure.remote(p.pool, p.count)
                               for p in plan.pools], plan.pools,
                              [keys[p.pool.source][p.pool] for p in plan.pools], store, log,
                              timeout=CHUNK_TIMEOUT_S * (chunks + 1))
    for request, status in zip(plan.pools, statuses):
        log(f"pool {status['key']} ({request.pool.describe()}): {status['count']} images "
            f"({status['generated']} generated, {status['reused']} reused) "
            f"in {status['seconds']:.0f}s")
    costs["generator_fit_seconds"] = sum(v for k, v in costs.items() if k.endswith("_fit_seconds"))
    costs["generator_reused"] = float(all(costs[f"{n}_reused"] for n in plan.generators))
    costs["synthetic_images_generated"] = float(sum(s["generated"] for s in statuses))
    costs["synthetic_generation_seconds"] = time.perf_counter() - start
    pools = {p.pool: s["key"] for p, s in zip(plan.pools, statuses)}
    release_generators(services)
    return services, actors, pools, costs


def release_generators(services: dict) -> None:
    """The pools hold every image the plan needs, so the generator actors stop and their GPUs
    and memory go to the trials; the services stay to answer trials from the store."""
    released = ray.get([service.release_actors.remote() for service in services.values()],
                       timeout=CALL_TIMEOUT_S)
    log(f"pools full: released {sum(released)} generator actor(s) and their resources")


def prepare_reference(plan: Plan, store: SyntheticStore) -> ReferenceClassifier:
    """Train (or load) the sweep's one reference classifier, here, before inpainting actors,
    judging or filtering trials load it. A saliency map is only as good as its classifier, so
    one near chance is said in one line, naming the option that trains it longer."""
    splits, options = plan.splits, plan.reference
    reference = ensure_reference_classifier(store, splits.train, options, val=splits.val,
                                            test=splits.test, log=log)
    log(f"reference classifier {reference.key}: val accuracy {reference.val_accuracy:.3f}, "
        f"test accuracy {reference.test_accuracy:.3f}")
    if near_chance(reference.val_accuracy, splits.train.num_classes):
        log(f"warning: the reference classifier's val accuracy {reference.val_accuracy:.3f} is "
            f"near chance ({1 / splits.train.num_classes:.2f} for {splits.train.num_classes} "
            f"classes): its saliency masks are close to noise and its quality features and "
            f"filter confidences say little; raise saliency.epochs (now {options.epochs})")
    return reference


def prepare_masking(plan: Plan, store: SyntheticStore) -> Masking | None:
    """What inpainting actors make masks with: the reference classifier (already stored by
    `prepare_reference`) and the spec's CAM settings."""
    if not any(source.inpaint for source in plan.sources.values()):
        return None
    saliency = plan.spec.saliency
    return Masking(plan.reference, reference_key(plan.splits.train, plan.reference),
                   saliency.method, saliency.target_layer, saliency.smoothing)


@dataclass(frozen=True)
class Resumable:
    """An unfinished sweep `--resume` continues: its id and where Tune keeps its state."""

    sweep_id: str
    storage_path: str

    @property
    def tune_path(self) -> str:
        return f"{self.storage_path}/{self.sweep_id}"


def new_sweep_id(spec) -> str:
    # The random suffix keeps two sweeps started in the same second apart (runs, Tune dirs).
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def find_resumable(spec, tracking_uri: str) -> Resumable:
    """The latest unfinished sweep of the spec's experiment that Tune can restore; one-line
    UserError when there is none (checked before Ray starts)."""
    run = latest_unfinished_sweep(tracking_uri, spec.experiment_name())
    fix = "run without --resume to start a new sweep"
    if run is None:
        raise UserError(f"--resume: experiment {spec.experiment_name()!r} at {redact_uri(tracking_uri)} "
                        f"has no unfinished sweep; {fix}")
    tags = run.data.tags
    found = Resumable(tags[SWEEP_TAG], tags.get(STORAGE_TAG, absolute(spec.tune.storage_path)))
    if not tune.Tuner.can_restore(found.tune_path):
        raise UserError(f"--resume: sweep {found.sweep_id} left no Tune state at {found.tune_path}; "
                        f"{fix}")
    return found


def run_sweep(plan: Plan, tracking_uri: str, address: str | None = None,
              num_cpus: int | None = None, num_gpus: float | None = None,
              resume: Resumable | None = None) -> SweepResult:
    """Run (or, with `resume`, continue) the sweep. The parent run ends FINISHED, FAILED (an
    error, or failed trials) or KILLED (SIGINT/SIGTERM: `SweepInterrupted` is raised), its
    RUNNING children with it, and a Ray instance started here is shut down on every path."""
    spec = plan.spec
    started = time.perf_counter()
    sweep_id = resume.sweep_id if resume else new_sweep_id(spec)
    storage_path = resume.storage_path if resume else absolute(spec.tune.storage_path)
    experiment_id, parent_run_id = start_parent_run(
        tracking_uri, spec.experiment_name(), sweep_id, run_name=sweep_id,
        tags={STORAGE_TAG: storage_path}, artifact_location=artifact_location(spec))
    client = MlflowClient(tracking_uri)
    log(f"MLflow: experiment {spec.experiment_name()!r}, parent run {parent_run_id} at "
        f"{redact_uri(tracking_uri)}" + (f" (resuming sweep {sweep_id})" if resume else ""))
    owns_ray = not ray.is_initialized()
    status = "FAILED"
    with Interruptible() as interrupt:
        try:
            _log_spec(client, parent_run_id, plan)
            if owns_ray:
                # "local": always a new instance; without it, Ray may join another one running
                # on this machine (another user's, or one a killed driver left behind).
                ray.init(address=address or "local", num_cpus=num_cpus, num_gpus=num_gpus,
                         include_dashboard=False, runtime_env={"env_vars": worker_env()})
                interrupt.install()  # Ray's core worker took SIGTERM over; take it back
            store = SyntheticStore(spec.store.path)
            planner = plan.trial_planner(sweep_id, str(store.root))
            services, actors, pools = {}, [], {}
            reference = None
            if plan.reference is not None:
                reference = prepare_reference(plan, store)
                _log_reference(client, parent_run_id, reference, plan)
            if plan.pools:
                services, actors, pools, costs = prepare_synthetic(plan, store, planner)
                for key, value in costs.items():
                    client.log_metric(parent_run_id, key, value)
                _log_pool_grids(client, parent_run_id, store, pools, plan)
            if pools and spec.synthesis.quality_epochs > 0:
                _judge_pools(client, parent_run_id, store, pools, plan, reference)
            varying = [name for name, axis in spec.axes().items() if axis.kind != "fixed"]
            callback = MLflowTrialCallback(tracking_uri, experiment_id, parent_run_id, sweep_id,
                                           plan.fixed_params, planner, varying=varying)
            progress = TrialProgress(plan.trial_count, spec.tune.metric, spec.tune.mode, varying,
                                     log)
            tuner = _tuner(plan, planner, sweep_id, storage_path, [callback, progress], resume)
            interrupt.in_tune = True
            results = tuner.fit()
            interrupt.in_tune = False
            interrupt.check()
            if actors:
                stats = [ray.get(service.stats.remote(), timeout=CALL_TIMEOUT_S)
                         for service in services.values()]
                loads = [s["model_loads"] for s in stats]
                if None not in loads:
                    client.log_metric(parent_run_id, "generator_model_loads", float(sum(loads)))
                client.log_metric(parent_run_id, "synthetic_images_generated",
                                  float(sum(sum(s["generated"].values()) for s in stats)))
            errors = len(results.errors)
            if errors == 0:
                best = results.get_best_result()
                client.log_metric(parent_run_id, f"best_{spec.tune.metric}",
                                  float(best.metrics[spec.tune.metric]))
            seconds = time.perf_counter() - started
            client.log_metric(parent_run_id, "sweep_seconds", seconds)
            status = "FINISHED" if errors == 0 else "FAILED"
        except (SweepInterrupted, KeyboardInterrupt):
            status = "KILLED"
            raise
        finally:
            interrupt.in_tune = False
            try:
                end_sweep_runs(client, experiment_id, parent_run_id, status)
            finally:
                if owns_ray:
                    ray.shutdown()
    return SweepResult(spec.experiment_name(), sweep_id, parent_run_id, tracking_uri, len(results),
                       errors, seconds)


def _log_spec(client: MlflowClient, run_id: str, plan: Plan) -> None:
    log_params(client, run_id, {**plan.fixed_params, "trials": plan.trial_count,
                                "search_alg": plan.spec.tune.search_alg,
                                "generators": ",".join(plan.generators) or "none"})
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "spec.yaml").write_text(spec_to_yaml(plan.spec))
        client.log_artifact(run_id, str(Path(directory) / "spec.yaml"))


def _tuner(plan: Plan, planner: TrialPlanner, sweep_id: str, storage_path: str,
           callbacks: list, resume: Resumable | None) -> tune.Tuner:
    """A new Tuner, or the interrupted one restored: finished trials stay finished, unfinished
    and errored ones continue from their last checkpoint."""
    spec = plan.spec
    trainable = tune.with_resources(tune.with_parameters(train_fn, planner=planner),
                                    plan.resources)
    if resume:
        return tune.Tuner.restore(resume.tune_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=True, param_space=plan.param_space)
    search, scheduler = search_and_scheduler(spec)
    return tune.Tuner(
        trainable,
        param_space=plan.param_space,
        tune_config=tune.TuneConfig(
            metric=spec.tune.metric, mode=spec.tune.mode, num_samples=plan.num_samples,
            search_alg=search, scheduler=scheduler,
            max_concurrent_trials=spec.tune.max_concurrent_trials,
            # Trials share one process per slot: torch, timm and the data load once per
            # slot, not once per trial (seconds each on a laptop).
            reuse_actors=True),
        run_config=tune.RunConfig(
            name=sweep_id, storage_path=storage_path, callbacks=callbacks, verbose=1,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=_checkpoints_kept(spec)),
            # A trial that fails (a lost node, an OOM) restarts from its last checkpoint.
            failure_config=tune.FailureConfig(max_failures=spec.tune.max_failures)),
    )


def _checkpoints_kept(spec) -> int | None:
    """How many checkpoints per trial Tune keeps. Tune deletes an old one when it registers a
    new one but saves its experiment state later (every 10 s or more), so a driver killed in
    between leaves a state naming a deleted checkpoint and `--resume` cannot restore that trial
    (seen with num_to_keep=1 and a checkpoint per epoch). Trials save at most one state per
    `checkpoint_interval_s` (a minute by default), so keeping three covers a state two
    intervals old; with a checkpoint every epoch (interval 0) every one is kept."""
    return None if spec.tune.checkpoint_interval_s == 0 else 3


def _log_reference(client: MlflowClient, run_id: str, reference: ReferenceClassifier,
                   plan: Plan) -> None:
    """The reference classifier's accuracy, under the names of what uses it: masks
    (`saliency_*`), filtering and judging (`reference_test_accuracy`)."""
    if any(source.inpaint for source in plan.sources.values()):
        client.log_metric(run_id, "saliency_val_accuracy", reference.val_accuracy)
        client.log_metric(run_id, "saliency_test_accuracy", reference.test_accuracy)
        client.log_metric(run_id, "saliency_fit_seconds", reference.fit_seconds)
    filtering = max(float(v) for v in plan.spec.axes()["filter_threshold"].candidates()) > 0
    if filtering or (plan.pools and plan.spec.synthesis.quality_epochs > 0):
        client.log_metric(run_id, "reference_test_accuracy", reference.test_accuracy)


def _judge_pools(client: MlflowClient, run_id: str, store: SyntheticStore,
                 pools: dict[PoolId, str], plan: Plan, reference: ReferenceClassifier) -> None:
    """Judge every pool on the reference classifier's features, or Inception's when the user
    gave its weights."""
    inception = plan.spec.synthesis.inception_weights
    features = reference.features
    if inception:
        from raysweep.quality.inception import inception_features

        features = inception_features(inception)
    client.log_param(run_id, "quality_features",
                     "inception-v3" if inception else "reference-classifier")
    judge_pools(client, run_id, store, pools, plan.splits, features,
                plan.spec.synthesis.quality_epochs, log=log)


def _log_pool_grids(client: MlflowClient, run_id: str, store: SyntheticStore,
                    pools: dict[PoolId, str], plan: Plan) -> None:
    """A grid of each pool's first images, one row per class, on the parent run
    (`synthetic_samples_<pool>.png`; with one source, the source's name is left out)."""
    class_names = list(plan.splits.train.class_names)
    single = len(plan.generators) == 1
    with tempfile.TemporaryDirectory() as directory:
        for pool, key in pools.items():
            images = store.read(key, min(store.count(key), 8 * len(class_names)))
            name = pool.slug.removeprefix(f"{pool.source}_") if single else pool.slug
            path = sample_grid(images.images, images.labels, class_names,
                               Path(directory) / f"synthetic_samples_{name}.png",
                               title=f"pool {key} ({pool.describe()})")
            client.log_artifact(run_id, str(path))

