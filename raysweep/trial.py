"""The Tune trainable: one trial trains one timm backbone on real + synthetic data.

`train_fn(config, context)` is thin on purpose: it calls the data, store, augmentation and
timm factories, trains with AdamW and a cosine schedule, and reports validation metrics every
epoch through `tune.report` (with a checkpoint, so a trial resumes where it stopped). The last
report adds test metrics, what the trial cost, and an `artifacts/` folder in its checkpoint
(confusion matrix, the synthetic images it used) that the tracking callback logs to MLflow.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
import torch.nn.functional as F
from ray import tune

from raysweep.augment import TestTimeAugmentation, create_augmentation, soft_cross_entropy
from raysweep.backbones import create_backbone
from raysweep.compose import compose, synthetic_count
from raysweep.data import create_dataset, split_dataset
from raysweep.evaluation import classification_metrics, confusion, predict_probabilities
from raysweep.figures import confusion_matrix_figure, inpaint_gallery, sample_grid
from raysweep.synthesis.kinds import split_augmentation, trial_source
from raysweep.synthesis.store import SyntheticStore


def load_splits(dataset: dict):
    """The real train/val/test splits a spec's `dataset` block names (deterministic)."""
    full = create_dataset(dataset["name"], **dataset["options"])
    return split_dataset(full, val_fraction=dataset["val_fraction"],
                         test_fraction=dataset["test_fraction"],
                         per_class=dataset["per_class"], seed=dataset["split_seed"])


