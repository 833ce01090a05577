"""Time `raysweep report` on a 100-trial sweep: 100 MLflow child runs recorded in a fresh sqlite
store (5 ratios x 2 backbones x 10 seeds, as `raysweep run` records them), then the report built
and written in every format, as the CLI does it."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from raysweep.cli import main  # noqa: E402
from recorded_sweeps import record_sweep  # noqa: E402


def trials() -> list[dict]:
    return [{"synthetic_ratio": r, "augmentation": "none", "backbone": b, "seed": s,
             "metrics": {"test_balanced_accuracy": 0.8 + 0.02 * r + 0.01 * s % 3,
                         "train_seconds": 10.0, "synthetic_images_used": 500 * r}}
            for r in (0, 0.5, 1, 1.5, 2) for b in ("resnet10t", "resnet18") for s in range(10)]


def run() -> None:
    with tempfile.TemporaryDirectory() as directory:
        uri = f"sqlite:///{directory}/mlflow.db"
        start = time.perf_counter()
        sweep = record_sweep(uri, "bench", trials())
        recorded = time.perf_counter() - start
        start = time.perf_counter()
        code = main(["report", "--sweep", sweep, "--tracking-uri", uri,
                     "--out", f"{directory}/report"])
        seconds = time.perf_counter() - start
        assert code == 0
    print(f"recording 100 trial runs: {recorded:.1f} s")
    print(f"report of a 100-trial sweep (png,html,csv,json, logged on the parent run): "
          f"{seconds:.1f} s")


if __name__ == "__main__":
    run()
