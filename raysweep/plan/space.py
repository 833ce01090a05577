"""The sweep's axes as Tune's search space, the searcher that proposes trials, the scheduler.

Grid and random search are known up front: every trial's config is one of Tune's own variants
of the param space (`generate_variants`: grid points, seeded random draws), drawn here once,
largest training sets first, so the trials left running at the end beside idle slots are the
short ones; `FixedConfigs` hands them out. Optuna (TPE) proposes configs as trials finish.
The sweep wraps either in its data gate (`raysweep/sweep/gate.py`).
"""

from __future__ import annotations

import pickle

import numpy as np
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from raysweep.spec import Axis, Spec


def param_space(spec: Spec) -> dict:
    """Tune's param space: each `sweep:` axis as a fixed value, a grid or a distribution."""
    return {name: _to_tune(axis, spec.tune.search_alg) for name, axis in spec.axes().items()}


def fixed_configs(spec: Spec, space: dict) -> list[dict] | None:
    """Every trial's config for grid and random search (Tune's variants of `space`,
    `num_samples` times, random draws seeded by `tune.search_seed`), largest ratio first;
    None for Optuna, which proposes them as it learns."""
    if spec.tune.search_alg == "optuna":
        return None
    rng = np.random.default_rng(spec.tune.search_seed)
    configs = [config for _ in range(spec.tune.num_samples)
               for _, config in generate_variants(space, random_state=rng)]
    return sorted(configs, key=lambda c: -float(c["synthetic_ratio"]))


def proposer(spec: Spec, configs: list[dict] | None) -> Searcher:
    """The searcher that proposes the sweep's configs: the fixed list, or seeded TPE."""
    if configs is not None:
        return FixedConfigs(configs)
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=TPESampler(seed=spec.tune.search_seed))


def scheduler(spec: Spec):
    """Tune's trial scheduler for the spec's `tune:` block: ASHA, or None (first in, first out)."""
    settings = spec.tune
    if settings.scheduler != "asha":
        return None
    return ASHAScheduler(time_attr="training_iteration", max_t=spec.training.epochs,
                         grace_period=min(settings.asha.grace_period, spec.training.epochs),
                         reduction_factor=settings.asha.reduction_factor)


class FixedConfigs(Searcher):
    """Hands out a fixed list of complete configs, in order, then FINISHED."""

    def __init__(self, configs: list[dict]):
        super().__init__()
        self.configs = [dict(c) for c in configs]
        self.next = 0

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return dict(self.configs[self.next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"configs": self.configs, "next": self.next}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self.configs, self.next = state["configs"], state["next"]


def _to_tune(axis: Axis, search_alg: str):
    values = axis.values
    if axis.kind == "fixed":
        return values[0]
    if axis.kind == "grid":
        return tune.grid_search(values) if search_alg == "grid" else tune.choice(values)
    if axis.kind == "choice":
        return tune.choice(values)
    if axis.kind == "uniform":
        return tune.uniform(*values)
    if axis.kind == "loguniform":
        return tune.loguniform(*values)
    return tune.randint(int(values[0]), int(values[1]) + 1)  # spec bounds are inclusive


def describe_axis(axis: Axis) -> str:
    if axis.kind == "fixed":
        return f"{axis.values[0]!r}"
    return f"{axis.kind} {axis.values!r}"
