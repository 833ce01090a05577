"""The real-data yardstick: real-only trials at larger real training sets.

A user's real question is not "did accuracy go up by 0.010" but "should I generate, or label
more images?". The spec's `yardstick: {per_class: [100, 200, 400]}` adds real-only trials
(synthetic_ratio 0) with that many real training images per class: same validation and test
splits (they do not depend on `per_class`), same seeds, backbones and recipe, and the online
part of the first `augmentation` value. The report then places every synthetic arm on that
curve ("worth 140 real images per class").

Every trial's config carries `real_per_class`: the spec's `dataset.per_class` for the sweep's
own trials, the yardstick's sizes for the arms added here. The base size gets real-only arms
of its own when the search does not already run ratio 0 there (an img2img or mask sweep, whose
synthesis axes cannot sweep ratio 0).
"""

from __future__ import annotations

from raysweep.data import DataSplits, load_splits
from raysweep.errors import UserError
from raysweep.spec import Spec

REAL_PER_CLASS = "real_per_class"


def check_yardstick(spec: Spec, splits: DataSplits) -> None:
    """Sizes above the spec's own, within what each class has once validation and test are
    held out; one-line UserError otherwise."""
    yardstick, base = spec.yardstick, spec.dataset.per_class
    if yardstick is None:
        return
    if spec.axes()["seed"].kind not in ("fixed", "grid", "choice"):
        raise UserError("yardstick: its real-only arms pair with the sweep's seeds; give "
                        "sweep.seed as a list, e.g. [0, 1, 2]")
    if base is None:
        raise UserError("yardstick.per_class: dataset.per_class is null (every training image), "
                        "so no larger real training set exists; set dataset.per_class below "
                        "the data's size, e.g. 50")
    small = [n for n in yardstick.per_class if n <= base]
    if small:
        raise UserError(f"yardstick.per_class: {small[0]} is not above dataset.per_class "
                        f"({base}); the yardstick's arms must be larger real training sets")
    everything = load_splits({**spec.dataset.model_dump(), "per_class": None}).train
    available = int(everything.class_counts().min())
    name = everything.class_names[int(everything.class_counts().argmin())]
    if yardstick.per_class[-1] > available:
        raise UserError(f"yardstick.per_class: {yardstick.per_class[-1]} real images per class, "
                        f"but class {name!r} has {available} once validation and test are held "
                        f"out; use sizes up to {available}")


def yardstick_configs(spec: Spec, configs: list[dict] | None) -> list[dict]:
    """The real-only configs the yardstick adds: each size (and the base size, unless the
    search runs ratio 0 there already) x each seed x each backbone."""
    yardstick = spec.yardstick
    if yardstick is None:
        return []
    axes = spec.axes()
    sizes = list(yardstick.per_class)
    has_base = configs is not None and any(float(c["synthetic_ratio"]) == 0 for c in configs)
    if not has_base:
        sizes.insert(0, spec.dataset.per_class)
    # Values a real-only trial ignores (the synthesis axes, and the synthesis kind in its
    # augmentation) are each axis's first; the report shares such trials with every value.
    template = {name: axis.candidates()[0] for name, axis in axes.items()}
    template.update(synthetic_ratio=0.0, filter_threshold=0.0)
    return [{**template, "seed": seed, "backbone": backbone, REAL_PER_CLASS: size}
            for size in sizes for seed in axes["seed"].candidates()
            for backbone in axes["backbone"].candidates()]
