"""The generator registry (timm-style): `create_generator("ddpm", steps=...)`, `list_generators()`.

Built-in generators register themselves when their module is imported below.
"""

from raysweep.generators.base import (Generator, create_generator, generator_class,
                                      list_generators, register_generator)
from raysweep.generators import ddpm  # noqa: E402,F401  (registers "ddpm")
from raysweep.generators import dcgan  # noqa: E402,F401  (registers "dcgan")
from raysweep.generators import vae  # noqa: E402,F401  (registers "vae")
from raysweep.generators import sd_text2img  # noqa: E402,F401  (registers "sd-text2img")
from raysweep.generators import sd_inpaint  # noqa: E402,F401  (registers "sd-inpaint")
from raysweep.generators import controls  # noqa: E402,F401  (registers "blur", "erase")

__all__ = ["Generator", "create_generator", "generator_class", "list_generators",
           "register_generator"]
