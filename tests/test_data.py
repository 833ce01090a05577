"""Dataset registry, the three built-in entries, folder validation and seeded splits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import raysweep.data
from raysweep.data import (ImageDataset, create_dataset, list_datasets, register_dataset,
                           split_dataset)
from raysweep.data.folder import check_folder
from raysweep.errors import UserError


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    return create_dataset("mnist5k")


def _png(path, value: int, size: int = 8, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(path)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "imgs"
    for label, name in enumerate(["cat", "dog"]):
        for i in range(3):
            _png(root / name / f"{i}.png", 40 * label + i)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_registry_lists_builtins_and_rejects_unknown_names():
    assert {"mnist5k", "digits", "folder"} <= set(list_datasets())
    with pytest.raises(UserError, match="mnist5k") as info:
        create_dataset("cifar-nope")
    assert "cifar-nope" in str(info.value) and "\n" not in str(info.value)


def test_registry_rejects_unknown_and_missing_options():
    with pytest.raises(UserError, match="colour"):
        create_dataset("digits", colour=True)
    with pytest.raises(UserError, match="path"):
        create_dataset("folder")
    with pytest.raises(UserError, match="image_size"):
        create_dataset("digits", image_size=0)


def test_register_dataset_adds_an_entry_with_generic_resize(monkeypatch):
    monkeypatch.setattr(raysweep.data, "_REGISTRY", dict(raysweep.data._REGISTRY))

    @register_dataset("_tiny_test")
    def tiny() -> ImageDataset:
        return ImageDataset(np.zeros((3, 4, 4, 1), np.uint8), np.arange(3), ("a", "b", "c"))

    ds = create_dataset("_tiny_test", image_size=6)
    assert ds.images.shape == (3, 6, 6, 1) and ds.name == "_tiny_test"
    assert "_tiny_test" in list_datasets()


def test_mnist5k_is_5000_balanced_28x28_digits(mnist):
    assert mnist.images.shape == (5000, 28, 28, 1) and mnist.images.dtype == np.uint8
    assert mnist.labels.dtype == np.int64 and mnist.class_names == tuple("0123456789")
    counts = mnist.class_counts()
    assert counts.sum() == 5000 and counts.min() >= 400
    assert mnist.flips_change_label and mnist.images.max() == 255
    assert len(mnist.extra["prompt_names"]) == 10


def test_digits_loads_scaled_to_uint8():
    ds = create_dataset("digits")
    assert ds.images.shape == (1797, 8, 8, 1) and ds.images.dtype == np.uint8
    assert ds.images.max() == 255 and ds.num_classes == 10 and ds.flips_change_label


def test_image_size_option_resizes():
    ds = create_dataset("digits", image_size=16)
    assert ds.images.shape == (1797, 16, 16, 1) and ds.images.max() > 200


def test_folder_round_trip(tree):
    ds = create_dataset("folder", path=str(tree))
    assert ds.class_names == ("cat", "dog") and ds.images.shape == (6, 32, 32, 3)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.images[4, 0, 0].tolist() == [41, 41, 41]  # dog/1.png
    gray = create_dataset("folder", path=tree, mode="L", image_size=8)
    assert gray.images.shape == (6, 8, 8, 1) and not gray.flips_change_label
    assert list(check_folder(tree)) == ["cat", "dog"]


@pytest.mark.parametrize("case", ["missing", "file", "no_classes", "one_class", "empty_class",
                                  "only_text", "corrupt"])
def test_folder_bad_input_names_the_path(tmp_path, tree, case):
    root, named = tree, tree
    if case == "missing":
        root = named = tmp_path / "nowhere"
    elif case == "file":
        root = named = tmp_path / "file.png"
        root.write_bytes(b"x")
    elif case == "no_classes":
        root = named = tmp_path / "flat"
        _png(root / "a.png", 1)
    elif case == "one_class":
        root = named = tmp_path / "single"
        _png(root / "cat" / "a.png", 1)
    elif case == "empty_class":
        named = tree / "bird"
        named.mkdir()
    elif case == "only_text":
        named = tree / "bird"
        named.mkdir()
        (named / "readme.md").write_text("hi")
    elif case == "corrupt":
        named = tree / "cat" / "x.png"
        named.write_bytes(b"garbage, not a png")
    for call in (lambda: check_folder(root), lambda: create_dataset("folder", path=str(root))):
        with pytest.raises(UserError) as info:
            call()
        message = str(info.value)
        assert str(named) in message and "\n" not in message


def test_folder_rejects_bad_mode(tree):
    with pytest.raises(UserError, match="mode"):
        create_dataset("folder", path=tree, mode="CMYK")


def test_splits_are_seeded_disjoint_and_stratified(mnist):
    a = split_dataset(mnist, seed=1)
    b = split_dataset(mnist, seed=1)
    c = split_dataset(mnist, seed=2)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert np.array_equal(a.train_index, b.train_index)
    parts = [set(a.train_index), set(a.val_index), set(a.test_index)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, parts)) == len(mnist)
    assert a.test.class_counts().tolist() == [100] * 10
    assert a.val.class_counts().tolist() == [50] * 10
    assert a.train.class_names == mnist.class_names
    assert np.array_equal(a.train.images, mnist.images[a.train_index])


def test_per_class_cuts_train_only_and_nests(mnist):
    full = split_dataset(mnist, seed=3)
    few = split_dataset(mnist, per_class=5, seed=3)
    more = split_dataset(mnist, per_class=20, seed=3)
    assert few.train.class_counts().tolist() == [5] * 10
    assert few.val.fingerprint() == full.val.fingerprint()
    assert few.test.fingerprint() == full.test.fingerprint()
    assert set(few.train_index) <= set(more.train_index) <= set(full.train_index)


def test_split_needs_three_images_per_class():
    ds = ImageDataset(np.zeros((5, 2, 2, 1), np.uint8), np.array([0, 0, 0, 1, 1]), ("a", "b"))
    with pytest.raises(UserError, match="'b'"):
        split_dataset(ds)
    tiny = split_dataset(ImageDataset(np.zeros((6, 2, 2, 1), np.uint8),
                                      np.array([0, 0, 0, 1, 1, 1]), ("a", "b")))
    assert [len(tiny.train), len(tiny.val), len(tiny.test)] == [2, 2, 2]


@pytest.mark.parametrize("kwargs", [{"val_fraction": 1.0}, {"test_fraction": -0.1},
                                    {"val_fraction": 0.5, "test_fraction": 0.5},
                                    {"per_class": 0}])
def test_split_rejects_bad_options(mnist, kwargs):
    with pytest.raises(UserError):
        split_dataset(mnist, **kwargs)
