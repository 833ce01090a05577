"""Live progress on the terminal: generation rate and ETA per pool, and the trial tally.

Tune's own table shows each trial; these lines answer the two questions a user waiting on a
sweep asks: how long until the pools are ready, and how is the sweep going so far.
"""

from __future__ import annotations

import time
from typing import Callable

import ray
from ray.tune import Callback

from raysweep.store import SyntheticStore

POLL_SECONDS = 15.0


def wait_for_pools(refs: list, requests: list, keys: list[str], store: SyntheticStore,
                   log: Callable[[str], None], timeout: float) -> list[dict]:
    """`ray.get(refs, timeout=timeout)`, logging every POLL_SECONDS each unfinished pool's
    images so far, its rate (images/s) and the time left at that rate."""
    start = time.perf_counter()
    before = [store.count(key) for key in keys]
    pending = set(range(len(refs)))
    while pending and time.perf_counter() - start < timeout:
        done, _ = ray.wait([refs[i] for i in pending], num_returns=len(pending),
                           timeout=POLL_SECONDS)
        pending -= {refs.index(ref) for ref in done}
        elapsed = time.perf_counter() - start
        for i in sorted(pending):
            have, wanted = store.count(keys[i]), requests[i].count
            rate = (have - before[i]) / elapsed
            eta = f"ETA {(wanted - have) / rate:.0f}s" if rate > 0 else "ETA unknown yet"
            log(f"pool {keys[i]} ({requests[i].pool.describe()}): "
                f"{have}/{wanted} images, {rate:.1f} images/s, {eta}")
    return ray.get(refs, timeout=max(1.0, timeout - (time.perf_counter() - start)))


class TrialProgress(Callback):
    """One line whenever a trial starts, finishes or fails: running / done / failed, and the
    best value of the sweep's metric so far with the values that reached it."""

    def __init__(self, total: int, metric: str, mode: str, varying: list[str],
                 log: Callable[[str], None]):
        self.total, self.metric, self.mode, self.varying, self.log = total, metric, mode, varying, log
        self.running: set[str] = set()
        self.done = self.failed = 0
        self.best: tuple[float, str] | None = None

    def _tally(self) -> None:
        best = "none yet" if self.best is None else f"{self.best[0]:.4f} ({self.best[1]})"
        self.log(f"trials: {len(self.running)} running, {self.done} done, {self.failed} failed "
                 f"of {self.total}; best {self.metric}: {best}")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self._tally()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is None:
            return
        sign = 1 if self.mode == "max" else -1
        if self.best is None or sign * value > sign * self.best[0]:
            where = " ".join(f"{k}={trial.config[k]}" for k in self.varying if k in trial.config)
            self.best = (float(value), where or trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done += 1
        self._tally()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.failed += 1
        self._tally()
