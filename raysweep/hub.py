"""Where pretrained diffusers pipelines come from: offline by default, one clear error otherwise."""

from __future__ import annotations

import hashlib
import os

from raysweep.errors import UserError

ALLOW_DOWNLOADS_ENV = "RAYSWEEP_ALLOW_DOWNLOADS"


def downloads_allowed() -> bool:
    """True when the user opted in to hub downloads with RAYSWEEP_ALLOW_DOWNLOADS=1."""
    return os.environ.get(ALLOW_DOWNLOADS_ENV, "").strip().lower() in ("1", "true", "yes")


def weights_error(generator: str, model: str, cause: BaseException | None = None) -> UserError:
    """The one-line error for weights that cannot be loaded, naming the ways to provide them."""
    if _looks_local(model):
        if cause is not None:
            detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        else:
            detail = "no model_index.json" if os.path.isdir(model) else "no such folder"
        return UserError(f"{generator}: {model!r} cannot be loaded as a diffusers pipeline "
                         f"folder ({detail}); set generator.options.model to a folder saved with "
                         f"save_pretrained, or to a hub id whose weights you downloaded once with "
                         f"`hf download ID`")
    return UserError(f"{generator}: weights for {model!r} are not available offline; download them "
                     f"once with `hf download {model}` (or set generator.options.model to a local "
                     f"folder saved with save_pretrained), or set {ALLOW_DOWNLOADS_ENV}=1")


def check_weights_available(model: str, *, generator: str,
                            local_files_only: bool = True) -> str | None:
    """Raise `weights_error` unless `model` loads without the network; return its local folder.

    A local folder must hold model_index.json; a hub id must be in the local hub cache, unless
    `local_files_only` is False (then a missing hub id is downloaded at load time: None).
    """
    if _looks_local(model):
        if not os.path.isfile(os.path.join(model, "model_index.json")):
            raise weights_error(generator, model)
        return model
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return snapshot_download(model, local_files_only=True)
    except (OSError, HFValidationError) as err:
        if local_files_only or isinstance(err, HFValidationError):
            raise weights_error(generator, model) from err
        return None


def weights_fingerprint(folder: str) -> str:
    """A cheap sha256 that changes when any file under `folder` changes: every file's path and
    size, and three 64 KiB windows of its bytes (a fine-tune that keeps file sizes still shows)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            digest.update(f"{os.path.relpath(path, folder)}\0{size}\0".encode())
            with open(path, "rb") as handle:
                for offset in sorted({0, max(0, size // 2 - 32768), max(0, size - 65536)}):
                    handle.seek(offset)
                    digest.update(handle.read(65536))
    return digest.hexdigest()


def _looks_local(model: str) -> bool:
    return os.path.isabs(model) or model.startswith((".", "~")) or os.path.exists(model)
