"""Inception v3 (FID) features from weights the user provides: the real torchmetrics network on
randomly initialised weights saved to a temp dir (nothing downloads), and one-line errors for a
missing, corrupt or foreign weights file, at `validate`."""

from __future__ import annotations

import pytest
import torch
import torchvision

from raysweep.cli import main
from raysweep.data import create_dataset
from raysweep.errors import UserError
from raysweep.quality import distribution_metrics
from raysweep.quality.inception import inception_features, load_inception_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An Inception v3 in torch-fidelity's layout (torchvision's layers, a 1008-way head),
    randomly initialised: the network FID uses, without its trained weights."""
    torch.manual_seed(0)
    network = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    state = network.state_dict()
    state["fc.weight"] = torch.randn(1008, 2048) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    path = tmp_path_factory.mktemp("inception") / "weights-inception.pth"
    torch.save(state, path)
    return path


def test_identical_sets_are_zero_apart_and_other_classes_are_not(weights):
    digits = create_dataset("digits")
    zeros = digits.images[digits.labels == 0][:24]
    ones = digits.images[digits.labels == 1][:24]
    features = inception_features(weights, batch_size=16)
    zero_features, one_features = features(zeros), features(ones)
    assert zero_features.shape == (24, 2048) and torch.isfinite(zero_features).all()
    same = distribution_metrics(zero_features, zero_features)
    other = distribution_metrics(zero_features, one_features)
    assert other["frechet_distance"] > 0
    # Random weights give features ~1e11 in size: the matrix square root of 24-sample
    # covariances leaves rounding near 1e-6 of the scale (1.1e-6 seen here), so "zero" is
    # judged a thousandth of the distance between the classes.
    assert abs(same["frechet_distance"]) < 1e-3 * other["frechet_distance"]


def test_a_missing_corrupt_or_foreign_file_is_one_line(weights, tmp_path):
    with pytest.raises(UserError, match="no file at"):
        load_inception_weights(tmp_path / "absent.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(UserError, match="not a plain weights file"):
        load_inception_weights(truncated)
    foreign = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), foreign)
    with pytest.raises(UserError, match="does not hold Inception v3 FID weights") as raised:
        load_inception_weights(foreign)
    assert "\n" not in str(raised.value)


def test_pickled_code_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran code from a weights file",))

    hostile = tmp_path / "hostile.pth"
    torch.save({"fc.weight": Payload()}, hostile)
    with pytest.raises(UserError, match="not a plain weights file"):
        load_inception_weights(hostile)


SPEC = """
name: judged
dataset: {{name: digits, per_class: 8}}
generator: {{name: ddpm}}
synthesis: {{quality_epochs: {epochs}, inception_weights: {weights}}}
sweep: {{synthetic_ratio: [0, 1], backbone: test_resnet, seed: [0, 1, 2]}}
"""


@pytest.mark.parametrize("epochs, problem", [(1, "no file at"), (0, "no pool is judged")])
def test_validate_names_the_inception_problem_in_one_line(in_tmp_cwd, capsys, epochs, problem):
    spec = in_tmp_cwd / "spec.yaml"
    spec.write_text(SPEC.format(epochs=epochs, weights=in_tmp_cwd / "absent.pth"))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "synthesis.inception_weights" in err and problem in err


def test_validate_accepts_inception_weights_it_can_read(in_tmp_cwd, capsys, weights):
    spec = in_tmp_cwd / "spec.yaml"
    spec.write_text(SPEC.format(epochs=1, weights=weights))
    assert main(["validate", str(spec)]) == 0, capsys.readouterr().err
