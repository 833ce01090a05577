"""Run a sweep: plan → generator and pools → Tune trials → MLflow → report.

Everything that can be wrong with the input is found by `build_plan` before Ray starts. How
the sweep ends (FINISHED, FAILED, KILLED) is `lifecycle.py`'s; `--resume` restores Tune's
state from the spec's own storage path, once the sweep's driver is gone.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from raysweep.deploy.cluster import worker_env
from raysweep.deploy.storage import absolute, artifact_location
from raysweep.errors import UserError
from raysweep.plan import Plan, TrialPlanner, proposer, scheduler
from raysweep.redaction import redact_text, redact_uri
from raysweep.spec import spec_to_yaml
from raysweep.store import SyntheticStore
from raysweep.sweep.gate import DataGate
from raysweep.sweep.lifecycle import Interruptible, SweepInterrupted, end_sweep_runs
from raysweep.sweep.progress import PoolProgress, TrialProgress
from raysweep.sweep.services import ServicesView, SynthesisWatch
from raysweep.sweep.synthesis import SweepSynthesis
from raysweep.tracking import (DRIVER_TAG, SWEEP_TAG, MLflowTrialCallback, driver_alive,
                               latest_unfinished_sweep, log_params, start_parent_run)
from raysweep.trial import train_fn

# The parent run's tag for Tune's storage path: `--resume` resumes only from the spec's own
# storage, and says so when the sweep kept its state elsewhere (--storage given then, not now).
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
    """The latest unfinished sweep of the spec's experiment, restored from the spec's own Tune
    storage (`tune.storage_path`, which --storage sets); one-line UserError, before Ray starts,
    when there is none, when its id is not one this spec makes, when it kept its state
    elsewhere, or when its driver may still be running.

    Nothing the parent run's tags say is used as a path: `Tuner.restore` unpickles the
    `tuner.pkl` it finds, and anyone who reaches the tracking server can tag a run.
    """
    experiment = spec.experiment_name()
    run = latest_unfinished_sweep(tracking_uri, experiment)
    fix = "run without --resume to start a new sweep"
    if run is None:
        raise UserError(f"--resume: experiment {experiment!r} at {redact_uri(tracking_uri)} "
                        f"has no unfinished sweep; {fix}")
    tags = run.data.tags
    sweep_id = tags.get(SWEEP_TAG, "")
    # new_sweep_id's shape, with the spec's name (SAFE_NAME) in front: no '/', '..' or quote.
    if not re.fullmatch(rf"{re.escape(spec.name)}-\d{{8}}-\d{{6}}-[0-9a-f]{{6}}", sweep_id):
        raise UserError(f"--resume: the latest unfinished sweep of {experiment!r} has id "
                        f"{sweep_id[:100]!r}, not one raysweep makes for spec {spec.name!r}; {fix}")
    storage = absolute(spec.tune.storage_path)
    tagged = tags.get(STORAGE_TAG, storage)
    if tagged != storage:
        raise UserError(f"--resume: sweep {sweep_id} kept its Tune state in {tagged[:200]!r}, not "
                        f"in this spec's tune.storage_path {storage!r}; if that storage is yours, "
                        f"resume with --storage or --set tune.storage_path pointing there")
    _check_driver_gone(sweep_id, run.info.run_id, tags.get(DRIVER_TAG, ""),
                       running=run.info.status == "RUNNING")
    found = Resumable(sweep_id, storage)
    if not tune.Tuner.can_restore(found.tune_path):
        raise UserError(f"--resume: sweep {sweep_id} left no Tune state at {found.tune_path}; "
                        f"{fix}")
    return found


def _check_driver_gone(sweep_id: str, run_id: str, tag: str, running: bool) -> None:
    """UserError when the sweep's driver may still run: two drivers must never share one Tune
    directory. A live driver on this host is refused whatever MLflow says (another --resume
    may have just taken the sweep over); one on another host only while the run is RUNNING (a
    driver that ended marked it KILLED or FAILED on its way out)."""
    alive = driver_alive(tag)
    if alive is False or (alive is None and not running):
        return
    host, _, rest = tag.partition(":")
    pid = rest.partition(":")[0]
    if alive:
        raise UserError(f"--resume: sweep {sweep_id} is still running (its driver, pid {pid}, is "
                        f"alive on this host); wait for it, or stop it (Ctrl-C) and resume then")
    raise UserError(f"--resume: sweep {sweep_id} is RUNNING in MLflow and its driver ran on "
                    f"host {host[:100]!r} (pid {pid[:20]}), where this host cannot tell whether it "
                    f"is alive; resume it there, or if that machine is gone end its run first "
                    f"(MlflowClient().set_terminated({run_id!r}, 'KILLED'))")


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
            synthesis = SweepSynthesis(plan, store, planner, log)
            synthesis.start()
            if spec.synthesis.schedule == "staged":
                synthesis.fill_planned()
            varying = [name for name, axis in spec.axes().items() if axis.kind != "fixed"]
            callbacks = [MLflowTrialCallback(tracking_uri, experiment_id, parent_run_id,
                                             sweep_id, plan.fixed_params, planner,
                                             varying=varying),
                         TrialProgress(plan.trial_count, spec.tune.metric, spec.tune.mode,
                                       varying, log),
                         PoolProgress(ServicesView(planner.services), log)]
            tuner = _tuner(plan, planner, sweep_id, storage_path, callbacks, resume,
                           synthesis.reference_key)
            interrupt.in_tune = True
            results = tuner.fit()
            interrupt.in_tune = False
            interrupt.check()
            synthesis.finish(client, parent_run_id)
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
            original = sys.exc_info()[1]
            try:
                end_sweep_runs(client, experiment_id, parent_run_id, status)
            except Exception as error:
                if original is None:
                    raise
                # The sweep's own error is the one to show; this one only means MLflow may
                # still list some of its runs as RUNNING.
                first_line = (str(error).splitlines() or [type(error).__name__])[0]
                log(f"MLflow: could not mark the sweep's runs {status} "
                    f"({redact_text(first_line, [tracking_uri])})")
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
           callbacks: list, resume: Resumable | None, reference_key: str | None) -> tune.Tuner:
    """A new Tuner, or the interrupted one restored: finished trials stay finished, unfinished
    and errored ones continue from their last checkpoint.

    Its searcher is the data gate around the sweep's proposer, so a trial starts only once the
    images it reads exist; its stopper ends the sweep when a synthesis service has failed."""
    spec = plan.spec
    trainable = tune.with_resources(tune.with_parameters(train_fn, planner=planner),
                                    plan.resources)
    # A fixed list of configs is complete: Tune gets no space to resolve.
    space = {} if plan.configs is not None else plan.param_space
    # Tune keeps one trial pending at a time for a searcher it does not know; the gate hands
    # out only trials whose data exists, so let as many wait for a slot as could run at once.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(2, min(plan.trial_count, 64))))
    if resume:
        return tune.Tuner.restore(resume.tune_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=True, param_space=space)
    fixed = plan.configs is not None
    gate = DataGate(proposer(spec, plan.configs), planner, total=plan.trial_count,
                    lookahead=plan.trial_count if fixed else 1 + len(plan.extra),
                    reference_key=reference_key, extra=plan.extra)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=spec.tune.metric, mode=spec.tune.mode, num_samples=plan.trial_count,
            search_alg=gate, scheduler=scheduler(spec),
            max_concurrent_trials=spec.tune.max_concurrent_trials,
            # Trials share one process per slot: torch, timm and the data load once per
            # slot, not once per trial (seconds each on a laptop).
            reuse_actors=True),
        run_config=tune.RunConfig(
            stop=SynthesisWatch(ServicesView(planner.services)),
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
