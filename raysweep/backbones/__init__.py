"""The backbone registry is timm's own: any `timm.list_models()` name, scratch or pretrained.

    from raysweep.backbones import create_backbone, check_backbone, list_backbones
    model = create_backbone("resnet10t", num_classes=10, in_chans=1, input_size=28)
"""

from raysweep.backbones.registry import check_backbone, create_backbone, list_backbones

__all__ = ["check_backbone", "create_backbone", "list_backbones"]