def to_tensor(images: np.ndarray, size: int | None) -> torch.Tensor:
    """uint8 (N,H,W,C) -> float (N,C,size,size) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.5


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_fn(config: dict, context: dict) -> None:
    """Tune trainable. `config` holds the swept axes; `context` the resolved, fixed settings."""
    # 1. Settle the process: threads and seeds.
    training = context["training"]
    torch.set_num_threads(training["threads"])
    seed = int(config["seed"])
    seed_everything(seed)

    # 2. Real splits, plus the synthetic prefix this ratio asks for.
    splits = load_splits(context["dataset"])
    train, num_classes = splits.train, splits.train.num_classes
    ratio, mode = float(config["synthetic_ratio"]), context["synthesis_mode"]
    n_synthetic = synthetic_count(ratio, mode, len(train))
    synthetic_images = np.zeros((0, *train.images.shape[1:]), np.uint8)
    synthetic_labels = np.zeros((0,), np.int64)
    synthesis = {"generated": 0, "reused": 0}
    pool = None
    if n_synthetic:
        # The service extends the pool if it is short (one generation even if trials race).
        source = trial_source(config["augmentation"], context["default_generator"])
        service = ray.get_actor(context["services"][source.name])
        mask = (float(config["mask_fraction"]), str(config["mask_region"])) if source.inpaint \
            else ()
        synthesis = ray.get(service.ensure.remote(seed, n_synthetic, *mask))
        pool = SyntheticStore(context["store_root"]).read(synthesis["key"], n_synthetic)
        synthetic_images, synthetic_labels = pool.images, pool.labels
    images, labels, is_synthetic = compose(train.images, train.labels, synthetic_images,
                                           synthetic_labels, ratio, mode, seed)
    size = training["input_size"]
    x_train, y_train = to_tensor(images, size), torch.from_numpy(labels)
    x_val, x_test = to_tensor(splits.val.images, size), to_tensor(splits.test.images, size)

    # 3. Model, augmentation, optimiser, schedule (timm and kornia factories).
    model = create_backbone(config["backbone"], num_classes=num_classes, in_chans=train.channels,
                            input_size=size, pretrained=training["pretrained"])
    flips = not train.flips_change_label
    augmentation = create_augmentation(split_augmentation(config["augmentation"])[1],
                                       num_classes=num_classes,
                                       flips=flips, params=training["augmentation_params"])
    # Warm-up epochs (seed 000) train on the real rows only; the schedule counts every step.
    real_rows = torch.from_numpy(np.flatnonzero(~is_synthetic))
    all_rows = torch.arange(len(y_train))
    warmup, batch_size = training["warmup_epochs"], training["batch_size"]
    real_steps, all_steps = (math.ceil(len(rows) / batch_size) for rows in (real_rows, all_rows))
    total_steps = warmup * real_steps + (training["epochs"] - warmup) * all_steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"],
                                  weight_decay=training["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=training["lr"],
                                                   total_steps=total_steps, pct_start=0.15,
                                                   anneal_strategy="cos")

    # 4. Resume from Tune's checkpoint when the trial restarts.
    first_epoch, train_seconds, best, since_best = 0, 0.0, -math.inf, 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        first_epoch, train_seconds = state["epoch"], state["train_seconds"]
        best, since_best = state["best"], state["since_best"]
        torch.set_rng_state(state["rng"])

    # 5. Epochs: train, validate, report with a checkpoint; stop early when val stalls.
    for epoch in range(first_epoch, training["epochs"]):
        start = time.perf_counter()
        model.train()
        augmentation.train()
        rows, n_steps = (real_rows, real_steps) if epoch < warmup else (all_rows, all_steps)
        order = rows[torch.randperm(len(rows))]
        losses = []
        for step in range(n_steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            batch, soft_targets = augmentation(x_train[index], y_train[index])
            loss = soft_cross_entropy(model(normalize(batch)), soft_targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        train_seconds += time.perf_counter() - start

        model.eval()
        val_probs = predict_probabilities(lambda x: model(normalize(x)), x_val)
        metrics = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                   **classification_metrics(splits.val.labels, val_probs, "val"),
                   "train_seconds": train_seconds, "train_images": int(len(y_train)),
                   "real_images_used": int((~is_synthetic).sum()),
                   "synthetic_images_used": int(is_synthetic.sum()),
                   "synthetic_images_generated_for_trial": int(synthesis["generated"]),
                   "synthetic_images_reused": int(synthesis["reused"])}
        score = metrics[context["metric"]] * (1 if context["mode"] == "max" else -1)
        best, since_best = (score, 0) if score > best else (best, since_best + 1)
        patience = training["early_stopping_patience"]
        stopped_early = patience is not None and since_best >= patience
        last = stopped_early or epoch + 1 == training["epochs"]
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "epoch": epoch + 1,
                        "train_seconds": train_seconds, "rng": torch.get_rng_state(),
                        "best": best, "since_best": since_best}, Path(directory) / "state.pt")
            if last:
                metrics["stopped_early"] = float(stopped_early)
                metrics.update(_final_evaluation(model, x_test, splits, flips, training,
                                                 synthetic_images[:n_synthetic],
                                                 synthetic_labels[:n_synthetic],
                                                 Path(directory) / "artifacts", pool))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        if stopped_early:
            break


def _final_evaluation(model, x_test, splits, flips, training, synthetic_images, synthetic_labels,
                      artifacts: Path, pool=None) -> dict:
    """Test metrics (plain and with TTA, seed 000) and the trial's artifacts."""
    artifacts.mkdir()
    model.eval()
    classify = lambda x: model(normalize(x))  # noqa: E731 - TTA views are made before normalising
    test_probs = predict_probabilities(classify, x_test)
    tta = TestTimeAugmentation(transforms=training["tta"]["transforms"],
                               reduce=training["tta"]["reduce"], flips=flips)
    tta_probs = predict_probabilities(classify, x_test, tta=tta)
    metrics = {**classification_metrics(splits.test.labels, test_probs, "test"),
               **classification_metrics(splits.test.labels, tta_probs, "test_tta")}
    class_names = list(splits.train.class_names)
    matrix = confusion(splits.test.labels, test_probs, len(class_names))
    confusion_matrix_figure(matrix, class_names, artifacts / "confusion_matrix.png",
                            title=f"test accuracy {metrics['test_accuracy']:.3f}")
    if len(synthetic_labels):
        sample_grid(synthetic_images, synthetic_labels, class_names,
                    artifacts / "synthetic_samples.png", title="synthetic images this trial used")
    if pool is not None and pool.sources is not None:
        inpaint_gallery(splits.train.images[pool.sources], pool.saliency, pool.masks, pool.images,
                        pool.labels, class_names, artifacts / "inpaint_gallery.png",
                        title=f"repainted {pool.masks.mean():.0%} of each image")
    (artifacts / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
