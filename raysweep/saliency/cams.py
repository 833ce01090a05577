"""The registry of CAM methods: names -> pytorch-grad-cam classes (timm-style create/list).

Only gradient-based methods that need one backward pass per batch are registered: they cost
about one training step per batch, so a pool of thousands of images gets its maps in seconds
on a CPU. ScoreCAM and AblationCAM (one forward pass per channel) would cost hundreds of times
more.
"""

from __future__ import annotations

import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM

_CAMS = {"gradcam": GradCAM, "hirescam": HiResCAM, "gradcam++": GradCAMPlusPlus,
         "xgradcam": XGradCAM, "layercam": LayerCAM}


def list_cam_methods() -> list[str]:
    return list(_CAMS)


def create_cam(name: str, model: torch.nn.Module, target_layer: torch.nn.Module):
    """A pytorch-grad-cam object for `model` reading `target_layer`; KeyError on unknown names."""
    if name not in _CAMS:
        raise KeyError(f"unknown CAM method {name!r}; known: {', '.join(_CAMS)}")
    return _CAMS[name](model=model, target_layers=[target_layer])
