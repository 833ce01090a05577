"""Generation work ratio per search space: images generated / synthetic images consumed by all
trials, plus model loads per sweep. Each distinct pool image should be generated exactly once,
and each actor should load its model once, whatever the number of trials.

Runs every spec in a fresh directory with a small DDPM, one epoch and the tiny `test_resnet`
backbone in place of each backbone (same number of trials), since the ratio does not depend on
the classifier.

    python benchmarks/generation_work.py [SPEC ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _sweeps import REPO, TINY_DDPM, latest_sweep, run_sweep

from raysweep.plan import build_plan
from raysweep.spec import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", type=Path)
    args = parser.parse_args()
    specs = args.specs or sorted((REPO / "search_spaces").glob("*.yaml"))
    for path in specs:
        spec = load_spec(path)
        backbones = spec.axes()["backbone"]
        same_count = "[" + ", ".join(["test_resnet"] * len(backbones.values)) + "]" \
            if backbones.kind in ("grid", "choice") else "test_resnet"
        if backbones.kind == "choice":
            same_count = "{choice: " + same_count + "}"
        workdir = Path(tempfile.mkdtemp(prefix=f"raysweep-work-{spec.name}-"))
        seconds = run_sweep(path, workdir, [TINY_DDPM, "training.epochs=1",
                                            f"sweep.backbone={same_count}"])
        parent, children = latest_sweep(workdir, spec.experiment_name())
        generated = parent.data.metrics.get("synthetic_images_generated", 0)
        consumed = sum(r.data.metrics.get("synthetic_images_used", 0) for r in children)
        # One pool per (source, seed), and per mask for inpainting sources.
        distinct = sum(p.count for p in build_plan(spec).pools)
        loads = parent.data.metrics.get("generator_model_loads", 0)
        ratio = generated / consumed if consumed else float("nan")
        print(f"{path.name:14s} trials {len(children):3d}  generated {generated:6.0f}  "
              f"consumed {consumed:7.0f}  work ratio {ratio:.3f}  distinct pool images {distinct:6d}"
              f"  model loads {loads:.0f} (actors {spec.synthesis.actors})  {seconds:.0f}s")


if __name__ == "__main__":
    main()
