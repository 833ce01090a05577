"""What the two Stable Diffusion generators share: per-class prompt embeddings, the safety
checker's count, and the pipeline's output brought back to the data's shape."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image


def _to_data_shape(images: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """float (N, h, w, 3) in [0, 1] from the pipeline -> uint8 (N, height, width, channels)."""
    out = np.empty((images.shape[0], height, width, channels), np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8))
        if pil.size != (width, height):
            pil = pil.resize((width, height), Image.Resampling.LANCZOS)
        if channels == 1:
            pil = pil.convert("L")
        out[i] = np.asarray(pil).reshape(height, width, channels)
    return out


class ClassPrompts:
    """Encodes each class's prompt once (`_encode_class_prompts`) and hands the pipeline the
    embeddings of a batch's labels; counts images the safety checker flagged. Needs `name`, `pipe`,
    `class_names`, `prompt_template`, `negative_prompt`, `guidance_scale`, `nsfw_flagged`."""

    @torch.no_grad()
    def _encode_class_prompts(self) -> None:
        prompts = [self.prompt_template.format(label=name) for name in self.class_names]
        negative = None if self.negative_prompt is None else [self.negative_prompt] * len(prompts)
        # The pipeline's own encoding, as its __call__ would do it; the negative embeddings
        # are None without guidance.
        self.prompt_embeds, self.negative_prompt_embeds = self.pipe.encode_prompt(
            prompts, self.pipe.device, 1, self.guidance_scale > 1, negative_prompt=negative)

    def _prompt_embeds(self, labels: np.ndarray) -> dict[str, torch.Tensor | None]:
        """The pipeline's prompt arguments for these labels, from the per-class embeddings."""
        index = torch.from_numpy(labels).to(self.prompt_embeds.device)
        negative = self.negative_prompt_embeds
        return {"prompt_embeds": self.prompt_embeds[index],
                "negative_prompt_embeds": None if negative is None else negative[index]}

    def _count_flagged(self, result) -> None:
        flagged = sum(bool(f) for f in (getattr(result, "nsfw_content_detected", None) or []))
        if flagged:
            self.nsfw_flagged += flagged
            warnings.warn(f"{self.name}: the safety checker blacked out {flagged} image(s) "
                          f"({self.nsfw_flagged} so far); set safety_checker: false to keep them",
                          stacklevel=3)
