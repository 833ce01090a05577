"""Live progress: each pool's images and rate, and the trial tally.

Tune's own table shows each trial; these lines answer the two questions a user waiting on a
sweep asks: how far are the pools, and how is the sweep going so far. On a terminal each pool
has one updating bar (tqdm, as diffusers and Tune users know); in a log (not a TTY) each pool
gets a line at most every `LOG_EVERY_S` seconds, and only when it changed. Rates come from the
images actually made (images generated / seconds spent generating them).
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from ray.tune import Callback

from raysweep.sweep.services import ServicesView

LOG_EVERY_S = 30.0


class PoolProgress(Callback):
    """One bar (TTY) or line (log) per pool with demand; `show()` refreshes it.

    As a Tune callback it refreshes at each step of Tune's loop; the views it reads are cached,
    so that costs a round trip per service per second at most.
    """

    def __init__(self, view: ServicesView, log: Callable[[str], None],
                 tty: bool | None = None):
        self.view, self.log = view, log
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bars: dict = {}
        self._shown: dict = {}
        self._logged_at = -float("inf")

    def __getstate__(self) -> dict:
        return {"view": self.view, "log": self.log, "tty": self.tty}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["view"], state["log"], state["tty"])

    def on_step_begin(self, iteration, trials, **info):
        self.show()

    def on_experiment_end(self, trials, **info):
        self.close()

    def show(self) -> None:
        pools = [(pool, status) for answer in self.view.progress().values()
                 for pool, status in answer.get("pools", {}).items() if status["wanted"] > 0]
        if self.tty:
            self._draw(pools)
        elif time.monotonic() - self._logged_at >= LOG_EVERY_S:
            self._write(pools)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def _draw(self, pools: list) -> None:
        from tqdm.auto import tqdm

        for pool, status in pools:
            bar = self._bars.get(pool)
            if bar is None:
                bar = self._bars[pool] = tqdm(total=status["wanted"], desc=pool.describe(),
                                              unit="img", position=len(self._bars),
                                              leave=True, dynamic_ncols=True)
            bar.total = max(bar.total, status["wanted"])
            bar.update(status["stored"] - bar.n)
            bar.set_postfix_str(_rate(status), refresh=False)
            bar.refresh()

    def _write(self, pools: list) -> None:
        changed = [(pool, status) for pool, status in pools
                   if self._shown.get(pool) != (status["stored"], status["wanted"])]
        for pool, status in changed:
            self._shown[pool] = (status["stored"], status["wanted"])
            self.log(f"pool {pool.describe()}: {status['stored']}/{status['wanted']} images, "
                     f"{_rate(status)}")
        if changed:
            self._logged_at = time.monotonic()


def _rate(status: dict) -> str:
    """images/s of the images this sweep made, and the time left at that rate."""
    if status["stored"] >= status["wanted"]:
        return "done"
    if not status["generated"] or not status["seconds"]:
        return "waiting for the generator"
    rate = status["generated"] / status["seconds"]
    return f"{rate:.1f} images/s, ETA {(status['wanted'] - status['stored']) / rate:.0f}s"


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
