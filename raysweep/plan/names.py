"""Every name in a spec checked against its registry, before any compute.

Datasets, generators (and their options and weights), augmentations, timm backbones, TTA
transforms, CAM methods and target layers, Inception weights: each wrong one is a one-line
`UserError` that names the key and the fix.
"""

from __future__ import annotations

import inspect

from raysweep.augment import TTA_TRANSFORMS, check_augmentation
from raysweep.backbones import check_backbone
from raysweep.errors import UserError
from raysweep.plan.pools import generators_used, sources_used
from raysweep.plan.reference import reference_options
from raysweep.spec import Spec
from raysweep.synthesis.kinds import families_of, split_augmentation, trial_source

def check_names(spec: Spec) -> None:
    """Every name in the spec exists in its registry; one-line UserError otherwise."""
    axes = spec.axes()
    for value in axes["augmentation"].candidates():
        check_augmentation(split_augmentation(value)[1], spec.training.augmentation_params)
    for name, source in sources_used(spec).items():
        check_generator(source.generator, spec.generator.options_for(source.generator))
        if source.family not in families_of(source.generator):
            fix = {"inpaint": "set generator.name to ddpm or sd-inpaint, or use blur or erase",
                   "img2img": "set generator.name to ddpm or sd-img2img",
                   "sample": "pick a generator that samples (ddpm, dcgan, vae, sd-text2img)"}
            raise UserError(f"sweep.augmentation: {source.family} asks generator "
                            f"{source.generator!r}, which cannot {source.family}; "
                            f"{fix[source.family]}")
    check_options_by_name(spec)
    check_masks(spec)
    check_variations(spec)
    for name in axes["backbone"].candidates():
        check_backbone(name, spec.training.pretrained)
    for name in spec.training.tta.transforms:
        if name not in TTA_TRANSFORMS:
            raise UserError(f"training.tta.transforms: unknown transform {name!r}; "
                            f"known: {', '.join(TTA_TRANSFORMS)}")
    if axes["seed"].kind in ("uniform", "loguniform", "randint") and spec.needs_synthetic:
        raise UserError("sweep.seed: each seed needs its own synthetic pool, made before trials "
                        "start; give seeds as a list, e.g. seed: [0, 1, 2]")
    check_quality(spec)


def check_options_by_name(spec: Spec) -> None:
    """`generator.options_by_name` entries the sweep does not use are still checked: a known
    generator, and options its constructor takes (an entry is a typo waiting for the day an
    augmentation value names it)."""
    from raysweep.generators import generator_class, list_generators

    for name, options in spec.generator.options_by_name.items():
        if name not in list_generators():
            raise UserError(f"generator.options_by_name: unknown generator {name!r}; known: "
                            f"{', '.join(list_generators())}")
        try:
            inspect.signature(generator_class(name)).bind(**options)
        except TypeError as error:
            raise UserError(f"generator.options_by_name.{name}: {error}; known options: "
                            f"{', '.join(inspect.signature(generator_class(name)).parameters)}"
                            ) from None


def check_quality(spec: Spec) -> None:
    """Inception weights are only read when pools are judged, and must be Inception's."""
    synthesis = spec.synthesis
    if synthesis.inception_weights is None:
        return
    if synthesis.quality_epochs == 0 or not generators_used(spec):
        raise UserError("synthesis.inception_weights: set, but no pool is judged; set "
                        "synthesis.quality_epochs > 0 in a sweep with generated images, or "
                        "remove inception_weights")
    from raysweep.quality.inception import load_inception_weights

    load_inception_weights(synthesis.inception_weights)


def check_generator(name: str, options: dict) -> None:
    """The generator exists, takes these options, and has its weights where it needs them."""
    # Imported here: planning a trial (raysweep.plan) must not load every generator module.
    from raysweep.generators import create_generator, generator_class, list_generators

    if name not in list_generators():
        raise UserError(f"generator.name: unknown generator {name!r}; "
                        f"known: {', '.join(list_generators())}")
    # Options are checked against the constructor's signature, so that a TypeError raised
    # inside a constructor (a bug) stays a traceback instead of passing for a user mistake.
    try:
        inspect.signature(generator_class(name)).bind(**options)
    except TypeError as error:
        known = ", ".join(inspect.signature(generator_class(name)).parameters)
        raise UserError(f"generator.options for {name}: {error}; known options: {known}") from None
    try:
        generator = create_generator(name, **options)
    except ValueError as error:
        raise UserError(f"generator.options for {name}: {error}") from None
    check_available = getattr(generator, "check_available", None)
    if check_available is not None:
        check_available()
    return generator


def check_family_axes(spec: Spec, family: str, names: tuple[str, ...], kinds: str,
                      what: str) -> None:
    """The axes `names` mean something only to trials of `family`: swept while other trials
    would ignore them (another kind, or ratio 0), they would only repeat those trials."""
    axes = spec.axes()
    swept = [name for name in names if not axes[name].is_fixed]
    if not swept:
        return
    ignoring = sorted({value for value in axes["augmentation"].candidates()
                       if trial_source(value, spec.generator.name).family != family})
    if ignoring or not spec.needs_synthetic:
        using = f"augmentation {', '.join(map(repr, ignoring))}" if ignoring else \
            "synthetic_ratio 0 (no synthetic images)"
        raise UserError(f"sweep.{swept[0]}: swept, but trials with {using} use no {what} and "
                        f"would repeat identically; fix {swept[0]} to one value or use "
                        f"{kinds}")
    if 0 in [float(v) for v in axes["synthetic_ratio"].candidates()]:
        raise UserError(f"sweep.{swept[0]}: swept, but trials at synthetic_ratio 0 use no {what} "
                        f"and would repeat once per value; drop 0 from synthetic_ratio and add "
                        f"the real-only baseline with `yardstick: {{per_class: [...]}}` (or run "
                        f"it as its own sweep, e.g. search_spaces/ratio.yaml)")
    for name in swept:
        if axes[name].kind in ("uniform", "loguniform", "randint"):
            raise UserError(f"sweep.{name}: each value needs its own pool; give values as a "
                            f"list, e.g. [0.25, 0.5]")


def check_variations(spec: Spec) -> None:
    """Strength and translation mean something only to img2img trials; `other` needs two
    classes at least."""
    check_family_axes(spec, "img2img", ("strength", "translation"), "an img2img kind (img2img, "
                      "sd-img2img)", "strength or translation")


def check_masks(spec: Spec) -> None:
    """Mask axes mean something only to inpainting trials; the saliency model must be buildable."""
    sources = sources_used(spec)
    check_family_axes(spec, "inpaint", ("mask_fraction", "mask_region"),
                      "an inpainting kind (inpaint, blur, erase)", "masks")
    if not any(source.inpaint for source in sources.values()):
        return
    saliency = spec.saliency
    from raysweep.saliency import list_cam_methods

    if saliency.method not in list_cam_methods():
        raise UserError(f"saliency.method: unknown CAM method {saliency.method!r}; "
                        f"known: {', '.join(list_cam_methods())}")
    check_backbone(saliency.backbone, False)
    from raysweep.saliency.target_layer import TargetLayerError, find_target_layer
    from raysweep.training.reference import build_reference_model

    options = reference_options(spec)
    model = build_reference_model(options, in_chans=3, num_classes=2)
    try:
        find_target_layer(model, saliency.target_layer, (3, options.input_size, options.input_size))
    except TargetLayerError as error:
        raise UserError(f"saliency.target_layer: {saliency.backbone}: {error}; name a layer with "
                        f"a spatial feature map, e.g. saliency.target_layer: layer4") from None

