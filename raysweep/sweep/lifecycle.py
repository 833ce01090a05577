"""How a sweep ends: FINISHED, FAILED, or KILLED by Ctrl-C / SIGTERM, in MLflow and in the exit code.

Tune's `fit()` answers SIGINT by stopping the trials, saving its state and returning normally,
so a caller cannot tell an interrupted sweep from a finished one. `Interruptible` owns SIGINT
and SIGTERM for the sweep: it records the signal and, while Tune runs, passes it on through
SIGUSR1 (Tune's own "stop gracefully" signal, so the experiment state is saved for `--resume`);
outside Tune it raises `SweepInterrupted` at once. A second signal stops without the grace.
`SweepInterrupted` is a `BaseException`, like KeyboardInterrupt, so no `except Exception` (a
retried MLflow call, a never-fatal callback) swallows it.
"""

from __future__ import annotations

import os
import signal
import threading

from mlflow.tracking import MlflowClient

from raysweep.tracking import filter_value, retrying


class SweepInterrupted(BaseException):
    """The sweep was stopped by a signal; `signum` sets the exit code (128 + signum)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class Interruptible:
    """Context manager: SIGINT and SIGTERM end the sweep cleanly (see the module docstring)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.in_tune = False
        self._previous: dict = {}

    def __enter__(self) -> "Interruptible":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; nothing to own here
        self._tune_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self.install()
        return self

    def install(self) -> None:
        """Own SIGINT and SIGTERM (again: `ray.init` installs a SIGTERM handler of its own that
        aborts the process)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)
        # Tune installs its SIGUSR1 handler inside fit(); until then, a forwarded SIGUSR1
        # must not take the default action (terminate).
        self._previous.setdefault(signal.SIGUSR1, signal.signal(signal.SIGUSR1, lambda *_: None))

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if self._previous:
            if self._tune_sigint is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._tune_sigint

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if first and self.in_tune:
            print(f"[raysweep] {signal.Signals(signum).name}: stopping the trials and saving the "
                  f"sweep's state (again to stop at once)", flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        raise SweepInterrupted(self.signum)

    def check(self) -> None:
        """Raise SweepInterrupted if a signal came while Tune was running."""
        if self.signum is not None:
            raise SweepInterrupted(self.signum)


def end_sweep_runs(client: MlflowClient, experiment_id: str, parent_run_id: str,
                   status: str) -> None:
    """Give every child run still RUNNING, then the parent, the sweep's final status.

    The parent is ended even when the children cannot be (a child MLflow refuses, a store that
    went away: after the first failure the remaining children are not tried, each would wait
    out its own retries); the first error is raised once the parent was tried.
    """
    errors = []
    try:
        children = retrying(client.search_runs)(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{filter_value('run', parent_run_id)}' "
                          f"and attributes.status = 'RUNNING'", max_results=10000)
    except Exception as error:
        errors.append(error)
        children = []
    for run in children:
        try:
            retrying(client.set_terminated)(run.info.run_id, status)
        except Exception as error:
            errors.append(error)
            break
    try:
        retrying(client.set_terminated)(parent_run_id, status)
    except Exception as error:
        errors.append(error)
    if errors:
        raise errors[0]
