"""The typed trial plan: resolved once from a trial's config, the same on driver and worker."""

from __future__ import annotations

import pickle
import subprocess
import sys

from raysweep.plan import TrialPlan, build_plan, service_name
from raysweep.spec import load_spec

SPEC = """
name: plans
dataset: {name: digits, per_class: 8}
generator:
  name: ddpm
  options: {steps: 2, block_out_channels: [8, 16], image_size: 8, sample_steps: 2}
tune: {gpus_per_trial: 0.5}
sweep:
  synthetic_ratio: [0, 0.5]
  augmentation: [classic, vae+cutout]
  backbone: test_resnet
  seed: [0, 1]
"""


def test_trial_plan_names_generator_service_count_and_device(in_tmp_cwd, write_spec):
    plan = build_plan(load_spec(write_spec(SPEC)), num_cpus=4, num_gpus=1)
    planner = pickle.loads(pickle.dumps(plan.trial_planner("sweep-1", "/store")))
    trial = planner.trial_plan({"synthetic_ratio": 0.5, "augmentation": "vae+cutout",
                                "backbone": "test_resnet", "seed": 1})
    assert isinstance(trial, TrialPlan)
    assert (trial.generator, trial.service) == ("vae", service_name("sweep-1", "vae"))
    assert trial.online_augmentation == "cutout"
    assert trial.n_synthetic == round(0.5 * len(plan.splits.train)) and trial.seed == 1
    assert trial.device == "cuda" and trial.gpu_memory_fraction == 0.5
    assert trial.planner.store_root == "/store"
    # The spec's training block, with the torch threads it leaves open resolved: one per CPU
    # the trial holds (tune.cpus_per_trial, 1 here).
    assert trial.planner.training == plan.spec.training.model_copy(update={"threads": 1})

    default = planner.trial_plan({"synthetic_ratio": 0.5, "augmentation": "classic",
                                  "backbone": "test_resnet", "seed": 0})
    assert (default.generator, default.online_augmentation) == ("ddpm", "classic")
    baseline = planner.trial_plan({"synthetic_ratio": 0, "augmentation": "vae+cutout",
                                   "backbone": "test_resnet", "seed": 0})
    assert (baseline.generator, baseline.service, baseline.n_synthetic) == (None, None, 0)
    # Deterministic: the driver's tracking callback and the trial resolve the same plan.
    assert planner.trial_plan(trial.swept) == trial


def test_validate_does_not_import_the_trainable(in_tmp_cwd, write_spec):
    """`raysweep validate` plans without pulling in trial.py (and Ray Tune through it)."""
    path = write_spec(SPEC.replace("gpus_per_trial: 0.5", "gpus_per_trial: 0"))
    code = ("import sys\nfrom raysweep.cli import main\n"
            f"assert main(['validate', {str(path)!r}]) == 0\n"
            "print('raysweep.trial' in sys.modules, 'raysweep.training.loop' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "False False"
