"""MLflow tracking: one parent run per sweep, one nested child run per Tune trial.

The driver owns every MLflow write (a Tune callback), so trials running in parallel never
contend for the sqlite file. A child run is found again by its trial id tag, so a resumed
sweep continues each trial's run instead of adding a second one.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import botocore.exceptions
import mlflow
import requests
import sqlalchemy.exc
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from raysweep.errors import UserError
from raysweep.plan.trials import TrialPlanner
from raysweep.redaction import RedactingFilter, redact_text
from raysweep.trial import NODE_RESULT

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TRIAL_TAG = "raysweep.trial_id"
SWEEP_TAG = "raysweep.sweep"
# `host:pid:start` of the process driving the sweep, so `--resume` can tell a live driver.
DRIVER_TAG = "raysweep.driver"
# The Ray node that ran a trial (the latest, when a retry moved it).
NODE_TAG = "raysweep.node"
REPORTED_METRICS = ("epoch", "train_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1",
                    "train_seconds", "train_images", "real_images_used", "synthetic_images_used",
                    "synthetic_images_generated_for_trial", "synthetic_images_reused",
                    "synthetic_images_rejected", "synthetic_wait_seconds", "val_macro_auc",
                    "stopped_early")


def resolve_tracking_uri(cli_value: str | None, spec_value: str | None) -> str:
    """--tracking-uri, then MLFLOW_TRACKING_URI, then the spec, then sqlite in the cwd.

    A relative sqlite path is made absolute, because Tune moves trials to their own folders.
    """
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or spec_value or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


# One MLflow call waits at most this long in all, retries and their pauses included (plus the
# attempt under way when it runs out): with the tracking server down, a Tune callback must cost
# about a minute, not the ~25 min that 6 attempts around MLflow's own retries took.
TRACKING_BUDGET_S = 60.0
# MLflow's own HTTP retries inside each attempt, few and short (its defaults: 7 retries with
# doubling pauses, 120 s timeout each). Set only if the user has not set them.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
for _name, _value in HTTP_LIMITS.items():
    os.environ.setdefault(_name, _value)
# urllib3 logs each retry with the URL it retries, query tokens included.
logging.getLogger("urllib3.connectionpool").addFilter(RedactingFilter())

# What a tracking call raises when the store, the server or the network fails (not a bug):
# printed as one line by `never_fatal`, retried by `retrying` if `is_transient`.
TRACKING_ERRORS = (MlflowException, requests.exceptions.RequestException,
                   sqlalchemy.exc.SQLAlchemyError, botocore.exceptions.BotoCoreError,
                   botocore.exceptions.ClientError, OSError)
# MLflow error codes that say "try again later" (a locked sqlite file is TEMPORARILY_UNAVAILABLE).
_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED",
                    "RESOURCE_EXHAUSTED")
_TRANSIENT_TYPES = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.RetryError, requests.exceptions.ChunkedEncodingError,
                    sqlalchemy.exc.OperationalError, botocore.exceptions.ConnectionError,
                    botocore.exceptions.HTTPClientError, ConnectionError, TimeoutError)


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is one that may pass if tried again:
    the network or the server (MLflow wraps requests' errors), a busy database."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, _TRANSIENT_TYPES) or \
                getattr(error, "error_code", None) in _TRANSIENT_CODES or \
                (isinstance(error, sqlite3.OperationalError) and "locked" in str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


def retrying(call):
    """`call`, tried again after a transient error (`is_transient`) with pauses of 0.5 s, 1 s,
    2 s ... while `TRACKING_BUDGET_S` lasts; any other error, and the last transient one,
    propagates at once. Interrupts (`SweepInterrupted`, KeyboardInterrupt) are not `Exception`s
    and are never caught."""

    @functools.wraps(call)
    def wrapper(*args, **kwargs):
        deadline = time.monotonic() + TRACKING_BUDGET_S
        pause = 0.5
        while True:
            try:
                return call(*args, **kwargs)
            except Exception as error:
                if not is_transient(error) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, 8.0)

    return wrapper


def never_fatal(hook):
    """A Tune callback hook whose tracking errors (`TRACKING_ERRORS`), once retries run out, are
    printed in one redacted line, not raised: an exception in a callback would abort the whole
    sweep, and the trials are fine. A bug in the hook is raised at once, with its traceback."""

    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        try:
            return retrying(hook)(self, *args, **kwargs)
        except TRACKING_ERRORS as error:
            trial = kwargs.get("trial")
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            print(f"[raysweep] MLflow: {hook.__name__} for trial "
                  f"{getattr(trial, 'trial_id', '?')} not recorded "
                  f"({redact_text(first_line, [self.tracking_uri])}); the sweep goes on",
                  flush=True)

    return wrapper


# A value pasted into an MLflow filter string: the filter grammar has no escape for a quote, so
# only values that cannot hold one are accepted (raysweep's sweep ids, Tune's trial ids, run ids).
_FILTER_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def filter_value(what: str, value: str) -> str:
    """`value` itself if it is safe inside `'…'` in an MLflow filter; UserError otherwise."""
    if not isinstance(value, str) or not _FILTER_VALUE.fullmatch(value):
        raise UserError(f"{what} {str(value)[:100]!r} is not an id raysweep makes (letters, "
                        f"digits, '.', '_' and '-'); copy one from `raysweep ls`")
    return value


def driver_tag(pid: int | None = None) -> str:
    """`host:pid:start` naming a driver process (this one by default): the start stamp tells a
    live driver from a later process that reuses its pid."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_stamp(pid)}"


