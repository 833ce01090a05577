"""The reference classifier: a timm model trained on the real training split, cached by content.

Three parts of raysweep need a classifier that is not the one a trial trains: saliency
(Grad-CAM picks the pixels to repaint from its gradients, seed 000), the quality of synthetic
images (its penultimate features judge them) and filtering (its confidence in an image's own
label). A sweep has one, named by the spec's `saliency:` block: it is trained once per
(options, training data), the seed being one of its options, stored under `classifiers/<key>/`
in the `SyntheticStore` like a generator, and loaded from there by every actor and trial that
needs it.

The default is small enough for a laptop CPU: `resnet10t` with `output_stride=8`, so that at
32x32 input its last feature map is 4x4 instead of 1x1 (Grad-CAM needs a spatial map), trained
for 10 epochs. Seed 000 trained its saliency model for 20.

    options = ReferenceOptions(epochs=5, seed=0)      # the spec's `saliency:` block
    reference = ensure_reference_classifier(store, splits.train, options, val=splits.val)
    reference.key, reference.val_accuracy
    reference.logits(images_uint8), reference.features(images_uint8)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import timm
import torch
import torch.nn.functional as F

from raysweep.backbones import create_backbone
from raysweep.data import ImageDataset
from raysweep.data.tensors import to_nchw
from raysweep.store import SyntheticStore, content_key
from raysweep.training.optim import fit_classifier

_WEIGHTS = "model.pt"


@dataclass(frozen=True)
class ReferenceOptions:
    """How the reference classifier is built and trained (every field is hashed into its key).

    Args:
        backbone: a timm model name.
        epochs: training epochs over the real training split.
        input_size: square input size; images are resized to it.
        output_stride: timm's `output_stride` for models that take it (8 keeps a 4x4 feature map
            at 32x32 input); None: the model's own.
        batch_size: images per step.
        lr: AdamW peak learning rate (one-cycle cosine).
        weight_decay: AdamW weight decay.
        shift: random translation of training images by up to this many pixels (cheap
            augmentation that keeps the classifier from memorising 50 images per class).
        seed: initial weights and every random draw of training.
    """

    backbone: str = "resnet10t"
    epochs: int = 10
    input_size: int = 32
    output_stride: int | None = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    shift: int = 2
    seed: int = 0

    @classmethod
    def from_dict(cls, options: dict | None) -> "ReferenceOptions":
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"reference classifier: unknown option(s) {', '.join(unknown)}; "
                            f"known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**options)


@dataclass
class ReferenceClassifier:
    """A trained reference classifier, in eval mode, with helpers for uint8 image batches."""

    model: torch.nn.Module
    key: str
    options: ReferenceOptions
    in_chans: int
    num_classes: int
    fit_seconds: float
    reused: bool
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    meta: dict = field(default_factory=dict)

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) -> the normalised float batch the model takes."""
        return _to_input(images, self.options.input_size)

    @torch.no_grad()
    def logits(self, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """Class logits (N, num_classes) for uint8 images."""
        return torch.cat([self.model(self.to_input(images[i:i + batch_size]))
                          for i in range(0, len(images), batch_size)]) if len(images) else \
            torch.zeros((0, self.num_classes))

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """Penultimate features (N, D): timm's pooled pre-logits."""
        parts = []
        for i in range(0, len(images), batch_size):
            maps = self.model.forward_features(self.to_input(images[i:i + batch_size]))
            parts.append(self.model.forward_head(maps, pre_logits=True))
        return torch.cat(parts) if parts else torch.zeros((0, self.model.num_features))

    def accuracy(self, data: ImageDataset) -> float:
        predicted = self.logits(data.images).argmax(1).numpy()
        return float((predicted == data.labels).mean())


def reference_key(train: ImageDataset, options: ReferenceOptions) -> str:
    """The content key of the classifier these options (seed included) train on this data."""
    return content_key({"kind": "reference-classifier", "options": asdict(options),
                        "train_fingerprint": train.fingerprint()})


def near_chance(accuracy: float, num_classes: int) -> bool:
    """True when `accuracy` is closer to guessing than to a classifier worth asking: below a
    quarter of the way from chance (1 / num_classes) to perfect. Its saliency maps are then
    close to noise and its features judge little."""
    chance = 1.0 / max(1, num_classes)
    return accuracy < chance + 0.25 * (1.0 - chance)


def ensure_reference_classifier(store: SyntheticStore, train: ImageDataset,
                                options: dict | ReferenceOptions | None = None, *,
                                val: ImageDataset | None = None, test: ImageDataset | None = None,
                                log: Callable[[str], None] = print) -> ReferenceClassifier:
    """Load the classifier trained on exactly this data and options, or train and store it.

    Accuracies are measured on `val` and `test` when given (a forward pass, cheap).
    """
    if not isinstance(options, ReferenceOptions):
        options = ReferenceOptions.from_dict(options)
    key = reference_key(train, options)
    model = _build(options, train)
    if store.has_classifier(key):
        directory = store.classifier_dir(key)
        model.load_state_dict(torch.load(directory / _WEIGHTS, weights_only=True))
        meta = store.classifier_meta(key)
        fit_seconds, reused = float(meta.get("fit_seconds", 0.0)), True
        log(f"reference classifier {options.backbone}: reusing {key} (skipping training)")
    else:
        log(f"reference classifier {options.backbone}: training {options.epochs} epochs on "
            f"{len(train)} images of the training split")
        start = time.perf_counter()
        _fit(model, train, options)
        fit_seconds, reused = time.perf_counter() - start, False
        meta = {"kind": "reference-classifier", "options": asdict(options),
                "dataset": train.name, "train_images": len(train), "fit_seconds": fit_seconds}
        store.save_classifier(key, meta,
                              lambda d: torch.save(model.state_dict(), f"{d}/{_WEIGHTS}"))
        log(f"reference classifier {options.backbone}: trained in {fit_seconds:.0f}s, "
            f"stored as {key}")
    model.eval()
    reference = ReferenceClassifier(model, key, options, train.channels, train.num_classes,
                                    fit_seconds, reused, meta=meta)
    reference.val_accuracy = reference.accuracy(val) if val is not None else None
    reference.test_accuracy = reference.accuracy(test) if test is not None else None
    return reference


def build_reference_model(options: ReferenceOptions, in_chans: int,
                          num_classes: int) -> torch.nn.Module:
    """The untrained timm model these options name (also used to check a spec's backbone)."""
    kwargs = {"num_classes": num_classes, "in_chans": in_chans}
    if options.output_stride is not None:
        try:
            return timm.create_model(options.backbone, output_stride=options.output_stride,
                                     **kwargs)
        except TypeError as error:  # ViTs and a few CNNs have no output_stride
            if "output_stride" not in str(error):
                raise
    return create_backbone(options.backbone, input_size=options.input_size, **kwargs)


def _build(options: ReferenceOptions, train: ImageDataset) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)  # the initial weights depend on the seed only
        return build_reference_model(options, train.channels, train.num_classes)


def _to_input(images: np.ndarray, size: int) -> torch.Tensor:
    return to_nchw(images, size, value_range=(-1.0, 1.0))


def _fit(model: torch.nn.Module, train: ImageDataset, options: ReferenceOptions) -> None:
    """The shared AdamW + one-cycle recipe, with random shifts as the only augmentation."""
    fit_classifier(model, _to_input(train.images, options.input_size),
                   torch.from_numpy(train.labels), epochs=options.epochs,
                   batch_size=options.batch_size, lr=options.lr,
                   weight_decay=options.weight_decay, seed=options.seed,
                   transform=lambda batch, gen: _shift(batch, options.shift, gen))


def _shift(batch: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `pad` pixels (padding with the background value -1)."""
    if pad <= 0:
        return batch
    n, _, height, width = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad), value=-1.0)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + height, dx[i]:dx[i] + width]
                        for i in range(n)])
