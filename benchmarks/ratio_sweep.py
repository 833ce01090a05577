"""The README's main job, timed: `raysweep run search_spaces/ratio.yaml` twice in a fresh
directory. The first run trains the DDPM; the second must reuse it and skip training.

    python benchmarks/ratio_sweep.py [--workdir DIR] [--set key=value ...]
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
    parser.add_argument("--once", action="store_true", help="skip the second (cached) run")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="raysweep-ratio-"))
    spec = REPO / "search_spaces" / "ratio.yaml"
    for attempt in ("first run (trains the generator)", "second run (reuses it)"):
        seconds = run_sweep(spec, workdir, args.overrides)
        parent, children = latest_sweep(workdir, "ratio")
        metrics = parent.data.metrics
        print(f"{attempt}: {seconds / 60:.1f} min wall, {len(children)} trials, generator fit "
              f"{metrics.get('generator_fit_seconds', 0) / 60:.1f} min "
              f"(reused={bool(metrics.get('generator_reused'))}), images generated "
              f"{metrics.get('synthetic_images_generated', 0):.0f} in "
              f"{metrics.get('synthetic_generation_seconds', 0):.0f}s, model loads "
              f"{metrics.get('generator_model_loads', 0):.0f}")
        if args.once:
            break
    by_ratio: dict[tuple[str, float], list[float]] = {}
    for run in children:
        key = (run.data.params["backbone"], float(run.data.params["synthetic_ratio"]))
        by_ratio.setdefault(key, []).append(run.data.metrics.get("test_accuracy", float("nan")))
    for (backbone, ratio), scores in sorted(by_ratio.items()):
        print(f"  {backbone:24s} ratio {ratio:4.1f}: test accuracy "
              + ", ".join(f"{s:.3f}" for s in scores))
    print(f"workdir: {workdir}")


if __name__ == "__main__":
    main()
