"""The driver's view of the sweep's synthesis services: found by name, their progress cached.

The trial gate, the failure watch and the progress lines all ask the services where their pools
stand, many times a second between them; one view per asker keeps that to one round trip per
service every `poll_s`. Views are pickled with Tune's state (`--resume` restores them), so they
hold service names, never handles: handles are looked up again after a restore.
"""

from __future__ import annotations

import time

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.tune.stopper import Stopper

from raysweep.synthesis.actors import CALL_TIMEOUT_S


class ServicesView:
    """Progress of named synthesis services, refreshed at most every `poll_s` seconds.

    Args:
        services: synthesis source name -> the Ray actor name of its service.
        poll_s: how stale an answer may be.
    """

    def __init__(self, services: dict[str, str], poll_s: float = 1.0):
        self.services = dict(services)
        self.poll_s = poll_s
        self._handles: dict[str, object] = {}
        self._progress: dict[str, dict] = {}
        self.asked_at = -float("inf")

    def __getstate__(self) -> dict:
        return {"services": self.services, "poll_s": self.poll_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["services"], state["poll_s"])

    def handle(self, source: str):
        """The service of `source` (looked up by name once)."""
        if source not in self._handles:
            self._handles[source] = ray.get_actor(self.services[source])
        return self._handles[source]

    def progress(self, fresh: bool = False) -> dict[str, dict]:
        """source -> the service's `progress()` (state, error, pools), at most `poll_s` old;
        a service that does not answer in time keeps its last answer."""
        if not self.services:
            return {}
        if fresh or time.monotonic() - self.asked_at >= self.poll_s:
            sources = list(self.services)
            try:
                answers = ray.get([self.handle(s).progress.remote() for s in sources],
                                  timeout=CALL_TIMEOUT_S)
            except (GetTimeoutError, RayError, ValueError):
                answers = [self._progress.get(s, {"state": "unknown", "pools": {}})
                           for s in sources]
            self._progress = dict(zip(sources, answers))
            self.asked_at = time.monotonic()
        return self._progress

    def failure(self) -> str | None:
        """The first failed service's one-line error (it names its generator or pool), if any."""
        for answer in self.progress().values():
            if answer.get("state") == "failed":
                return str(answer.get("error"))
        return None


class SynthesisWatch(Stopper):
    """Stops the whole sweep once a synthesis service has failed (its actors died more often
    than allowed, or a wait timed out): the trials waiting for its pools would wait forever.
    The driver then raises the service's error as one line."""

    def __init__(self, view: ServicesView):
        self.view = view

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.view.failure() is not None
