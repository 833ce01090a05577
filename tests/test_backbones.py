"""Backbones through timm's factory: grayscale, small inputs, and offline pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raysweep.backbones import check_backbone, create_backbone
from raysweep.errors import UserError
from raysweep.spec import load_spec

ZOO_SPEC = load_spec(Path(__file__).resolve().parent.parent / "search_spaces/backbone.yaml")
ZOO = ZOO_SPEC.axes()["backbone"].values
SIZE = ZOO_SPEC.training.input_size  # 32: vgg11 and densenet121 pool below 1x1 at 28


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_backbone_trains_on_small_grayscale_images(name):
    model = create_backbone(name, num_classes=10, in_chans=1, input_size=SIZE)
    logits = model(torch.rand(2, 1, SIZE, SIZE))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_pretrained_without_cached_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("RAYSWEEP_ALLOW_DOWNLOADS", raising=False)
    with pytest.raises(UserError, match="not available offline.*local checkpoint"):
        check_backbone("resnet18", True)


def test_pretrained_from_a_local_checkpoint(tmp_path):
    source = create_backbone("resnet10t", num_classes=1000, in_chans=3, input_size=None)
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    check_backbone("resnet10t", str(tmp_path / "resnet10t.pth"))
    model = create_backbone("resnet10t", num_classes=10, in_chans=1, input_size=28,
                            pretrained=str(tmp_path / "resnet10t.pth"))
    # The body comes from the checkpoint (first conv summed over RGB for grayscale); the head is new.
    stem = source.conv1[0].weight.sum(dim=1, keepdim=True)
    assert torch.allclose(model.conv1[0].weight, stem, atol=1e-5)
    assert model.get_classifier().out_features == 10
    with pytest.raises(UserError, match="does not exist"):
        check_backbone("resnet10t", str(tmp_path / "missing.pth"))
