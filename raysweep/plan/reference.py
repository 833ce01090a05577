"""The sweep's one reference classifier: which one (the spec's `saliency:` block names it), and
whether any part of the sweep asks it (masks, filtering, pool quality)."""

from __future__ import annotations

from raysweep.plan.pools import sources_used
from raysweep.spec import Spec
from raysweep.training.reference import ReferenceOptions


def reference_options(spec: Spec) -> ReferenceOptions:
    """The sweep's one reference classifier (saliency, quality, filtering): the spec's
    `saliency:` block names it."""
    saliency = spec.saliency
    return ReferenceOptions(backbone=saliency.backbone, epochs=saliency.epochs,
                            input_size=saliency.input_size, seed=saliency.seed)


def uses_reference(spec: Spec) -> bool:
    """Whether any part of the sweep asks the reference classifier: masks, filtering, judging."""
    sources = sources_used(spec)
    filtering = max(float(v) for v in spec.axes()["filter_threshold"].candidates()) > 0
    judging = bool(sources) and spec.synthesis.quality_epochs > 0
    return any(source.inpaint for source in sources.values()) or filtering or judging
