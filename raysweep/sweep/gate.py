"""Trials start when their own data exists: a Tune searcher that holds a trial back until its
pool prefix (and, for filtering, the reference classifier) is ready.

Tune starts a trial as soon as its search algorithm hands it one and a slot is free, so a trial
waiting for images would hold its CPU or GPU idle. The `DataGate` wraps the sweep's searcher:
a config whose data is not ready stays with the gate (no trial, no resources), its demand goes
to the synthesis services (`want`), and it is handed to Tune once its prefix is stored and
checked. Configs that need no synthetic image (ratio 0, the yardstick's real-only arms) pass at
once, so they run while generators train.

Grid and random search hand the gate all their configs up front (`plan.space.FixedConfigs`),
so every pool fills ahead, in trial order, exactly as far as the
trials will read. A model-based searcher (Optuna) is asked one config at a time and learns
from the trials before the next one; its pools grow only as far as its suggestions ask. When no
held or future config can ask a source for more images, the gate releases that source's
generator actors, and their GPUs and CPUs go to trials.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from dataclasses import dataclass

from ray.tune.search import Searcher

from raysweep.plan.trials import TrialPlanner
from raysweep.store import SyntheticStore
from raysweep.sweep.services import ServicesView
from raysweep.synthesis.identity import PoolId


@dataclass
class _Held:
    inner_id: str
    config: dict


class DataGate(Searcher):
    """Hands Tune a config only once the data its trial reads exists.

    Args:
        inner: the searcher that proposes configs (`FixedConfigs`, or OptunaSearch).
        planner: resolves a config into its trial plan (which pool, how many images).
        total: how many trials the sweep runs in all.
        lookahead: how many not-yet-ready configs to take from `inner` at once (all, for a
            fixed list; one, for a searcher that learns from finished trials).
        reference_key: the store key of the reference classifier that filtering trials need;
            None when no trial filters.
        extra: configs to run besides `inner`'s, never shown to it (the yardstick's real-only
            arms beside a model-based searcher).
        poll_s: how stale the services' progress may be.
    """

    def __init__(self, inner: Searcher, planner: TrialPlanner, total: int, lookahead: int,
                 reference_key: str | None = None, extra: list[dict] | None = None,
                 poll_s: float = 1.0):
        super().__init__()
        self.inner = inner
        self.planner = planner
        self.total = total
        self.lookahead = lookahead
        self.reference_key = reference_key
        self.view = ServicesView(planner.services, poll_s)
        # Extra configs wait here from the start; `inner` knows nothing of them (no inner id).
        self.held: list[_Held] = [_Held("", dict(config)) for config in extra or []]
        self.handed = 0  # configs given to Tune, over the sweep's whole life
        self.drawn = 0  # configs taken from `inner`
        self.inner_done = False
        self.aliases: dict[str, str] = {}  # Tune's trial id -> the id `inner` knows it by
        self.asked: dict[PoolId, tuple[int, float]] = {}  # demand sent, and when
        self.released: set[str] = set()
        self._reference_ready = False

    # -- Searcher -----------------------------------------------------------------------------

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric, self._mode = metric, mode
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        self._draw()
        self._ask()
        progress = self.view.progress()
        config = None
        for index, held in enumerate(self.held):
            if self._ready(held.config, progress):
                del self.held[index]
                if held.inner_id:
                    self.aliases[trial_id] = held.inner_id
                self.handed += 1
                config = held.config
                break
        self._release(progress)
        if config is not None:
            return config
        if self.inner_done and not self.held:
            return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.aliases:
            self.inner.on_trial_result(self.aliases[trial_id], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self.aliases:
            self.inner.on_trial_complete(self.aliases[trial_id], result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        with tempfile.TemporaryDirectory() as directory:
            inner_path = os.path.join(directory, "inner.pkl")
            self.inner.save(inner_path)
            with open(inner_path, "rb") as handle:
                inner = handle.read()
        state = {k: v for k, v in self.__dict__.items() if k != "inner"}
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"state": state, "inner": inner}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            saved = pickle.load(handle)
        self.__dict__.update(saved["state"])
        with tempfile.TemporaryDirectory() as directory:
            inner_path = os.path.join(directory, "inner.pkl")
            with open(inner_path, "wb") as handle:
                handle.write(saved["inner"])
            self.inner.restore(inner_path)
        self.asked = {}  # a restarted sweep's services know nothing yet: ask again

    # -- the gate -----------------------------------------------------------------------------

    def _draw(self) -> None:
        """Take configs from `inner` while fewer than `lookahead` wait here."""
        while not self.inner_done and len(self.held) < self.lookahead and \
                self.handed + len(self.held) < self.total:
            inner_id = f"gate-{self.drawn}"
            config = self.inner.suggest(inner_id)
            if config is None:
                break
            if config == Searcher.FINISHED:
                self.inner_done = True
                break
            self.drawn += 1
            self.held.append(_Held(inner_id, config))
        if self.handed + len(self.held) >= self.total:
            self.inner_done = True

    def _ask(self) -> None:
        """Send the services the demand of every held config (each rise once; again when a
        service answers with less, e.g. after it restarted)."""
        demand: dict[PoolId, tuple[int, str]] = {}
        for held in self.held:
            plan = self.planner.trial_plan(held.config)
            if plan.pool is not None and plan.n_synthetic > demand.get(plan.pool, (0, ""))[0]:
                demand[plan.pool] = (plan.n_synthetic, plan.requester)
        progress = self.view.progress()
        for pool, (count, requester) in demand.items():
            asked, sent_at = self.asked.get(pool, (0, -float("inf")))
            known = progress.get(pool.source, {}).get("pools", {}).get(pool, {}).get("wanted", 0)
            forgotten = known < asked and self.view.asked_at > sent_at
            if count > asked or forgotten:
                self.view.handle(pool.source).want.remote(pool, max(count, asked), requester)
                self.asked[pool] = (max(count, asked), time.monotonic())

    def _ready(self, config: dict, progress: dict) -> bool:
        plan = self.planner.trial_plan(config)
        if plan.filter_threshold > 0 and plan.n_synthetic and not self._reference_stored():
            return False
        if plan.pool is None:
            return True
        answer = progress.get(plan.pool.source, {})
        if answer.get("state") == "failed":
            return True  # the trial fails at once with the service's error; the sweep stops
        return answer.get("pools", {}).get(plan.pool, {}).get("ready", 0) >= plan.n_synthetic

    def _reference_stored(self) -> bool:
        if not self._reference_ready and self.reference_key is not None:
            store = SyntheticStore(self.planner.store_root)
            self._reference_ready = store.has_classifier(self.reference_key)
        return self._reference_ready or self.reference_key is None

    def _release(self, progress: dict) -> None:
        """Release the actors of every source that no held or future config can ask."""
        future = not self.inner_done
        asking = {self.planner.trial_plan(h.config).generator for h in self.held}
        for source in self.planner.services:
            if source in self.released or future or source in asking:
                continue
            self.view.handle(source).release_actors.remote()
            self.released.add(source)

