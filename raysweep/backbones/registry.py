"""Backbones are timm's own registry: any `timm.list_models()` name, scratch or pretrained.

raysweep adds only what small grayscale datasets need: `in_chans` from the data, `img_size`
for models that fix their input size (ViTs), and an offline check for pretrained weights
(a hub download at trial time would fail on an offline machine after compute has started).
"""

from __future__ import annotations

import difflib
import os

import timm
import torch

from raysweep.errors import UserError
from raysweep.hub import ALLOW_DOWNLOADS_ENV, downloads_allowed


def check_backbone(name: str, pretrained: bool | str) -> None:
    """The name is a timm model and, when pretrained, its weights load without the network."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, list_backbones(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"sweep.backbone: unknown timm model {name!r}{hint} "
                        f"(see timm.list_models() for all names)")
    if isinstance(pretrained, str):
        if not os.path.isfile(os.path.expanduser(pretrained)):
            raise UserError(f"training.pretrained: checkpoint {pretrained!r} does not exist; give "
                            f"the path of a .safetensors/.pth file with {name} weights")
        return
    if pretrained and not downloads_allowed() and _cached_weights(name) is None:
        raise UserError(
            f"training.pretrained: weights for {name!r} are not available offline; set "
            f"training.pretrained to a local checkpoint file (.safetensors or .pth), download "
            f"them once with `python -c \"import timm; timm.create_model('{name}', "
            f"pretrained=True)\"`, or set {ALLOW_DOWNLOADS_ENV}=1")


def list_backbones(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """The names `create_backbone` takes: timm's registry (`timm.list_models`)."""
    return timm.list_models(pattern, pretrained=pretrained)


def create_backbone(name: str, *, num_classes: int, in_chans: int, input_size: int | None,
                    pretrained: bool | str = False) -> torch.nn.Module:
    """timm's `create_model`, with img_size passed to models that take it."""
    kwargs: dict = {"num_classes": num_classes, "in_chans": in_chans}
    if isinstance(pretrained, str):
        kwargs["pretrained_cfg_overlay"] = {"file": os.path.expanduser(pretrained)}
        pretrained = True
    if input_size is not None:
        try:
            return timm.create_model(name, pretrained=bool(pretrained), img_size=input_size, **kwargs)
        except TypeError as error:  # CNNs take any size and have no img_size argument
            if "img_size" not in str(error):
                raise
    return timm.create_model(name, pretrained=bool(pretrained), **kwargs)


def _cached_weights(name: str) -> str | None:
    """Path of the cached hub weights for a pretrained timm model, or None."""
    config = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(config, "hf_hub_id", None) if config else None
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str):
            return path
    return None
