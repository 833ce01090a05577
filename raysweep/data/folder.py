"""`folder`: an ImageFolder tree on local disk, `path/<class name>/<image files>`.

Class names are the sorted sub-folder names; images in nested folders below a class folder
belong to that class. Hidden files and folders, and files without an image extension, are
skipped. `check_folder` validates the whole tree (every image opened and verified) before
anything is loaded, so a bad tree fails in one line before any compute starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from raysweep.data import register_dataset
from raysweep.data.base import ImageDataset
from raysweep.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MODES = ("L", "RGB")
_LAYOUT = "set dataset.path to a directory with one sub-folder per class"
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def check_folder(path: str | os.PathLike) -> dict[str, list[Path]]:
    """Validate an ImageFolder tree and return {class name: sorted image files}.

    Raises:
        UserError: the path is missing, not a directory, has fewer than two class folders,
            a class folder has no image files, or an image file cannot be read.
    """
    root = _local_root(path)
    try:
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise UserError(f"folder dataset: cannot list {root} ({_one_line(error)}); {_LAYOUT}") from None
    if not class_dirs:
        raise UserError(f"folder dataset: {root} has no class sub-folders; "
                        f"put each class's images in {root}/<class name>/")
    if len(class_dirs) == 1:
        raise UserError(f"folder dataset: {root} has only one class folder ({class_dirs[0].name}); "
                        f"{_LAYOUT}, at least two")
    tree = {}
    for class_dir in class_dirs:
        files = _image_files(class_dir)
        if not files:
            raise UserError(f"folder dataset: class folder {class_dir} has no image files "
                            f"({' '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        for file in files:
            try:
                with Image.open(file) as image:
                    image.verify()
            except _PIL_ERRORS as error:
                raise _corrupt(file, error) from None
        tree[class_dir.name] = files
    return tree


@register_dataset("folder")
def folder(path: str | os.PathLike, mode: str = "RGB", image_size: int | None = 32,
           flips_change_label: bool = False) -> ImageDataset:
    """Load an ImageFolder tree into memory.

    Args:
        path: root directory holding one sub-folder per class.
        mode: "RGB" (3 channels) or "L" (grayscale, 1 channel).
        image_size: output side in pixels; each image is centre-cropped to a square and
            resized (bilinear). None means 32.
        flips_change_label: True where a mirrored image means another class (text, digits).
    """
    if mode not in MODES:
        raise UserError(f"folder dataset: mode must be one of {', '.join(MODES)}, got {mode!r}; "
                        f"set dataset.mode to RGB or L")
    size = 32 if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"folder dataset: image_size must be a positive integer, got {image_size!r}; "
                        f"set dataset.image_size to e.g. 32")
    tree = check_folder(path)
    channels = 1 if mode == "L" else 3
    total = sum(len(files) for files in tree.values())
    images = np.empty((total, size, size, channels), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    i = 0
    for label, files in enumerate(tree.values()):
        for file in files:
            images[i] = _load(file, mode, size).reshape(size, size, channels)
            labels[i] = label
            i += 1
    names = tuple(tree)
    return ImageDataset(
        images, labels, names, flips_change_label=bool(flips_change_label), name="folder",
        extra={"prompt_names": tuple(n.replace("_", " ").replace("-", " ") for n in names),
               "source": str(Path(path).expanduser().resolve())},
    )


def _local_root(path: str | os.PathLike) -> Path:
    text = os.fspath(path)
    if "://" in text:
        raise UserError(f"folder dataset: {text} is a remote path and only local folders are read; "
                        f"copy it to disk (e.g. `aws s3 sync {text} DIR`) and set dataset.path to DIR")
    root = Path(text).expanduser()
    if not root.exists():
        raise UserError(f"folder dataset: {root} does not exist; {_LAYOUT}")
    if not root.is_dir():
        raise UserError(f"folder dataset: {root} is not a directory; {_LAYOUT}")
    return root


def _image_files(class_dir: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _load(file: Path, mode: str, size: int) -> np.ndarray:
    try:
        with Image.open(file) as image:
            image = ImageOps.exif_transpose(image).convert(mode)
            image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except _PIL_ERRORS as error:
        raise _corrupt(file, error) from None


def _corrupt(file: Path, error: Exception) -> UserError:
    return UserError(f"folder dataset: {file} is not a readable image ({_one_line(error)}); "
                     f"replace or delete the file")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
