"""The share of trial-epochs ASHA (with early stopping) saves on optuna.yaml, against running
every trial to its last epoch.

    python benchmarks/asha_savings.py [--smoke-test] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _sweeps import REPO, TINY_DDPM, latest_sweep, run_sweep

from raysweep.spec import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true",
                        help="small DDPM and 8 trials: checks the script, not the figure")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    path = REPO / "search_spaces" / "optuna.yaml"
    overrides = list(args.overrides)
    if args.smoke_test:
        overrides += [TINY_DDPM, "tune.num_samples=8"]
    spec = load_spec(path, overrides)
    workdir = Path(tempfile.mkdtemp(prefix="raysweep-asha-"))
    seconds = run_sweep(path, workdir, overrides)
    _, children = latest_sweep(workdir, spec.experiment_name())
    ran = [int(r.data.metrics.get("epoch", 0)) for r in children]
    full = len(children) * spec.training.epochs
    best = max(r.data.metrics.get("val_balanced_accuracy", 0) for r in children)
    print(f"optuna.yaml: {len(children)} trials, {sum(ran)} of {full} trial-epochs run: ASHA and "
          f"early stopping saved {1 - sum(ran) / full:.0%}; epochs per trial {sorted(ran)}; "
          f"best val_balanced_accuracy {best:.3f}; {seconds / 60:.1f} min wall")


if __name__ == "__main__":
    main()
