"""The Tune trainable: resolve the trial's plan, fetch its synthetic images, run the loop.

`train_fn(config, planner)` is thin on purpose. The plan says which generator's pool and how
many of its images the trial reads; the synthesis service makes sure they exist; the training
loop (`raysweep.training`, no Ray) trains on the device Ray gave the trial. Each epoch goes to
`tune.report` with a checkpoint, so a trial resumes where it stopped; the last one adds an
`artifacts/` folder (confusion matrix, the synthetic images used, and for inpainting trials a
gallery original | saliency | mask | repainted) that tracking logs to MLflow.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune

from raysweep.training.compose import compose, soft_targets
from raysweep.data import load_splits
from raysweep.devices import cap_gpu_memory, explain_out_of_memory
from raysweep.figures import img2img_gallery, inpaint_gallery
from raysweep.plan.trials import TrialPlanner
from raysweep.quality.filtering import keep_confident
from raysweep.store import SyntheticStore
from raysweep.synthesis.service import ENSURE_TIMEOUT_S
from raysweep.training.reference import ensure_reference_classifier
from raysweep.training.device import resolve_device
from raysweep.training.loop import FinalEvaluation, TrialData, train_classifier
from raysweep.training.artifacts import write_trial_artifacts

# The result key naming the Ray node a trial ran on (the tracking callback tags its run).
NODE_RESULT = "ray_node_id"


def write_gallery(directory: Path, plan, pool, train) -> None:
    """What a trial's synthetic images were made from, two sources per class: inpainted
    (original | saliency | mask | repainted) or img2img (source | its variants)."""
    if pool is None or pool.sources is None:
        return
    class_names = list(train.class_names)
    if pool.masks is not None:
        inpaint_gallery(train.images[pool.sources], pool.saliency, pool.masks, pool.images,
                        pool.labels, class_names, directory / "inpaint_gallery.png",
                        title=f"{plan.pool.mask.describe()}: original | saliency | mask | "
                              f"repainted")
    elif pool.source_labels is not None:
        img2img_gallery(train.images, pool.sources, pool.images, pool.labels, pool.weights,
                        train.labels, class_names, directory / "img2img_gallery.png",
                        title=f"{plan.pool.variation.describe()}: source | variants (target "
                              f"class, its label share)")


def train_fn(config: dict, planner: TrialPlanner) -> None:
    """Tune trainable. `config` holds the swept axes; `planner` resolves them."""
    plan = planner.trial_plan(config)

    # 1. Real splits, plus the synthetic prefix this trial reads.
    splits = load_splits(plan.dataset)
    train = splits.train
    synthetic_images = np.zeros((0, *train.images.shape[1:]), np.uint8)
    synthetic_labels = np.zeros((0,), np.int64)
    synthesis = {"generated": 0, "reused": 0, "waited": 0.0}
    pool = None
    if plan.n_synthetic:
        # The sweep's gate started this trial once its prefix was stored, so this returns at
        # once; a retried or resumed trial may find the pool short, and the service extends it
        # (one generation even if trials race). Each chunk has its own timeout in the service.
        service = ray.get_actor(plan.service)
        synthesis = ray.get(service.ensure.remote(plan.pool, plan.n_synthetic, plan.requester),
                            timeout=ENSURE_TIMEOUT_S)
        pool = SyntheticStore(planner.store_root).read(synthesis["key"], plan.n_synthetic)
        synthetic_images, synthetic_labels = pool.images, pool.labels
    images, labels, is_synthetic = compose(train.images, train.labels, synthetic_images,
                                           synthetic_labels, plan.synthetic_ratio,
                                           planner.synthesis_mode, plan.seed)
    # Variants translated toward another class keep part of their source's label.
    targets = soft_targets(labels, is_synthetic, train.num_classes,
                           pool.source_labels if pool is not None else None,
                           pool.weights if pool is not None else None)
    # Filtering drops rows of this trial's training set; the pool itself stays as it is.
    rejected = 0
    if plan.filter_threshold > 0 and is_synthetic.any():
        reference = ensure_reference_classifier(SyntheticStore(planner.store_root), train,
                                                planner.reference, log=lambda _: None)
        keep = keep_confident(reference.logits, images, labels, is_synthetic,
                              plan.filter_threshold)
        rejected = int((~keep).sum())
        images, labels, is_synthetic = images[keep], labels[keep], is_synthetic[keep]
        targets = targets[keep] if targets is not None else None
        synthetic_images, synthetic_labels = images[is_synthetic], labels[is_synthetic]
    cost = {"synthetic_images_generated_for_trial": int(synthesis["generated"]),
            "synthetic_images_reused": int(synthesis["reused"]),
            "synthetic_images_rejected": rejected,
            "synthetic_wait_seconds": float(synthesis["waited"])}
    # Every report carries the cost and which node ran the trial (MLflow tags the run with it;
    # a retried trial may move).
    constant = {**cost, NODE_RESULT: ray.get_runtime_context().get_node_id()}

    # 2. Resume from Tune's checkpoint when the trial restarts.
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            # weights_only: a checkpoint is tensors and numbers; never unpickle code from disk.
            # The last report's checkpoint has no state (only a driver killed between that
            # report and Tune marking the trial done restarts it): the trial runs again.
            state_file = Path(directory) / "state.pt"
            if state_file.exists():
                resume = torch.load(state_file, map_location="cpu", weights_only=True)

    last_saved = time.monotonic()

    def report(metrics: dict, state: dict, final: FinalEvaluation | None) -> None:
        nonlocal last_saved
        # A resumable state (model + optimizer, a model's size several times over) is saved at
        # most every checkpoint_interval_s; the last report carries the artifacts instead, since
        # a finished trial never resumes.
        due = time.monotonic() - last_saved >= planner.checkpoint_interval_s
        if final is None and not due:
            tune.report({**metrics, **constant})
            return
        with tempfile.TemporaryDirectory() as directory:
            if final is None:
                torch.save(state, Path(directory) / "state.pt")
                last_saved = time.monotonic()
            else:
                write_trial_artifacts(Path(directory) / "artifacts", final, metrics, splits,
                                      synthetic_images, synthetic_labels)
                write_gallery(Path(directory) / "artifacts", plan, pool, train)
            tune.report({**metrics, **constant}, checkpoint=tune.Checkpoint.from_directory(directory))

    # 3. Train on the GPU Ray gave this trial (CUDA_VISIBLE_DEVICES), else the CPU; a trial
    #    that shares its GPU keeps to its share of the memory, as generator actors do.
    device = resolve_device(plan.device)
    if device.type == "cuda" and plan.gpu_memory_fraction is not None:
        cap_gpu_memory(plan.gpu_memory_fraction, device)
    with explain_out_of_memory(f"trial {plan.swept}",
                               "lower training.batch_size or raise tune.gpus_per_trial"):
        train_classifier(TrialData(images, labels, is_synthetic, splits, targets),
                         planner.training,
                         backbone=plan.backbone, augmentation=plan.online_augmentation,
                         seed=plan.seed, metric=planner.metric, mode=planner.mode, device=device,
                         report=report, resume=resume)
