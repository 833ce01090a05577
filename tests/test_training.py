"""The training loop as a plain function: no Ray, same numbers for the same seed, resumable,
and (GPU tier) on CUDA with mixed precision."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep.training.compose import compose
from raysweep.data import load_splits
from raysweep.spec import TrainingSpec
from raysweep.training.device import autocast_dtype, resolve_device
from raysweep.training.loop import TrialData, train_classifier

DATASET = {"name": "digits", "options": {}, "per_class": 8, "val_fraction": 0.2,
           "test_fraction": 0.2, "split_seed": 0}


def tiny_run(epochs: int = 3, device: str = "cpu", resume: dict | None = None,
             augmentation: str = "classic+mixup", **training) -> list[tuple[dict, dict]]:
    """(metrics, state) of every epoch of a tiny trial on digits with a few fake synthetic rows."""
    splits = load_splits(DATASET)
    train = splits.train
    # Synthetic rows: real images flipped upside down, so the warm-up epoch has something to skip.
    images, labels, is_synthetic = compose(train.images, train.labels, train.images[:, ::-1],
                                           train.labels, 0.5, "add", 0)
    settings = TrainingSpec(epochs=epochs, batch_size=16, input_size=16, warmup_epochs=1,
                            **training)
    reports = []
    train_classifier(TrialData(images, labels, is_synthetic, splits), settings,
                     backbone="test_resnet", augmentation=augmentation, seed=3,
                     metric="val_balanced_accuracy", mode="max", device=resolve_device(device),
                     report=lambda metrics, state, final: reports.append(
                         (metrics, copy.deepcopy(state))),
                     resume=resume)
    return reports


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "train_seconds"}


def test_same_seed_gives_the_same_numbers_and_the_last_report_has_test_metrics():
    first, second = tiny_run(), tiny_run()
    assert [without_timing(m) for m, _ in first] == [without_timing(m) for m, _ in second]
    assert [m["epoch"] for m, _ in first] == [1, 2, 3]
    assert first[0][0]["train_images"] == 80 + 40 and first[0][0]["synthetic_images_used"] == 40
    last = first[-1][0]
    assert "test_accuracy" in last and "test_tta_accuracy" in last and last["stopped_early"] == 0.0
    assert all("test_accuracy" not in m for m, _ in first[:-1])
    assert all(np.isfinite(m["train_loss"]) for m, _ in first)


def test_resume_from_a_reported_state_continues_exactly():
    straight = tiny_run(epochs=3)
    resumed = tiny_run(epochs=3, resume=straight[0][1])
    assert [m["epoch"] for m, _ in resumed] == [2, 3]
    assert [without_timing(m) for m, _ in resumed] == [without_timing(m) for m, _ in straight[1:]]
    for name, tensor in straight[-1][1]["model"].items():
        assert torch.equal(tensor, resumed[-1][1]["model"][name]), name


def test_early_stopping_stops_and_says_so():
    reports = tiny_run(epochs=6, early_stopping_patience=1, augmentation="none")
    stopped = reports[-1][0]
    assert stopped["stopped_early"] == 1.0 and stopped["epoch"] < 6
    assert "test_accuracy" in stopped


def test_the_loop_runs_without_ray():
    """GPU test machines may have no Ray: importing and running the loop must not need it."""
    code = (
        "import sys; sys.modules['ray'] = None\n"  # any `import ray` now raises ImportError
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_training import tiny_run\n"
        "reports = tiny_run(epochs=2)\n"
        "import json; print(json.dumps({'epochs': len(reports), 'ray_blocked': "
        "sys.modules['ray'] is None, 'ray_modules': [m for m in sys.modules "
        "if m.startswith('ray.')]}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"epochs": 2, "ray_blocked": True,
                                                        "ray_modules": []}


def test_device_resolution_on_a_machine_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback; this machine has CUDA")
    # Logical GPUs (ray.init(num_gpus=2) without CUDA) give a trial 'cuda' it cannot use.
    assert resolve_device("cuda") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_loop_trains_on_cuda_with_mixed_precision():
    device = resolve_device("cuda")
    assert device.type == "cuda" and device.index is not None
    assert autocast_dtype(device) in (torch.bfloat16, torch.float16)
    reports = tiny_run(epochs=3, device="cuda")
    state = reports[-1][1]
    # Weights stay fp32 masters on the GPU; autocast only changes the compute dtype.
    assert all(t.device.type == "cuda" and t.dtype == torch.float32
               for t in state["model"].values() if t.is_floating_point())
    assert state["cuda_rng"] is not None
    losses = [m["train_loss"] for m, _ in reports]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]  # it learns under autocast
    resumed = tiny_run(epochs=3, device="cuda", resume=reports[0][1])
    assert [m["epoch"] for m, _ in resumed] == [2, 3]


def test_the_gpu_tier_collects_without_ray(tmp_path):
    """`python -m pytest -m gpu` on a machine without Ray collects every GPU test, no error."""
    blocker = tmp_path / "ray"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('no ray on this machine')\n")
    tests = Path(__file__).resolve().parent
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), str(tests.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu",
                           "-p", "no:cacheprovider", str(tests)], capture_output=True, text=True,
                          timeout=300, env=environment, cwd=tests.parent)
    assert done.returncode == 0, done.stdout[-3000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert any("test_the_loop_trains_on_cuda_with_mixed_precision" in c for c in collected)
    assert any("test_cap_applies_to_the_named_gpu" in c for c in collected)
    assert not any("test_synthesis_actors.py" in c for c in collected)
