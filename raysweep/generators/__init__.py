"""The generator registry (timm-style): `create_generator("ddpm", steps=...)`, `list_generators()`.

Built-in generators register themselves when their module is imported below.
"""

from raysweep.generators.base import (BaseGenerator, Generator, create_generator,
                                      generator_class, list_generators, register_generator,
                                      register_to_config)
from raysweep.generators import ddpm  # noqa: E402,F401  (registers "ddpm")
from raysweep.generators import dcgan  # noqa: E402,F401  (registers "dcgan")
from raysweep.generators import vae  # noqa: E402,F401  (registers "vae")
from raysweep.generators import sd_text2img  # noqa: E402,F401  (registers "sd-text2img")
from raysweep.generators import sd_inpaint  # noqa: E402,F401  (registers "sd-inpaint")
from raysweep.generators import sd_img2img  # noqa: E402,F401  (registers "sd-img2img")
from raysweep.generators import controls  # noqa: E402,F401  (registers "blur", "erase")

__all__ = ["BaseGenerator", "Generator", "create_generator", "generator_class",
           "list_generators", "register_generator", "register_to_config"]
