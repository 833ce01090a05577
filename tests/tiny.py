"""Tiny settings, data, models and helpers shared by the store, synthesis, generator and sweep
tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from raysweep.store.store import PoolImages

# A DDPM that trains in seconds: enough to exercise the real fit/save/load/sample path.
TINY_DDPM = {"steps": 3, "block_out_channels": [8, 16], "image_size": 8, "sample_steps": 2,
             "batch_size": 16}


def images(start: int, stop: int) -> PoolImages:
    """Pool images [start, stop) whose pixels, labels and seeds encode their index."""
    index = np.arange(start, stop)
    pixels = (index % 255).astype(np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    return PoolImages(pixels, index % 10, index)


def shard_names(store, key: str) -> list[str]:
    """The pool's shard file names, in manifest order."""
    return [shard["file"] for shard in store.manifest(key)["shards"]]


BATCH = 3  # images per batch in the concurrent-append tests


def worker_appends(root: str, key: str, worker: int, batches: int, extend_to: int | None,
                   barrier) -> None:
    """One of several processes writing to one pool (run with multiprocessing's spawn); all
    start writing together, at `barrier`.

    batches: append that many batches of this worker's own images (seeds worker * 10**6 + i).
    extend_to: instead, extend the shared pool [0, extend_to) from wherever it ends, in chunks
        whose size differs per worker, as two sweeps filling the same pool do.
    """
    from raysweep.store.store import SyntheticStore

    store = SyntheticStore(root)
    store.count(key)  # imports and clients ready before the race starts
    barrier.wait()
    if extend_to is None:
        for batch in range(batches):
            first = worker * 10**6 + batch * BATCH
            store.append(key, images(first, first + BATCH))
        return
    chunk = 5 + 4 * worker
    while (have := store.count(key)) < extend_to:
        store.append(key, images(have, min(have + chunk, extend_to)), start=have)


def check_appends(store, key: str, workers: int, batches: int) -> None:
    """Every worker's images are in the pool exactly once, each worker's in its own order."""
    total = workers * batches * BATCH
    assert store.count(key) == total and store.verify(key) == []
    seeds = store.read(key, total).seeds
    assert len(set(seeds.tolist())) == total
    for worker in range(workers):
        mine = seeds[seeds // 10**6 == worker]
        assert np.array_equal(mine, worker * 10**6 + np.arange(batches * BATCH))


def generator_actor_pids() -> set[int]:
    """Pids of this test's GeneratorActor processes: Ray sets their process title, and they
    descend from this process (the local Ray it started), never another user's Ray."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and \
                    (entry / "cmdline").read_bytes().startswith(b"ray::GeneratorActor") and \
                    descends_from_us(int(entry.name)):
                pids.add(int(entry.name))
        except OSError:
            pass
    return pids


def descends_from_us(pid: int) -> bool:
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent pid
        if pid == os.getpid():
            return True
    return False


# A Stable Diffusion pipeline with random weights that runs 32x32 images in seconds.
def _byte_level_vocab() -> list[str]:
    """The 256 byte symbols of GPT-2/CLIP byte-level BPE (no merges needed: every text encodes)."""
    visible = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
    codes, extra = visible[:], 0
    for byte in range(256):
        if byte not in visible:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def _tiny_tokenizer(directory):
    from transformers import CLIPTokenizer

    chars = _byte_level_vocab()
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=77)


def save_tiny_sd_pipeline(directory: Path, *, inpaint: bool = False) -> None:
    """Save a tiny random Stable Diffusion pipeline (an inpainting one: a UNet with 9 input
    channels) into `directory`, built the way diffusers' own tests build theirs
    (`get_dummy_components`), with a byte-level CLIP tokenizer written beside it (diffusers'
    tests download `hf-internal-testing/tiny-random-clip`; this runs offline)."""
    import torch
    from diffusers import (AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline,
                           StableDiffusionPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
        in_channels=9 if inpaint else 4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, pad_token_id=1,
        vocab_size=1000))
    # Stable Diffusion 1.5's own scheduler config.
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipeline_class = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = pipeline_class(unet=unet, vae=vae, text_encoder=text_encoder,
                          tokenizer=_tiny_tokenizer(directory.parent / "tokenizer-src"),
                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                          requires_safety_checker=False)
    pipe.save_pretrained(str(directory))
