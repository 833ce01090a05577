"""Parameter importance of a sampled search, computed by Optuna's own evaluator.

The finished trials are replayed into an in-memory Optuna study (`optuna.trial.create_trial`)
and `optuna.importance.get_param_importances` (fANOVA) ranks the axes, the same figure Optuna
gives for a study it ran itself. Seed is included: an axis less important than the seed is
indistinguishable from noise.
"""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution

from raysweep.spec import NUMERIC_AXES


def param_importances(trials: pd.DataFrame, axes: list[str], metric: str) -> dict[str, float]:
    """{axis: importance} summing to 1; empty when fewer than two axes or trials can be ranked."""
    scored = trials.dropna(subset=[metric])
    names = [a for a in [*axes, "seed"] if a in scored and scored[a].nunique() > 1]
    if len(names) < 2 or len(scored) < 2:
        return {}
    # A seed is a label, not a quantity: categorical, like the named axes.
    numeric = {name for name in names if name in NUMERIC_AXES and name != "seed"}
    distributions = {}
    for name in names:
        if name in numeric:
            distributions[name] = FloatDistribution(float(scored[name].min()),
                                                    float(scored[name].max()))
        else:
            distributions[name] = CategoricalDistribution(sorted(scored[name].astype(str).unique()))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in scored.iterrows():
        params = {n: float(row[n]) if n in numeric else str(row[n]) for n in names}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row[metric])))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
