"""The sweep's axes as Tune's search space, its search algorithm and its scheduler."""

from __future__ import annotations

import math

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from raysweep.spec import Axis, Spec


def param_space(spec: Spec) -> dict:
    """Tune's param space: each `sweep:` axis as a fixed value, a grid or a distribution."""
    axes = spec.axes()
    space = {name: _to_tune(axis, spec.tune.search_alg) for name, axis in axes.items()}
    ratio = axes["synthetic_ratio"]
    if spec.tune.search_alg == "grid" and ratio.kind == "grid":
        # Tune starts grid trials in order and the ratio varies slowest: largest training sets
        # first, so the trials left running at the end, beside idle slots, are the short ones.
        space["synthetic_ratio"] = tune.grid_search(sorted(ratio.values, reverse=True))
    return space


def trial_count(spec: Spec) -> int:
    """How many trials the search runs: the grid's size (1 without one) times num_samples."""
    grid = math.prod(len(a.values) for a in spec.axes().values()
                     if spec.tune.search_alg == "grid" and a.kind == "grid")
    return grid * spec.tune.num_samples


def search_and_scheduler(spec: Spec):
    """Tune's search algorithm and trial scheduler for the spec's `tune:` block."""
    settings = spec.tune
    if settings.search_alg == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(sampler=TPESampler(seed=settings.search_seed))
        if settings.max_concurrent_trials:
            search = ConcurrencyLimiter(search, max_concurrent=settings.max_concurrent_trials)
    else:
        search = BasicVariantGenerator(random_state=settings.search_seed)
    scheduler = None
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=spec.training.epochs,
                                  grace_period=min(settings.asha.grace_period, spec.training.epochs),
                                  reduction_factor=settings.asha.reduction_factor)
    return search, scheduler


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
