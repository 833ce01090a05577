"""`search_spaces/mask.yaml`, timed: `raysweep run` in a fresh directory (trains the DDPM and
the reference classifier, fills 18 inpainted pools, runs 36 trials), then test accuracy per
mask region and fraction.

    python benchmarks/mask_sweep.py [--workdir DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _sweeps import REPO, latest_sweep, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="raysweep-mask-"))
    seconds = run_sweep(REPO / "search_spaces" / "mask.yaml", workdir, args.overrides)
    parent, children = latest_sweep(workdir, "mask")
    metrics = parent.data.metrics
    print(f"mask.yaml: {seconds / 60:.1f} min wall, {len(children)} trials; generator fit "
          f"{metrics.get('generator_fit_seconds', 0) / 60:.1f} min, reference classifier fit "
          f"{metrics.get('saliency_fit_seconds', 0):.0f}s (val accuracy "
          f"{metrics.get('saliency_val_accuracy', float('nan')):.3f}), "
          f"{metrics.get('synthetic_images_generated', 0):.0f} images repainted in "
          f"{metrics.get('synthetic_generation_seconds', 0) / 60:.1f} min")
    scores: dict[tuple[str, float, float], list[float]] = {}
    for run in children:
        params = run.data.params
        key = (params["mask_region"], float(params["mask_fraction"]),
               float(params["synthetic_ratio"]))
        scores.setdefault(key, []).append(run.data.metrics.get("test_accuracy", float("nan")))
    for (region, fraction, ratio), values in sorted(scores.items()):
        print(f"  {region:10s} fraction {fraction:.2f} ratio {ratio:.1f}: test accuracy "
              + ", ".join(f"{v:.3f}" for v in values))
    print(f"workdir: {workdir}")


if __name__ == "__main__":
    main()
