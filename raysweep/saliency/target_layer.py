"""Which layer a CAM reads: the last spatial feature map of a timm backbone, or a named one.

timm records each CNN's feature stages in `model.feature_info` (the modules `features_only`
would return); the last one is the last spatial map before global pooling, the layer Grad-CAM's
authors use. Models without feature_info, or whose last stage is not spatial (ViTs emit
tokens), need `saliency.target_layer` in the spec.
"""

from __future__ import annotations

import torch


class TargetLayerError(ValueError):
    """No spatial target layer could be found or the named one does not exist."""


def find_target_layer(model: torch.nn.Module, name: str | None = None,
                      input_shape: tuple[int, int, int] = (1, 32, 32)) -> tuple[str, torch.nn.Module]:
    """(name, module) of the layer to read; the layer must output a (N, C, h, w) map.

    Args:
        model: a timm model.
        name: a module path such as "layer4" or "blocks.5"; None: the last stage in
            `model.feature_info`.
        input_shape: (C, H, W) of the model's input, to check that the layer is spatial.
    """
    modules = dict(model.named_modules())
    if name is None:
        info = getattr(model, "feature_info", None)
        stages = [stage.get("module") for stage in info] if isinstance(info, list) else []
        stages = [s for s in stages if s in modules]
        if not stages:
            raise TargetLayerError(f"{type(model).__name__} lists no feature stages "
                                   f"(model.feature_info)")
        name = stages[-1]
    elif name not in modules or not name:
        close = [m for m in modules if m and m.split(".")[0] == name.split(".")[0]][:5]
        raise TargetLayerError(f"no module named {name!r}" +
                               (f" (modules like {', '.join(close)})" if close else ""))
    layer = modules[name]
    shapes = []
    hook = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))
                                       if isinstance(out, torch.Tensor) else shapes.append(()))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
        model.train(was_training)
    finally:
        hook.remove()
    if not shapes or len(shapes[-1]) != 4:
        raise TargetLayerError(f"layer {name!r} outputs {shapes[-1] if shapes else 'nothing'}, "
                               f"not a (N, C, h, w) feature map")
    return name, layer
