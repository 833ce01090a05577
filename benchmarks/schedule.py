"""On-demand synthesis against the staged order, same spec, same machine, one run.

For each schedule (`synthesis.schedule: on_demand`, then `staged`) the spec runs in a fresh
directory (so both train the generator), and this prints:

- wall time, and on-demand / staged;
- when the first real-only trial started, and when the generator was ready (seconds after the
  sweep's parent run started): on demand, the first comes before the second;
- images generated / the largest prefix the trials read, summed over pools (1.0: nothing
  generated that no trial read; a last partial chunk aside);
- CPU-seconds reserved but idle (generator actors alive but not fitting or generating, times
  the CPUs they hold; trials waiting for their images, times theirs) and the machine's
  capacity left unused (CPUs x wall minus the CPU-seconds spent fitting, generating and
  training).

    python benchmarks/schedule.py [SPEC] [--set key=value ...] [--schedules on_demand,staged]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _sweeps import REPO, latest_sweep, run_sweep

from raysweep.plan import build_plan
from raysweep.spec import NUMERIC_AXES, load_spec


def prefixes_read(spec_path: Path, overrides: list[str], children) -> dict:
    """Per pool, the largest prefix any trial read (the trial's plan, resolved again)."""
    plan = build_plan(load_spec(spec_path, overrides))
    planner = plan.trial_planner("benchmark", "/unused")
    read: dict = {}
    for run in children:
        params = run.data.params
        config = {k: (float(v) if k in NUMERIC_AXES else v) for k, v in params.items()
                  if k in plan.param_space}
        config["seed"] = int(float(config["seed"]))
        if "real_per_class" in params and params["real_per_class"] != "None":
            config["real_per_class"] = int(params["real_per_class"])
        trial = planner.trial_plan(config)
        if trial.pool is not None:
            read[trial.pool] = max(read.get(trial.pool, 0), trial.n_synthetic)
    return read


def measure(spec_path: Path, schedule: str, overrides: list[str]) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"raysweep-schedule-{schedule}-"))
    settings = [*overrides, f"synthesis.schedule={schedule}"]
    seconds = run_sweep(spec_path, workdir, settings)
    spec = load_spec(spec_path, settings)
    parent, children = latest_sweep(workdir, spec.experiment_name())
    metrics = parent.data.metrics
    start = parent.info.start_time / 1000
    real = [r for r in children if float(r.data.params["synthetic_ratio"]) == 0]
    first_real = min((r.info.start_time / 1000 - start for r in real), default=float("nan"))
    ready = [v for k, v in metrics.items() if k.endswith("_ready_after_seconds")]
    read = prefixes_read(spec_path, settings, children)
    generated = metrics.get("synthetic_images_generated", 0.0)
    cpus = os.cpu_count() or 1
    actor_cpus = spec.synthesis.cpus_per_actor
    actor_idle = (metrics.get("generator_actor_seconds", 0.0)
                  - metrics.get("generator_busy_seconds", 0.0)) * actor_cpus
    trial_idle = sum(r.data.metrics.get("synthetic_wait_seconds", 0.0)
                     for r in children) * spec.tune.cpus_per_trial
    busy = metrics.get("generator_busy_seconds", 0.0) * max(1, int(actor_cpus)) + \
        sum(r.data.metrics.get("train_seconds", 0.0) for r in children) * \
        max(1, int(spec.tune.cpus_per_trial))
    return {"schedule": schedule, "wall": seconds, "trials": len(children),
            "first_real_trial": first_real, "generator_ready": max(ready, default=float("nan")),
            "generated": generated, "read": sum(read.values()),
            "reserved_idle": actor_idle + trial_idle, "capacity_idle": cpus * seconds - busy,
            "workdir": workdir}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=REPO / "search_spaces" / "ratio.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--schedules", default="on_demand,staged")
    args = parser.parse_args()
    results = []
    for schedule in args.schedules.split(","):
        result = measure(args.spec, schedule, args.overrides)
        results.append(result)
        ratio = result["generated"] / result["read"] if result["read"] else float("nan")
        print(f"{schedule:9s}: {result['wall'] / 60:.1f} min wall, {result['trials']} trials; "
              f"first real-only trial at {result['first_real_trial']:.0f}s, generator ready at "
              f"{result['generator_ready']:.0f}s; images generated {result['generated']:.0f} / "
              f"largest prefixes read {result['read']:.0f} = {ratio:.3f}; CPU-s reserved but "
              f"idle {result['reserved_idle']:.0f}, capacity unused {result['capacity_idle']:.0f} "
              f"({result['workdir']})", flush=True)
    if len(results) == 2:
        print(f"wall time {results[0]['schedule']} / {results[1]['schedule']}: "
              f"{results[0]['wall'] / results[1]['wall']:.2f}")


if __name__ == "__main__":
    main()
