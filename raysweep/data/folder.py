"""`folder`: an ImageFolder tree on local disk, `path/<class name>/<image files>`.

Class names are the sorted sub-folder names; images in nested folders below a class folder
belong to that class. Hidden files and folders, and files without an image extension, are
skipped. Symlinks are followed, but each real folder is walked once and each real file counted
once (a link loop cannot repeat images or hang), and a file reachable from two classes is an
error. 16-bit images are scaled to 8 bits, not clipped.

Every image is decoded once, when `validate` (or `run`) first loads the folder, and the arrays
are cached under `~/.cache/raysweep/datasets/`, keyed by the files' paths, sizes and
modification times and the load options; trials load the cache instead of decoding again (a
cache file that is empty, damaged or of another shape is decoded again and replaced). A bad
tree fails in one line before any compute starts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from raysweep.data import register_dataset
from raysweep.data.base import ImageDataset
from raysweep.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MODES = ("L", "RGB")
MAX_IMAGE_SIZE = 1024
MAX_BYTES = 16 * 2**30  # decoded arrays beyond this would not fit in memory with room for training
_LAYOUT = "set dataset.path to a directory with one sub-folder per class"
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def check_folder(path: str | os.PathLike) -> dict[str, list[Path]]:
    """Validate an ImageFolder tree and return {class name: sorted image files}.

    Raises:
        UserError: the path is missing, not a directory, has fewer than two class folders,
            a class folder has no image files, a file sits in two classes, or an image file
            cannot be read.
    """
    tree = _scan(path)
    for files in tree.values():
        for file in files:
            try:
                with Image.open(file) as image:
                    image.verify()
            except _PIL_ERRORS as error:
                raise _corrupt(file, error) from None
    return tree


def _scan(path: str | os.PathLike) -> dict[str, list[Path]]:
    """{class name: sorted image files} without opening any image; UserError for a bad tree."""
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
    tree, owner = {}, {}
    for class_dir in class_dirs:
        files = _image_files(class_dir)
        if not files:
            raise UserError(f"folder dataset: class folder {class_dir} has no image files "
                            f"({' '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        for file in files:
            real = os.path.realpath(file)
            if owner.setdefault(real, class_dir.name) != class_dir.name:
                raise UserError(f"folder dataset: {file} is also in class {owner[real]!r} "
                                f"(through a symlink); give each image one class")
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
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise UserError(f"folder dataset: image_size must be an integer from 1 to "
                        f"{MAX_IMAGE_SIZE}, got {image_size!r}; set dataset.image_size to e.g. 32")
    tree = _scan(path)
    channels = 1 if mode == "L" else 3
    total = sum(len(files) for files in tree.values())
    if total * size * size * channels > MAX_BYTES:
        raise UserError(f"folder dataset: {total} images of {size}x{size}x{channels} need "
                        f"{total * size * size * channels / 2**30:.0f} GiB in memory; use a "
                        f"smaller dataset.image_size")
    images, labels = _decode_cached(tree, mode, size, channels)
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
    """Image files below a class folder, each real folder walked and each real file kept once."""
    found, seen_dirs, seen_files = [], set(), set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real_dir = os.path.realpath(dirpath)
        if real_dir in seen_dirs:  # reached again through a symlink: a loop or an alias
            dirnames[:] = []
            continue
        seen_dirs.add(real_dir)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            file = Path(dirpath) / name
            real = os.path.realpath(file)
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS) \
                    and real not in seen_files:
                seen_files.add(real)
                found.append(file)
    return sorted(found)


def _decode_cached(tree: dict[str, list[Path]], mode: str, size: int,
                   channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once and cache the arrays; later loads of the same files read the
    cache (a changed, added or removed file changes the key)."""
    files = [file for class_files in tree.values() for file in class_files]
    listing = [(name, str(file), *_stamp(file)) for name, class_files in tree.items()
               for file in class_files]
    key = hashlib.sha256(json.dumps([mode, size, listing]).encode()).hexdigest()[:24]
    cache = _cache_dir() / f"folder-{key}.npz"
    try:
        with np.load(cache, allow_pickle=False) as arrays:
            images, labels = arrays["images"], arrays["labels"]
        if images.dtype == np.uint8 and images.shape == (len(files), size, size, channels) \
                and labels.shape == (len(files),) and np.issubdtype(labels.dtype, np.integer):
            return images, labels
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # absent, empty (a crash before the data reached the disk) or damaged: decode
    images = np.empty((len(files), size, size, channels), dtype=np.uint8)
    labels = np.empty(len(files), dtype=np.int64)
    i = 0
    for label, class_files in enumerate(tree.values()):
        for file in class_files:
            images[i] = _load(file, mode, size).reshape(size, size, channels)
            labels[i] = label
            i += 1
    _save_atomic(cache, images, labels)
    return images, labels


def _stamp(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "raysweep" / "datasets"


def _save_atomic(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Best effort: a cache that cannot be written only costs decoding again. The data is on
    disk (fsync) before the rename, so a crash leaves the old file or the new one, never an
    empty one under the final name."""
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(buffer.getvalue())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass


def _load(file: Path, mode: str, size: int) -> np.ndarray:
    try:
        with Image.open(file) as image:
            image = _to_8bit(ImageOps.exif_transpose(image)).convert(mode)
            image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except _PIL_ERRORS as error:
        raise _corrupt(file, error) from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale scaled to 0-255; PIL's convert("L") would clip them (white)."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" else max(float(pixels.max()), 1.0)
        return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return image


def _corrupt(file: Path, error: Exception) -> UserError:
    return UserError(f"folder dataset: {file} is not a readable image ({_one_line(error)}); "
                     f"replace or delete the file")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
