"""Inception v3 pool features, the network published FIDs use, from weights the user provides.

raysweep never downloads them: `synthesis.inception_weights` names a local copy of
torch-fidelity's FID Inception weights (`weights-inception-2015-12-05-6726825d.pth`, the
TensorFlow FID graph ported to PyTorch). torchmetrics' `NoTrainInceptionV3` runs them. The file
is checked (tensors only, the expected layers) before any compute; torchmetrics then reads a
copy written from those checked tensors, since torch-fidelity unpickles its weights file with
`weights_only=False`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from raysweep.errors import UserError
from raysweep.quality.pool import FeatureFn

FEATURES = "2048"  # the pool3 features FID and KID are defined on
# Layers that make a file torch-fidelity's Inception and not some other checkpoint.
_SIGNATURE = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "fc.weight": (1008, 2048)}


def load_inception_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights at `path` as plain tensors, or a one-line `UserError` saying what is wrong."""
    path = Path(path).expanduser()
    hint = ("point synthesis.inception_weights at torch-fidelity's FID Inception weights "
            "(weights-inception-2015-12-05-6726825d.pth), or remove it to use the reference "
            "classifier's features")
    if not path.is_file():
        raise UserError(f"synthesis.inception_weights: no file at {path}; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated file, not a torch file, or pickled code
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise UserError(f"synthesis.inception_weights: {path} is not a plain weights file "
                        f"({reason}); {hint}") from None
    if not isinstance(state, dict) or any(
            not isinstance(state.get(name), torch.Tensor) or tuple(state[name].shape) != shape
            for name, shape in _SIGNATURE.items()):
        raise UserError(f"synthesis.inception_weights: {path} does not hold Inception v3 FID "
                        f"weights (expected {', '.join(f'{k} {v}' for k, v in _SIGNATURE.items())}); "
                        f"{hint}")
    return state


def inception_features(path: str | Path, batch_size: int = 64) -> FeatureFn:
    """A `FeatureFn` giving Inception's 2048 pool features; grayscale images are repeated to
    RGB and every image is resized to 299x299 inside the network, as FID does."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    state = load_inception_weights(path)
    with tempfile.TemporaryDirectory() as directory:
        checked = Path(directory) / "inception.pt"
        torch.save(state, checked)
        network = NoTrainInceptionV3(name="inception-v3-compat", features_list=[FEATURES],
                                     feature_extractor_weights_path=str(checked))

    def features(images: np.ndarray) -> torch.Tensor:
        parts = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
                batch = batch.permute(0, 3, 1, 2)
                if batch.shape[1] == 1:
                    batch = batch.expand(-1, 3, -1, -1)
                parts.append(network(batch.contiguous()).reshape(len(batch), -1).float())
        return torch.cat(parts) if parts else torch.zeros((0, int(FEATURES)))

    return features
