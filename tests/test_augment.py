"""The online augmentation registry, the soft-label loss and test-time augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raysweep.augment import (
    AUGMENTATION_PARAMS,
    TestTimeAugmentation,
    check_augmentation,
    create_augmentation,
    list_augmentations,
)
from raysweep.errors import UserError

K = 5
NAMES = list_augmentations() + ["classic+weather+cutout+mixup+label_smoothing",
                                "classic+cutmix+label_smoothing"]


def batch(channels: int, size: int = 16, batch_size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, channels, size, size, generator=generator)
    return x, torch.arange(batch_size) % K


def test_every_parameter_builds_at_its_bounds_and_is_refused_beyond_them():
    """A magnitude's declared range is what the spec accepts, and each value in it builds a
    working pipeline: the range is a promise, not a label."""
    x, y = batch(3)
    for name, params in AUGMENTATION_PARAMS.items():
        for param, (default, low, high) in params.items():
            for value in (low, default, high):
                check_augmentation(name, {param: value})
                augment = create_augmentation(name, num_classes=K, params={param: value})
                out, soft = augment.train()(x, y)
                assert out.shape == x.shape and torch.allclose(soft.sum(1), torch.ones(len(y)))
            for outside in (low - 1e-3 * (1 + abs(low)), high + 1e-3 * (1 + abs(high))):
                with pytest.raises(UserError, match=param):
                    check_augmentation(name, {param: outside})


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_every_name_keeps_shapes_range_and_gives_soft_labels(name, channels):
    x, y = batch(channels)
    torch.manual_seed(0)
    aug = create_augmentation(name, num_classes=K, flips=True)
    x_aug, y_soft = aug(x, y)
    assert x_aug.shape == x.shape and x_aug.dtype == torch.float32
    assert 0.0 <= x_aug.min() and x_aug.max() <= 1.0
    assert y_soft.shape == (len(y), K)
    assert (y_soft >= 0).all()
    torch.testing.assert_close(y_soft.sum(dim=1), torch.ones(len(y)))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name):
    x, y = batch(3)
    aug = create_augmentation(name, num_classes=K, flips=True)
    torch.manual_seed(7)
    first = aug(x, y)
    torch.manual_seed(7)
    second = aug(x, y)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_none_is_identity_and_eval_mode_changes_nothing():
    x, y = batch(1)
    x_aug, y_soft = create_augmentation("none", num_classes=K)(x, y)
    assert torch.equal(x_aug, x)
    assert torch.equal(y_soft, F.one_hot(y, K).float())
    aug = create_augmentation("classic+cutmix+label_smoothing", num_classes=K).eval()
    x_aug, y_soft = aug(x, y)
    assert torch.equal(x_aug, x)
    assert torch.equal(y_soft, F.one_hot(y, K).float())


def test_classic_at_zero_magnitude_is_identity():
    x, y = batch(3)
    zero = {"rotation_degrees": 0, "brightness": 0, "contrast": 0, "saturation": 0, "hue": 0,
            "perspective": 0}
    x_aug, _ = create_augmentation("classic", num_classes=K, flips=False, params=zero)(x, y)
    torch.testing.assert_close(x_aug, x, atol=1e-5, rtol=0)


def test_mixup_mixes_two_classes_in_the_same_proportion_as_the_pixels():
    x, y = batch(1, batch_size=8)
    y = torch.arange(8)
    torch.manual_seed(0)
    x_aug, y_soft = create_augmentation("mixup", num_classes=8, params={"mixup_alpha": 1.0})(x, y)
    assert ((y_soft > 0).sum(dim=1) == 2).all()
    for i in range(8):
        partner = [k for k in torch.nonzero(y_soft[i]).flatten().tolist() if k != i][0]
        lam = y_soft[i, i]
        torch.testing.assert_close(x_aug[i], lam * x[i] + (1 - lam) * x[partner])


def test_cutmix_label_weight_is_the_pasted_area():
    y = torch.arange(6)
    x = (y.float() / 10).view(6, 1, 1, 1).expand(6, 1, 16, 16).contiguous()
    torch.manual_seed(3)
    x_aug, y_soft = create_augmentation("cutmix", num_classes=6)(x, y)
    for i in range(6):
        own = (x_aug[i] == x[i]).float().mean()
        torch.testing.assert_close(y_soft[i, i], own)


def test_label_smoothing_spreads_epsilon_and_comes_last():
    x, y = batch(1)
    _, y_soft = create_augmentation("label_smoothing", num_classes=K,
                                    params={"label_smoothing": 0.2})(x, y)
    expected = F.one_hot(y, K).float() * 0.8 + 0.2 / K
    torch.testing.assert_close(y_soft, expected)
    assert check_augmentation("label_smoothing+mixup+classic") == ("classic", "mixup",
                                                                   "label_smoothing")


@pytest.mark.parametrize("name, message", [
    ("rainbow", "unknown augmentation 'rainbow'"),
    ("classic+rainbow", "known: classic, cutmix"),
    ("mixup+cutmix", "pick one"),
    ("classic+classic", "twice"),
    ("none+classic", "'none'"),
    ("", "known:"),
])
def test_bad_names_raise_user_error(name, message):
    with pytest.raises(UserError, match=message):
        check_augmentation(name)
    with pytest.raises(UserError, match=message):
        create_augmentation(name, num_classes=K)


@pytest.mark.parametrize("params, message", [
    ({"rotation_degree": 10}, "unknown augmentation parameter 'rotation_degree'"),
    ({"rotation_degrees": 200}, r"rotation_degrees=200 is outside \[0.0, 180.0\]"),
    ({"label_smoothing": -0.1}, r"label_smoothing=-0.1 is outside \[0.0, 0.5\]"),
    ({"mixup_alpha": "big"}, "mixup_alpha='big' must be a number"),
])
def test_bad_params_raise_user_error_naming_them(params, message):
    with pytest.raises(UserError, match=message):
        check_augmentation("classic+mixup", params)


def test_params_of_unused_components_are_accepted():
    assert check_augmentation("classic", {"mixup_alpha": 0.4}) == ("classic",)
    aug = create_augmentation("classic", num_classes=K, params={"mixup_alpha": 0.4,
                                                                "rotation_degrees": 30})
    assert aug.params["rotation_degrees"] == 30.0 and "mixup_alpha" not in aug.params


def tiny_model(channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3), torch.nn.Flatten(),
                               torch.nn.LazyLinear(K)).eval()


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_tta_returns_reproducible_probabilities(reduce):
    x, _ = batch(1)
    model = tiny_model()
    tta = TestTimeAugmentation(("identity", "hflip", "shift", "rotate"), reduce=reduce)
    probs = tta(model, x)
    assert probs.shape == (len(x), K)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(x)))
    assert torch.equal(probs, tta(model, x))


def test_tta_identity_alone_is_plain_softmax_and_hflip_respects_flips():
    x, _ = batch(1)
    model = tiny_model()
    plain = TestTimeAugmentation(("identity",))(model, x)
    torch.testing.assert_close(plain, model(x).softmax(dim=1))
    assert "hflip" not in TestTimeAugmentation(("identity", "hflip"), flips=False).view_names
    assert "hflip" in TestTimeAugmentation(("identity", "hflip"), flips=True).view_names
    with_shift = TestTimeAugmentation(("identity", "shift"), shift_px=2)
    assert with_shift.view_names == ["identity", "shift_left", "shift_right", "shift_up",
                                     "shift_down"]


def test_tta_shift_moves_content_by_whole_pixels():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    tta = TestTimeAugmentation(("shift",), shift_px=2)
    moved = tta.views["shift_right"](x)
    assert moved[0, 0, 4, 6] == 1.0 and moved.sum() == 1.0
    assert tta.views["shift_up"](x)[0, 0, 2, 4] == 1.0


def test_tta_bad_arguments_raise_user_error():
    with pytest.raises(UserError, match="unknown test-time transform 'blur'"):
        TestTimeAugmentation(("identity", "blur"))
    with pytest.raises(UserError, match="'mean' or 'max'"):
        TestTimeAugmentation(reduce="median")
    with pytest.raises(UserError, match="no view"):
        TestTimeAugmentation(("hflip",), flips=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pipeline_runs_on_gpu_and_matches_cpu_draws():
    x, y = batch(3)
    aug = create_augmentation("classic+cutout+mixup+label_smoothing", num_classes=K).to("cuda")
    torch.manual_seed(0)
    x_gpu, y_gpu = aug(x.cuda(), y.cuda())
    assert x_gpu.is_cuda and y_gpu.is_cuda
    torch.manual_seed(0)
    x_cpu, y_cpu = aug.to("cpu")(x, y)
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, atol=1e-4, rtol=0)
    torch.testing.assert_close(y_gpu.cpu(), y_cpu)