def driver_alive(tag: str) -> bool | None:
    """Whether the driver that `tag` names still runs: True or False on the host it ran on,
    None on another host (where nothing can be checked). A missing or odd tag is False."""
    host, _, rest = tag.partition(":")
    pid_text, _, stamp = rest.partition(":")
    if not host or not pid_text.isdigit():
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return _start_stamp(int(pid_text)) == stamp


def _start_stamp(pid: int) -> str:
    """The boot id and the process's start time in clock ticks (Linux /proc); "" elsewhere."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return f"{boot}/{stat.rsplit(')', 1)[1].split()[19]}"


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:  # another sweep created it a moment ago
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def log_params(client: MlflowClient, run_id: str, params: dict) -> None:
    existing = client.get_run(run_id).data.params
    fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for start in range(0, len(fresh), 100):
        client.log_batch(run_id, params=fresh[start:start + 100])


class MLflowTrialCallback(Callback):
    """Mirrors each Tune trial into a nested MLflow run: params, per-epoch metrics, artifacts."""

    def __init__(self, tracking_uri: str, experiment: str, parent_run_id: str, sweep_id: str,
                 fixed_params: dict, planner: TrialPlanner, varying: Sequence[str] = ()):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment
        self.parent_run_id = parent_run_id
        self.sweep_id = sweep_id
        self.fixed_params = fixed_params
        self.planner = planner
        self.varying = varying
        self.run_ids: dict[str, str] = {}
        self.nodes: dict[str, str] = {}

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def _run_for(self, trial) -> str:
        if trial.trial_id in self.run_ids:
            return self.run_ids[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{filter_value('trial', trial.trial_id)}' and "
                          f"tags.`{SWEEP_TAG}` = '{filter_value('sweep', self.sweep_id)}'")
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=run_name(trial.config, self.varying),
                tags={"mlflow.parentRunId": self.parent_run_id, TRIAL_TAG: trial.trial_id,
                      SWEEP_TAG: self.sweep_id})
            run_id = run.info.run_id
        self.run_ids[trial.trial_id] = run_id
        return run_id

    @never_fatal
    def on_trial_start(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        config = trial.config
        generator = self.planner.trial_plan(config).generator or "none"
        log_params(self.client, run_id, {**self.fixed_params, **config, "generator": generator})

    @never_fatal
    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_for(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in result.items()
                   if (key in REPORTED_METRICS or key.startswith("test_"))
                   and isinstance(value, (int, float))]
        self.client.log_batch(run_id, metrics=metrics)
        node = result.get(NODE_RESULT)
        if node and self.nodes.get(trial.trial_id) != node:
            self.client.set_tag(run_id, NODE_TAG, node)
            self.nodes[trial.trial_id] = node

    @never_fatal
    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        if trial.checkpoint is not None:
            with tempfile.TemporaryDirectory() as directory:
                trial.checkpoint.to_directory(directory)
                artifacts = Path(directory) / "artifacts"
                if artifacts.is_dir():
                    self.client.log_artifacts(run_id, str(artifacts))
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    @never_fatal
    def on_trial_error(self, iteration, trials, trial, **info):
        self.client.set_terminated(self._run_for(trial), RunStatus.to_string(RunStatus.FAILED))


def run_name(config: dict, varying: Sequence[str]) -> str:
    """A child run is named by the values it varies (what a reader compares in the MLflow UI);
    sampled floats are rounded so the name stays readable."""
    def shown(value):
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return " ".join(f"{key}={shown(config[key])}" for key in varying if key in config) or "trial"


def open_store(tracking_uri: str) -> MlflowClient:
    """A client on the store, creating a new sqlite database under a file lock: two sweeps that
    start at once on a fresh mlflow.db would otherwise both run MLflow's schema migration and
    one would fail (`table _alembic_tmp_metrics already exists`)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return MlflowClient(tracking_uri)
    import fcntl

    with open(f"{tracking_uri[len(prefix):]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)  # creates and migrates the schema
        return client


def start_parent_run(tracking_uri: str, experiment: str, sweep_id: str, run_name: str,
                     tags: dict | None = None,
                     artifact_location: str | None = None) -> tuple[str, str]:
    """Create (or find, when resuming) the sweep's parent run; returns (experiment_id, run_id)."""
    client = open_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    exp_id = experiment_id(client, experiment, artifact_location)
    found = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = "
                                                         f"'{filter_value('sweep', sweep_id)}' and "
                                                         f"tags.`raysweep.role` = 'sweep'")
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, DRIVER_TAG, driver_tag())
        return exp_id, run_id
    run = client.create_run(exp_id, run_name=run_name,
                            tags={SWEEP_TAG: sweep_id, "raysweep.role": "sweep",
                                  DRIVER_TAG: driver_tag(), **(tags or {})})
    return exp_id, run.info.run_id


def latest_unfinished_sweep(tracking_uri: str, experiment: str):
    """The newest parent run of `experiment` that did not finish (RUNNING after a killed
    driver, KILLED after Ctrl-C, FAILED), or None. A sqlite store that does not exist yet has
    none, and is not created by asking."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not Path(tracking_uri[len(prefix):]).exists():
        return None
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id],
                              filter_string="tags.`raysweep.role` = 'sweep' and "
                                            "attributes.status != 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None
