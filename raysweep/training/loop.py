"""One trial's training: a timm backbone on real + synthetic images, AdamW, one-cycle cosine.

`train_classifier` is a plain function: it builds the model and the kornia augmentation on the
device it is given, trains, validates every epoch and hands each epoch's metrics and a resumable
state to a `report` callback; the last call also carries the test predictions. It never imports
Ray, so it runs the same under Tune, in a benchmark, or in the GPU test tier.

On CUDA the model is channels-last, the forward runs under autocast, the training set stays on
the GPU when it fits, and the loss is summed on the device: one host sync per epoch.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from raysweep.augment import TestTimeAugmentation, create_augmentation
from raysweep.backbones import create_backbone
from raysweep.data import DataSplits
from raysweep.data.tensors import to_nchw
from raysweep.spec import TrainingSpec, TTASpec
from raysweep.training.device import autocast_dtype, fits_on_device
from raysweep.training.evaluation import classification_metrics, predict_probabilities
from raysweep.training.optim import one_cycle_adamw


@dataclass(frozen=True)
class TrialData:
    """A trial's training set (real rows first, then synthetic) and the real splits.

    Args:
        images: uint8 (N, H, W, C) training images.
        labels: int64 (N,) their labels.
        is_synthetic: bool (N,) True for synthetic rows.
        splits: the real splits: class names, channels, and the val/test sets.
        targets: float32 (N, K) probability targets where some rows have soft labels
            (`compose.soft_targets`); None: one-hot `labels`.
    """

    images: np.ndarray
    labels: np.ndarray
    is_synthetic: np.ndarray
    splits: DataSplits
    targets: np.ndarray | None = None


@dataclass(frozen=True)
class FinalEvaluation:
    """What the last report carries besides metrics: test probabilities, plain and with TTA."""

    test_probabilities: np.ndarray
    test_tta_probabilities: np.ndarray


Report = Callable[[dict, dict, "FinalEvaluation | None"], None]
"""report(metrics, state, final): called once per epoch; `state` resumes the loop (save it
before returning, it references live tensors); `final` is set on the last call only."""


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.5


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_classifier(data: TrialData, settings: TrainingSpec, *, backbone: str,
                     augmentation: str, seed: int, metric: str, mode: str,
                     device: torch.device, report: Report, resume: dict | None = None) -> None:
    """Train and evaluate one classifier, reporting every epoch.

    Args:
        data: the training set and the real splits.
        settings: the spec's validated `training:` block (epochs, batch_size, lr, tta, ...).
        backbone: a timm model name.
        augmentation: the online augmentation (kornia names joined with `+`, or `none`).
        seed: seeds model init, batch order and augmentation draws.
        metric, mode: the validation metric early stopping watches, and its direction.
        device: where the model, batches, augmentation, TTA and metrics run.
        report: called after every epoch (see `Report`).
        resume: a `state` an earlier call reported; training continues after its epoch.
    """
    # 1. Settle the process: threads and seeds (nothing before this draws from torch's RNG,
    #    so the model's init is the same whoever calls the loop).
    if settings.threads is not None:  # None: the caller's (the plan sets a trial's CPUs)
        torch.set_num_threads(settings.threads)
    seed_everything(seed)
    splits, cuda = data.splits, device.type == "cuda"
    num_classes, size = splits.train.num_classes, settings.input_size

    # 2. Tensors: on the device when they fit, else pinned on the host and copied per batch.
    # Soft targets where some rows have them; the augmentation takes either.
    y_train = torch.from_numpy(data.targets if data.targets is not None else data.labels)
    x_train = to_nchw(data.images, size)
    x_val, x_test = to_nchw(splits.val.images, size), to_nchw(splits.test.images, size)
    nbytes = sum(t.numel() * t.element_size() for t in (x_train, y_train, x_val, x_test))
    resident = fits_on_device(nbytes, device)
    if resident:
        x_train, y_train, x_val, x_test = (t.to(device) for t in (x_train, y_train, x_val, x_test))
    elif cuda:
        x_train, y_train = x_train.pin_memory(), y_train.pin_memory()

    # 3. Model, augmentation, optimiser, schedule (timm and kornia factories).
    model = create_backbone(backbone, num_classes=num_classes, in_chans=splits.train.channels,
                            input_size=size, pretrained=settings.pretrained)
    # Channels-last lets cuDNN pick its tensor-core kernels for conv nets (a ViT only has its
    # patch embedding to convert); on the CPU it would change kernels and so the numbers.
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    flips = not splits.train.flips_change_label
    augment = create_augmentation(augmentation, num_classes=num_classes, flips=flips,
                                  params=settings.augmentation_params).to(device)
    # Warm-up epochs (seed 000) train on the real rows only; the schedule counts every step.
    real_rows = torch.from_numpy(np.flatnonzero(~data.is_synthetic))
    all_rows = torch.arange(len(y_train))
    warmup, batch_size = settings.warmup_epochs, settings.batch_size
    real_steps, all_steps = (math.ceil(len(rows) / batch_size) for rows in (real_rows, all_rows))
    total_steps = warmup * real_steps + (settings.epochs - warmup) * all_steps
    optimizer, schedule = one_cycle_adamw(model.parameters(), lr=settings.lr,
                                          weight_decay=settings.weight_decay,
                                          total_steps=total_steps)
    amp_dtype = autocast_dtype(device)
    # fp16 needs loss scaling (bf16 does not); its step() syncs with the host, bf16 never does.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    def autocast():
        return torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    def classify(x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1]; TTA makes its views before this normalises them."""
        x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        with autocast():
            return model(x)

    # 4. Resume from a reported state.
    first_epoch, train_seconds, best, since_best = 0, 0.0, -math.inf, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        scaler.load_state_dict(resume["scaler"])
        first_epoch, train_seconds = resume["epoch"], resume["train_seconds"]
        best, since_best = resume["best"], resume["since_best"]
        torch.set_rng_state(resume["rng"])
        if cuda and resume["cuda_rng"] is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"], device)

    # 5. Epochs: train, validate, report; stop early when validation stalls.
    for epoch in range(first_epoch, settings.epochs):
        start = time.perf_counter()
        model.train()
        augment.train()
        rows, n_steps = (real_rows, real_steps) if epoch < warmup else (all_rows, all_steps)
        # The order is drawn on the CPU generator (as kornia's parameters are): same batches
        # on every device for the same seed.
        order = rows[torch.randperm(len(rows))].to(x_train.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for step in range(n_steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            x = x_train[index].to(device, non_blocking=True)
            y = y_train[index].to(device, non_blocking=True)
            batch, soft_targets = augment(x, y)
            batch = normalize(batch).contiguous(memory_format=memory_format)
            with autocast():
                # soft_targets are class probabilities (mixup, cutmix, label smoothing)
                loss = F.cross_entropy(model(batch), soft_targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            loss_sum += loss.detach()
        train_loss = (loss_sum / n_steps).item()  # the epoch's one host sync
        train_seconds += time.perf_counter() - start

        model.eval()
        val_probs = predict_probabilities(classify, x_val)
        is_synthetic = data.is_synthetic
        metrics = {"epoch": epoch + 1, "train_loss": train_loss,
                   **classification_metrics(splits.val.labels, val_probs, "val"),
                   "train_seconds": train_seconds, "train_images": int(len(y_train)),
                   "real_images_used": int((~is_synthetic).sum()),
                   "synthetic_images_used": int(is_synthetic.sum())}
        score = metrics[metric] * (1 if mode == "max" else -1)
        best, since_best = (score, 0) if score > best else (best, since_best + 1)
        patience = settings.early_stopping_patience
        stopped_early = patience is not None and since_best >= patience
        last = stopped_early or epoch + 1 == settings.epochs
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
                 "epoch": epoch + 1, "train_seconds": train_seconds, "best": best,
                 "since_best": since_best, "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(device) if cuda else None}
        final = None
        if last:
            metrics["stopped_early"] = float(stopped_early)
            final = _test_evaluation(classify, x_test, flips, settings.tta)
            metrics.update(classification_metrics(splits.test.labels, final.test_probabilities,
                                                  "test"))
            metrics.update(classification_metrics(splits.test.labels,
                                                  final.test_tta_probabilities, "test_tta"))
        report(metrics, state, final)
        if stopped_early:
            break


def _test_evaluation(classify, x_test: torch.Tensor, flips: bool,
                     tta: TTASpec) -> FinalEvaluation:
    """Test probabilities, plain and with test-time augmentation (seed 000)."""
    plain = predict_probabilities(classify, x_test)
    views = TestTimeAugmentation(transforms=tta.transforms, reduce=tta.reduce, flips=flips)
    return FinalEvaluation(plain, predict_probabilities(classify, x_test, tta=views))
