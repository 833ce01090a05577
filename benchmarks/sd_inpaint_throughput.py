"""Images per second through `sd-inpaint` at Stable Diffusion 1.5 size, and the GPU ceiling share.

    python benchmarks/sd_inpaint_throughput.py                  # one process, batch 1, 4, 16
    python benchmarks/sd_inpaint_throughput.py --actors 4       # 4 processes share one GPU
    python benchmarks/sd_inpaint_throughput.py --smoke-test     # tiny config on CPU, seconds

Builds Stable Diffusion 1.5's inpainting UNet (9 input channels), VAE and CLIP ViT-L/14 text
encoder from their configs with random weights (nothing is downloaded; throughput does not
depend on the weights, and a byte-level tokenizer stands in for CLIP's, since prompt content
does not matter either), saves them with `save_pretrained` and runs raysweep's real
`sd-inpaint` generator on them: 512x512, 25 DPM-Solver++ steps, fp16, SDPA attention,
channels-last, guidance 7.5 (two UNet forwards per step, batched together), the right half of
each image repainted.

In the same run, the same weights go through `StableDiffusionInpaintPipeline` as a user writes
it (`from_pretrained` in fp16, `.to(device)`, DPM-Solver++ from the pipeline's config, one call
per batch with a list of seeded generators, PIL images in and out), and each batch size prints
raysweep's rate over that plain-diffusers rate.

`--actors N` starts N processes that share the GPU the way generator actors do: each caps its
memory at 0.95 / N of the GPU (`gpu_memory_fraction`, i.e.
`torch.cuda.set_per_process_memory_fraction`), all start each timed section together, and the
aggregate rate is all their images over the time until the last one finishes.

Ceiling: the UNet's FLOPs per forward are counted with `torch.utils.flop_counter` on the meta
device (803 GFLOPs for SD 1.5 at a 64x64 latent) x 2 forwards per step x steps per image, against
`--peak-tflops` (990: H100 SXM dense fp16 tensor-core peak). The VAE and the text encoder are left
out of the numerator, so the fraction slightly understates the work done.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import tempfile
import time
import warnings

import numpy as np
import torch

FULL = {
    "size": 512, "steps": 25, "batch_sizes": (1, 4, 16), "repeats": 3,
    "unet": dict(sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                 "CrossAttnUpBlock2D")),
    "vae": dict(block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3,
                latent_channels=4, layers_per_block=2, sample_size=512,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4),
    "text": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                 num_hidden_layers=12, vocab_size=49408, max_position_embeddings=77,
                 hidden_act="quick_gelu", projection_dim=768),
}
SMOKE = {
    "size": 64, "steps": 2, "batch_sizes": (1, 2), "repeats": 1,
    "unet": dict(sample_size=32, in_channels=9, out_channels=4, layers_per_block=2,
                 block_out_channels=(32, 64), cross_attention_dim=32,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
    "vae": dict(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2),
    "text": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                 num_hidden_layers=5, vocab_size=1000, max_position_embeddings=77),
}


def byte_level_tokenizer(directory: str):
    """A CLIP tokenizer over the 256 byte symbols only (no merges): every prompt encodes."""
    from transformers import CLIPTokenizer

    visible = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
    codes = visible + [256 + i for i, _ in enumerate(b for b in range(256) if b not in visible)]
    chars = [chr(c) for c in codes]
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w") as handle:
        json.dump({t: i for i, t in enumerate(tokens)}, handle)
    with open(os.path.join(directory, "merges.txt"), "w") as handle:
        handle.write("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(directory, model_max_length=77)


def save_random_pipeline(config: dict, directory: str, dtype: torch.dtype,
                         device: torch.device) -> None:
    """SD 1.5-shaped inpainting pipeline with random weights, written by save_pretrained."""
    from diffusers import (AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU is much faster than on the CPU
        unet = UNet2DConditionModel(**config["unet"])
        vae = AutoencoderKL(**config["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1,
                                                    pad_token_id=1, **config["text"]))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionInpaintPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder,
        tokenizer=byte_level_tokenizer(os.path.join(directory, "tokenizer-src")),
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    cast = {torch.float16: "half", torch.bfloat16: "bfloat16", torch.float32: "float"}[dtype]
    for model in (unet, vae, text_encoder):
        getattr(model, cast)()  # nn.Module's cast: diffusers' .to(dtype) warns about fp32 modules
    pipe.save_pretrained(os.path.join(directory, "pipeline"))
    del pipe, unet, vae, text_encoder
    if device.type == "cuda":  # leave the GPU's memory to the actors
        torch.cuda.empty_cache()


def unet_gflops(config: dict) -> float:
    """FLOPs of one UNet forward on one latent, counted on the meta device (no memory, ~1 s)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    unet_config = config["unet"]
    latent = config["size"] // 2 ** (len(config["vae"]["block_out_channels"]) - 1)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        sample = torch.randn(1, unet_config["in_channels"], latent, latent)
        context = torch.randn(1, 77, unet_config["cross_attention_dim"])
        with FlopCounterMode(display=False) as counter:
            unet(sample, torch.tensor([500]), encoder_hidden_states=context)
    return counter.get_total_flops() / 1e9


