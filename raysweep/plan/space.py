"""The sweep's axes as Tune's search space, its search algorithm and its scheduler."""

from __future__ import annotations

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from raysweep.spec import Axis, Spec

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



def _describe(axis: Axis) -> str:
    if axis.kind == "fixed":
        return f"{axis.values[0]!r}"
    return f"{axis.kind} {axis.values!r}"
