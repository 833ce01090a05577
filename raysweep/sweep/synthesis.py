"""The sweep's synthetic data: its reference classifier, its synthesis services, what they cost.

`SweepSynthesis.start` returns at once: the reference classifier trains in a Ray task and each
synthesis service starts its own actors, while Tune already runs the trials that need neither.
With `synthesis.schedule: staged` (the order before on-demand synthesis, kept to compare)
`fill_planned` first fills every planned pool to the size its largest ratio needs and releases
the actors, and only then do trials start. At the end, `finish` logs what generation cost,
judges the pools at the size the trials read, and logs a sample grid of each.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import ray
from mlflow.tracking import MlflowClient
from ray.exceptions import GetTimeoutError, RayError

from raysweep.data import ImageDataset
from raysweep.figures import sample_grid
from raysweep.plan import Plan
from raysweep.plan.trials import TrialPlanner
from raysweep.quality.judge import judge_pools
from raysweep.store import SyntheticStore
from raysweep.sweep.progress import PoolProgress
from raysweep.sweep.services import ServicesView
from raysweep.synthesis.actors import CALL_TIMEOUT_S
from raysweep.synthesis.identity import PoolId
from raysweep.synthesis.inpaint import Masking
from raysweep.synthesis.service import (CHUNK_TIMEOUT_S, LOAD_TIMEOUT_S, SourceSetup,
                                        SynthesisFailed, one_line, start_service)
from raysweep.training.reference import (ReferenceOptions, ensure_reference_classifier,
                                         near_chance, reference_key)

Log = Callable[[str], None]


@ray.remote(num_cpus=1)
def train_reference(store_root: str, train: ImageDataset, val: ImageDataset,
                    test: ImageDataset, options: ReferenceOptions) -> dict:
    """Train (or load) the sweep's reference classifier and store it; its accuracies.

    A saliency map is only as good as its classifier, so one near chance is said in one line,
    naming the option that trains it longer."""
    import torch

    torch.set_num_threads(1)  # the one CPU this task holds
    reference = ensure_reference_classifier(SyntheticStore(store_root), train, options,
                                            val=val, test=test,
                                            log=lambda m: print(f"[raysweep] {m}", flush=True))
    print(f"[raysweep] reference classifier {reference.key}: val accuracy "
          f"{reference.val_accuracy:.3f}, test accuracy {reference.test_accuracy:.3f}",
          flush=True)
    if near_chance(reference.val_accuracy, train.num_classes):
        print(f"[raysweep] warning: the reference classifier's val accuracy "
              f"{reference.val_accuracy:.3f} is near chance ({1 / train.num_classes:.2f} for "
              f"{train.num_classes} classes): its saliency masks are close to noise and its "
              f"quality features and filter confidences say little; raise saliency.epochs "
              f"(now {options.epochs})", flush=True)
    return {"key": reference.key, "val_accuracy": reference.val_accuracy,
            "test_accuracy": reference.test_accuracy, "fit_seconds": reference.fit_seconds,
            "reused": reference.reused}


class SweepSynthesis:
    """Starts, waits for (staged only), accounts for and judges a sweep's synthetic data."""

    def __init__(self, plan: Plan, store: SyntheticStore, planner: TrialPlanner, log: Log):
        self.plan, self.store, self.planner, self.log = plan, store, planner, log
        self.services: dict[str, object] = {}
        self.reference = None  # the training task's ObjectRef
        self.view = ServicesView(planner.services)

    @property
    def reference_key(self) -> str | None:
        if self.plan.reference is None:
            return None
        return reference_key(self.plan.splits.train, self.plan.reference)

    def start(self) -> None:
        """Train the reference classifier (a task) and start every source's service."""
        plan, spec = self.plan, self.plan.spec
        splits = plan.splits
        if plan.reference is not None:
            self.reference = train_reference.remote(str(self.store.root), splits.train,
                                                    splits.val, splits.test, plan.reference)
        synthesis = spec.synthesis
        for name, options in plan.generators.items():
            source = plan.sources[name]
            masking = None
            if source.inpaint:
                saliency = spec.saliency
                masking = Masking(plan.reference, self.reference_key, saliency.method,
                                  saliency.target_layer, saliency.smoothing)
            setup = SourceSetup(name, spec.dataset.model_dump(), source.generator, options,
                                spec.generator.seed,
                                synthesis.actors, synthesis.cpus_per_actor,
                                synthesis.gpus_per_actor, synthesis.chunk_size, masking)
            pools = [p.pool for p in plan.pools if p.pool.source == name]
            self.services[name] = start_service(setup, pools, self.store,
                                                self.planner.services[name])

    def fill_planned(self) -> None:
        """Staged order: every planned pool filled to its planned size, then the actors go."""
        plan = self.plan
        if self.reference is not None:
            _get(self.reference, LOAD_TIMEOUT_S, "the reference classifier's training")
        chunks = sum(-(-p.count // plan.spec.synthesis.chunk_size) for p in plan.pools)
        refs = [self.services[p.pool.source].ensure.remote(p.pool, p.count, "plan")
                for p in plan.pools]
        progress = PoolProgress(self.view, self.log)
        deadline = time.monotonic() + CHUNK_TIMEOUT_S * (chunks + 1)
        pending = list(refs)
        while pending:
            if time.monotonic() > deadline:
                raise SynthesisFailed(f"the planned pools were not full within "
                                      f"{CHUNK_TIMEOUT_S * (chunks + 1):g}s")
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            progress.show()
        progress.close()
        _get(refs, CALL_TIMEOUT_S, "the pools")
        self.release()

    def release(self) -> None:
        """Stop every generator actor; their GPUs and memory go to the trials."""
        released = _get([s.release_actors.remote() for s in self.services.values()],
                        CALL_TIMEOUT_S, "releasing the generator actors")
        if sum(released):
            self.log(f"released {sum(released)} generator actor(s) and their resources")

    def failure(self) -> str | None:
        return self.view.failure()

    def finish(self, client: MlflowClient, run_id: str) -> dict[PoolId, str]:
        """After the trials: release the actors, log what generation cost and the reference
        classifier's accuracy, then a sample grid and (when asked) the quality of each pool at
        the size the trials read. Returns {PoolId: content key} of the pools that hold images.

        Raises:
            SynthesisFailed: a service failed.
        """
        self.view.progress(fresh=True)
        error = self.failure()
        if error is not None:
            raise SynthesisFailed(error)
        if self.services:
            self.release()
        reference = None if self.reference is None else \
            _get(self.reference, LOAD_TIMEOUT_S, "the reference classifier's training")
        if reference is not None:
            self._log_reference(client, run_id, reference)
        stats = {name: _get(s.stats.remote(), CALL_TIMEOUT_S, f"source {name}'s stats")
                 for name, s in self.services.items()}
        self._log_costs(client, run_id, stats)
        pools = {}
        for stat in stats.values():
            for pool, key in sorted(stat["keys"].items(), key=lambda item: item[0].sort_key()):
                stored = self.store.count(key)
                if stored == 0:
                    continue
                pools[pool] = key
                generated = stat["generated"].get(pool, 0)
                self.log(f"pool {key} ({pool.describe()}): {stored} images ({generated} "
                         f"generated, {stored - generated} reused)")
        _log_pool_grids(client, run_id, self.store, pools, self.plan)
        if pools and self.plan.spec.synthesis.quality_epochs > 0:
            self._judge(client, run_id, pools)
        return pools

    def _log_costs(self, client: MlflowClient, run_id: str, stats: dict) -> None:
        started = client.get_run(run_id).info.start_time / 1000
        metrics = {}
        for name, stat in stats.items():
            first = stat["first"] or {}
            metrics[f"{name}_fit_seconds"] = first.get("fit_seconds", 0.0)
            metrics[f"{name}_reused"] = float(first.get("reused", True))
            metrics[f"{name}_load_seconds"] = first.get("load_seconds", 0.0)
            if "loaded_at" in first:  # seconds after the parent run started: generator ready
                metrics[f"{name}_ready_after_seconds"] = first["loaded_at"] - started
        metrics["generator_fit_seconds"] = sum(v for k, v in metrics.items()
                                               if k.endswith("_fit_seconds"))
        metrics["generator_reused"] = float(all(metrics[f"{n}_reused"] for n in stats))
        metrics["synthetic_images_generated"] = float(
            sum(sum(s["generated"].values()) for s in stats.values()))
        metrics["synthetic_generation_seconds"] = sum(sum(s["seconds"].values())
                                                      for s in stats.values())
        metrics["generator_actor_seconds"] = sum(s["actor_seconds"] for s in stats.values())
        metrics["generator_busy_seconds"] = sum(s["actor_busy_seconds"] for s in stats.values())
        loads = [s["model_loads"] for s in stats.values()]
        if None not in loads:
            metrics["generator_model_loads"] = float(sum(loads))
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)

    def _log_reference(self, client: MlflowClient, run_id: str, reference: dict) -> None:
        """The reference classifier's accuracy, under the names of what uses it: masks
        (`saliency_*`), filtering and judging (`reference_test_accuracy`)."""
        plan = self.plan
        if any(source.inpaint for source in plan.sources.values()):
            client.log_metric(run_id, "saliency_val_accuracy", reference["val_accuracy"])
            client.log_metric(run_id, "saliency_test_accuracy", reference["test_accuracy"])
            client.log_metric(run_id, "saliency_fit_seconds", reference["fit_seconds"])
        filtering = max(float(v) for v in plan.spec.axes()["filter_threshold"].candidates()) > 0
        if filtering or (plan.pools and plan.spec.synthesis.quality_epochs > 0):
            client.log_metric(run_id, "reference_test_accuracy", reference["test_accuracy"])

    def _judge(self, client: MlflowClient, run_id: str, pools: dict[PoolId, str]) -> None:
        """Judge every pool on the reference classifier's features, or Inception's when the
        user gave its weights."""
        plan = self.plan
        inception = plan.spec.synthesis.inception_weights
        if inception:
            from raysweep.quality.inception import inception_features

            features = inception_features(inception)
        else:
            features = ensure_reference_classifier(self.store, plan.splits.train, plan.reference,
                                                   log=self.log).features
        client.log_param(run_id, "quality_features",
                         "inception-v3" if inception else "reference-classifier")
        judge_pools(client, run_id, self.store, pools, plan.splits, features,
                    plan.spec.synthesis.quality_epochs, log=self.log)


def _get(refs, timeout_s: float, what: str):
    """`ray.get` with a bound; past it, or when the task failed, one line naming what."""
    try:
        return ray.get(refs, timeout=timeout_s)
    except GetTimeoutError:
        raise SynthesisFailed(f"{what} did not answer within {timeout_s:g}s; see the sweep's "
                              f"log") from None
    except RayError as error:
        raise SynthesisFailed(f"{what} failed: {one_line(error)}") from None


def _log_pool_grids(client: MlflowClient, run_id: str, store: SyntheticStore,
                    pools: dict[PoolId, str], plan: Plan) -> None:
    """A grid of each pool's first images, one row per class, on the parent run
    (`synthetic_samples_<pool>.png`; with one source, the source's name is left out)."""
    class_names = list(plan.splits.train.class_names)
    single = len(plan.generators) == 1
    with tempfile.TemporaryDirectory() as directory:
        for pool, key in sorted(pools.items(), key=lambda item: item[0].sort_key()):
            images = store.read(key, min(store.count(key), 8 * len(class_names)))
            name = pool.slug.removeprefix(f"{pool.source}_") if single else pool.slug
            path = sample_grid(images.images, images.labels, class_names,
                               Path(directory) / f"synthetic_samples_{name}.png",
                               title=f"pool {key} ({pool.describe()})")
            client.log_artifact(run_id, str(path))