def worker(rank: int, args: argparse.Namespace, config: dict, model_dir: str, barrier,
           results) -> None:
    """One generator actor: load once, then for each batch size warm up, wait, time."""
    from raysweep.generators import create_generator

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # random fp16 weights overflow
    device = torch.device(args.device)
    if device.type == "cpu":  # actors share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.actors))
    share = 0.95 / args.actors if device.type == "cuda" and args.actors > 1 else None
    generator = create_generator(
        "sd-inpaint", model=model_dir, steps=config["steps"], scheduler="dpm++",
        dtype=args.dtype, device=args.device, batch_size=max(config["batch_sizes"]),
        attention="sdpa", channels_last=True, compile=args.compile, gpu_memory_fraction=share,
        height=config["size"], width=config["size"], local_files_only=True)
    size = config["size"]
    generator.fit(np.zeros((1, size, size, 3), np.uint8), np.zeros(1), 1, seed=0,
                  class_names=["object"])
    rng = np.random.default_rng(rank)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for batch in config["batch_sizes"]:
        images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        masks = np.zeros((batch, size, size), np.float32)
        masks[:, :, size // 2:] = 1.0
        labels, seeds = np.zeros(batch, np.int64), np.arange(batch) + 1000 * rank
        error = None
        try:
            generator.sample_inpaint(images, masks, labels, seeds)  # warm-up (and compile)
        except torch.cuda.OutOfMemoryError as oom:
            error = f"out of memory: {str(oom).splitlines()[0][:120]}"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        barrier.wait()
        sync()
        start = time.perf_counter()
        if error is None:
            for _ in range(config["repeats"]):
                generator.sample_inpaint(images, masks, labels, seeds)
        sync()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        results.put((rank, batch, batch * config["repeats"], seconds, peak, error))
        barrier.wait()  # nobody warms up the next batch size while others are still timed


def plain_diffusers_rate(args: argparse.Namespace, config: dict, model_dir: str,
                         batch: int) -> float:
    """Images/s of StableDiffusionInpaintPipeline written the plain way, same weights and
    settings as the generator (warm-up call, then `repeats` timed calls)."""
    import diffusers
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionInpaintPipeline
    from packaging.version import Version
    from PIL import Image

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # random fp16 weights overflow
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    dtype_key = "dtype" if Version(diffusers.__version__).release >= (0, 40) else "torch_dtype"
    pipe = StableDiffusionInpaintPipeline.from_pretrained(model_dir, **{dtype_key: dtypes[args.dtype]})
    pipe = pipe.to(args.device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    size = config["size"]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
              for _ in range(batch)]
    mask = np.zeros((size, size), np.uint8)
    mask[:, size // 2:] = 255
    masks = [Image.fromarray(mask)] * batch

    def call() -> None:
        pipe(prompt=["a photo of a object"] * batch, image=images, mask_image=masks,
             height=size, width=size, num_inference_steps=config["steps"], guidance_scale=7.5,
             generator=[torch.Generator().manual_seed(i) for i in range(batch)])

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    call()
    sync()
    start = time.perf_counter()
    for _ in range(config["repeats"]):
        call()
    sync()
    rate = batch * config["repeats"] / (time.perf_counter() - start)
    call = pipe = None  # free the pipeline before the next one loads
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=1, help="processes sharing the GPU")
    parser.add_argument("--batch-sizes", default=None, help="comma separated; default 1,4,16")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per batch size")
    parser.add_argument("--peak-tflops", type=float, default=990.0,
                        help="the device's dense fp16 peak (H100 SXM: 990)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu for --smoke-test")
    parser.add_argument("--dtype", default=None, help="fp16 (default), bf16 or fp32")
    parser.add_argument("--compile", nargs="?", const=True, default=False,
                        help="torch.compile the UNet; optionally a mode, e.g. reduce-overhead "
                             "(CUDA graphs)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="tiny UNet/VAE/text encoder, 64x64, 2 steps, on CPU in fp32")
    args = parser.parse_args()
    config = dict(SMOKE if args.smoke_test else FULL)
    if args.batch_sizes:
        config["batch_sizes"] = tuple(int(b) for b in args.batch_sizes.split(","))
    if args.repeats:
        config["repeats"] = args.repeats
    args.device = args.device or ("cpu" if args.smoke_test else "cuda")
    args.dtype = args.dtype or ("fp32" if args.smoke_test else "fp16")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; run with --smoke-test (CPU) or on a GPU machine")
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

    gflops = unet_gflops(config)
    flops_per_image = gflops * 1e9 * 2 * config["steps"]  # guidance: 2 forwards per step
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={name} torch={torch.__version__} actors={args.actors} dtype={args.dtype} "
          f"size={config['size']} steps={config['steps']} compile={args.compile}")
    print(f"UNet forward: {gflops:.1f} GFLOPs; {flops_per_image / 1e12:.2f} TFLOP per image; "
          f"peak {args.peak_tflops:.0f} TFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        save_random_pipeline(config, tmp, dtypes[args.dtype], device)
        print(f"built and saved the random pipeline in {time.perf_counter() - started:.1f}s")
        model_dir = os.path.join(tmp, "pipeline")
        context = mp.get_context("spawn")
        barrier, results = context.Barrier(args.actors), context.Queue()
        if args.actors == 1:
            worker(0, args, config, model_dir, barrier, results)
        else:
            processes = [context.Process(target=worker,
                                         args=(rank, args, config, model_dir, barrier, results))
                         for rank in range(args.actors)]
            for process in processes:
                process.start()
        rows = []
        while len(rows) < args.actors * len(config["batch_sizes"]):
            try:
                rows.append(results.get(timeout=10))
            except queue.Empty:
                failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)] \
                    if args.actors > 1 else []
                if failed:  # the others would wait at the barrier forever
                    for process in processes:
                        process.terminate()
                    raise SystemExit(f"an actor exited with code {failed[0]}")
        if args.actors > 1:
            for process in processes:
                process.join()
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the single actor ran in this process
        plain = {batch: plain_diffusers_rate(args, config, model_dir, batch)
                 for batch in config["batch_sizes"]}
    for batch in config["batch_sizes"]:
        mine = [row for row in rows if row[1] == batch]
        errors = [row[5] for row in mine if row[5]]
        if errors:
            print(f"batch {batch:3d}  actors {args.actors}  {errors[0]}")
            continue
        images = sum(row[2] for row in mine)
        seconds = max(row[3] for row in mine)
        rate = images / seconds
        fraction = rate * flops_per_image / (args.peak_tflops * 1e12)
        memory = f"  peak memory/actor {max(row[4] for row in mine):5.1f} GiB" \
            if device.type == "cuda" else ""
        print(f"batch {batch:3d}  actors {args.actors}  {rate:8.2f} images/s  "
              f"{fraction:6.1%} of the UNet compute ceiling{memory}  plain diffusers "
              f"{plain[batch]:8.2f} images/s  raysweep/diffusers {rate / plain[batch]:5.2f}x")


if __name__ == "__main__":
    main()
