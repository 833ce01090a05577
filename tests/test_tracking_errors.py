"""What MLflow failures cost a sweep: transient errors retried within one bounded total wait, a
bug raised at once with its traceback, interrupts never swallowed, filters never built from
user text, and a sweep's end that neither hides its own error nor leaves runs RUNNING.
Real MLflow on sqlite, and a tracking URI whose server is down (a closed loopback port)."""

from __future__ import annotations

import socket
import uuid
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST,
                                          TEMPORARILY_UNAVAILABLE)
from mlflow.tracking import MlflowClient

from raysweep import tracking
from raysweep.cli import main
from raysweep.errors import UserError
from raysweep.sweep.lifecycle import SweepInterrupted, end_sweep_runs
from recorded_sweeps import record_sweep


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One sqlite store for the module (creating one costs seconds); tests use their own
    experiments in it."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    record_sweep(uri, "ratio", [{"synthetic_ratio": 0, "seed": 0, "metrics": {"m": 1.0}}])
    return uri


class FakeClock:
    """Stands in for the `time` module inside tracking.py: sleeping advances the clock."""

    def __init__(self):
        self.now, self.pauses = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def time(self) -> float:
        return self.now


def counting(error: BaseException):
    """A call that always raises `error`, and counts how often it was made."""
    calls = []

    def call():
        calls.append(1)
        raise error

    return call, calls


def test_a_transient_error_is_retried_only_within_the_total_budget(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(tracking, "time", clock)
    monkeypatch.setattr(tracking, "TRACKING_BUDGET_S", 20.0)
    call, calls = counting(MlflowException("database is locked",
                                           error_code=TEMPORARILY_UNAVAILABLE))
    with pytest.raises(MlflowException, match="locked"):
        tracking.retrying(call)()
    assert sum(clock.pauses) <= 20.0 and len(calls) == len(clock.pauses) + 1 >= 4


@pytest.mark.parametrize("error", [TypeError("a bug"), KeyError("a bug"),
                                   MlflowException("Changing param values is not allowed",
                                                   error_code=INVALID_PARAMETER_VALUE),
                                   SweepInterrupted(2), KeyboardInterrupt()])
def test_bugs_refusals_and_interrupts_are_not_retried(monkeypatch, error):
    clock = FakeClock()
    monkeypatch.setattr(tracking, "time", clock)
    call, calls = counting(error)
    with pytest.raises(type(error)):
        tracking.retrying(call)()
    assert len(calls) == 1 and clock.pauses == []


def test_an_error_raised_from_a_connection_failure_is_transient():
    import requests

    try:
        try:
            raise requests.exceptions.ConnectionError("refused")
        except Exception as error:
            raise MlflowException(f"API request failed with exception {error}")
    except MlflowException as wrapped:
        assert tracking.is_transient(wrapped)
    assert not tracking.is_transient(MlflowException("no such experiment",
                                                     error_code=RESOURCE_DOES_NOT_EXIST))


def fake_trial(trial_id: str = "t1") -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"synthetic_ratio": 0}, checkpoint=None)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_is_down_costs_one_bounded_wait_and_one_redacted_line(monkeypatch, capsys,
                                                                           caplog):
    """The real MLflow client against a closed port: MLflow's own HTTP retries, then ours,
    give up within the budget; the line printed names neither the password nor the token."""
    monkeypatch.setattr(tracking, "TRACKING_BUDGET_S", 2.0)
    uri = f"http://mlf:s3cr3t-pass@127.0.0.1:{closed_port()}/?token=s3cr3t-token"
    callback = tracking.MLflowTrialCallback(uri, "1", "parent", "life-20261201-000000-abcdef",
                                            {}, planner=None)
    callback.on_trial_result(iteration=0, trials=[], trial=fake_trial(),
                             result={"epoch": 1, "val_accuracy": 0.5})
    captured = capsys.readouterr()
    out = captured.out
    assert "on_trial_result for trial t1 not recorded" in out and "the sweep goes on" in out
    assert "s3cr3t" not in out and "mlf:***@127.0.0.1" in out
    # urllib3's retry warnings quote the URL too (logged, not printed: caplog sees them).
    assert all("s3cr3t" not in record.getMessage() for record in caplog.records)


def test_a_bug_in_a_callback_hook_is_raised_at_once(store_uri, capsys):
    """No trial planner: on_trial_start fails on our side, not MLflow's. That is a traceback
    (it aborts the sweep), not 15 s of retries and a 'not recorded' line."""
    uri = store_uri
    experiment, parent = tracking.start_parent_run(uri, "bug", "bug-20261201-000000-abcdef", "s")
    callback = tracking.MLflowTrialCallback(uri, experiment, parent, "bug-20261201-000000-abcdef",
                                            {}, planner=None)
    with pytest.raises(AttributeError, match="trial_plan"):
        callback.on_trial_start(iteration=0, trials=[], trial=fake_trial())
    assert "not recorded" not in capsys.readouterr().out


def test_an_interrupt_during_a_callback_is_never_swallowed(store_uri, monkeypatch):
    uri = store_uri
    experiment, parent = tracking.start_parent_run(uri, "int", "int-20261201-000000-abcdef", "s")
    callback = tracking.MLflowTrialCallback(uri, experiment, parent, "int-20261201-000000-abcdef",
                                            {}, planner=None)
    calls = []

    def second_ctrl_c(*args, **kwargs):  # what Interruptible raises on a second signal
        calls.append(1)
        raise SweepInterrupted(2)

    monkeypatch.setattr(MlflowClient, "log_batch", second_ctrl_c)
    with pytest.raises(SweepInterrupted):
        callback.on_trial_result(iteration=0, trials=[], trial=fake_trial(),
                                 result={"epoch": 1, "val_accuracy": 0.5})
    assert calls == [1]


@pytest.mark.parametrize("sweep", ["x' or tags.a = 'b", "../../etc", "a\nb"])
def test_report_never_pastes_user_text_into_a_filter(store_uri, capsys, sweep):
    assert main(["report", "--sweep", sweep, "--tracking-uri", store_uri]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not an id raysweep makes" in err


def parent_with_children(uri: str, children: int = 2):
    sweep = f"end-20261201-000000-{uuid.uuid4().hex[:6]}"
    experiment, parent = tracking.start_parent_run(uri, "end", sweep, sweep)
    client = MlflowClient(uri)
    kids = [client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
            for _ in range(children)]
    return client, experiment, parent, kids


@pytest.mark.parametrize("failing", ["search_runs", "a child"])
def test_the_parent_is_ended_even_when_its_children_cannot_be(store_uri, monkeypatch, failing):
    client, experiment, parent, kids = parent_with_children(store_uri)
    refused = MlflowException("refused", error_code=INVALID_PARAMETER_VALUE)
    if failing == "search_runs":
        def search_runs(*args, **kwargs):
            raise refused

        monkeypatch.setattr(client, "search_runs", search_runs)
    else:
        set_terminated = client.set_terminated

        def set_terminated_but_one(run_id, status):
            if run_id == kids[0]:
                raise refused
            set_terminated(run_id, status)

        monkeypatch.setattr(client, "set_terminated", set_terminated_but_one)
    with pytest.raises(MlflowException, match="refused"):
        end_sweep_runs(client, experiment, parent, "FAILED")
    assert client.get_run(parent).info.status == "FAILED"


def test_a_failed_end_does_not_replace_the_sweeps_own_error(store_uri, tmp_path, monkeypatch,
                                                           capsys, write_spec):
    """run_sweep's own error reaches the caller even when marking the runs fails too."""
    from raysweep.plan import build_plan
    from raysweep.spec import load_spec
    from raysweep.sweep import run

    spec = load_spec(write_spec({"name": "end", "dataset": {"name": "digits", "per_class": 4},
                                 "tune": {"storage_path": str(tmp_path / "tune")},
                                 "sweep": {"backbone": "test_resnet"}}))
    plan = build_plan(spec)

    def the_sweeps_error(*args):
        raise RuntimeError("the sweep's own error")

    def end_fails(*args):
        raise MlflowException("tracking store gone", error_code=TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(run, "_log_spec", the_sweeps_error)
    monkeypatch.setattr(run, "end_sweep_runs", end_fails)
    with pytest.raises(RuntimeError, match="the sweep's own error"):
        run.run_sweep(plan, store_uri)
    assert "could not mark the sweep's runs FAILED (tracking store gone)" in capsys.readouterr().out


def test_an_mlflow_error_at_the_cli_is_one_redacted_line(tmp_path, capsys, monkeypatch):
    """`raysweep ls` against a tracking server that is down: one line, exit 1, no password."""
    monkeypatch.setattr(tracking, "TRACKING_BUDGET_S", 1.0)
    uri = f"http://mlf:s3cr3t-pass@127.0.0.1:{closed_port()}"
    assert main(["ls", "--tracking-uri", uri]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raysweep: error: MLflow:")
    assert "s3cr3t" not in err


def test_a_bugs_traceback_at_the_cli_hides_credentials(monkeypatch, capsys):
    from raysweep import cli

    uri = "postgresql://mlf:s3cr/3t@db.example.com/mlflow"

    def buggy(args):
        raise ValueError(f"cannot open {uri}")

    monkeypatch.setattr(cli, "cmd_ls", buggy)
    assert main(["ls", "--tracking-uri", uri]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: cannot open" in err
    assert "s3cr" not in err and "mlf:***@db.example.com" in err


def test_filter_value_accepts_raysweep_ids_only():
    assert tracking.filter_value("sweep", "ratio-20261124-011502-3fa9c1")
    assert tracking.filter_value("run", "0f3c" * 8)
    with pytest.raises(UserError, match="not an id"):
        tracking.filter_value("sweep", "a' OR '1'='1")
