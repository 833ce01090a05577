"""The resource budget: trials must fit beside the generator actors, or Tune waits forever."""

from __future__ import annotations

import math
import os

from raysweep.errors import UserError
from raysweep.plan.pools import sources_used
from raysweep.spec import Spec

def local_resources(num_cpus: float | None, num_gpus: float | None) -> tuple[float, float]:
    """What a local Ray instance started by `raysweep run` will have."""
    if num_gpus is None:
        import torch

        num_gpus = torch.cuda.device_count()
    return float(num_cpus or os.cpu_count() or 1), float(num_gpus)


def check_threads(spec: Spec) -> None:
    """A trial runs as many torch threads as the CPUs it holds; more would oversubscribe the
    machine once trials run beside generator actors."""
    threads, cpus = spec.training.threads, spec.tune.cpus_per_trial
    if threads is not None and threads > max(1, int(cpus)):
        raise UserError(f"training.threads: {threads} threads per trial on {cpus:g} CPU(s) per "
                        f"trial would oversubscribe the CPUs; set tune.cpus_per_trial: {threads} "
                        f"or leave training.threads unset (it follows tune.cpus_per_trial)")


def check_budget(spec: Spec, cpus: float, gpus: float, spread: bool = False) -> None:
    """A trial must fit beside the generator actors, or Tune would wait forever. (`run` releases
    the actors once the pools are full; this still guards any phase where both run.)

    `spread`: the GPUs are on several nodes, so fractional actors may fragment them.
    """
    synthesis, settings = spec.synthesis, spec.tune
    actors = synthesis.actors * len(sources_used(spec))
    held_cpu, held_gpu = actors * synthesis.cpus_per_actor, actors * synthesis.gpus_per_actor
    if held_gpu > gpus:
        raise UserError(f"synthesis: {actors} actor(s) x {synthesis.gpus_per_actor:g} GPU "
                        f"need {held_gpu:g} GPUs but {gpus:g} are available; lower synthesis.actors "
                        f"or synthesis.gpus_per_actor, or pass --num-gpus")
    if 0 < synthesis.gpus_per_actor < 1 and settings.gpus_per_trial >= 1:
        # A trial asking whole GPUs needs them whole. One node packs fractional actors onto
        # as few GPUs as fit; across nodes (`spread`) each actor may sit on a GPU of its own.
        touched = min(actors, math.floor(gpus)) if spread else math.ceil(held_gpu)
        if gpus - touched < settings.gpus_per_trial:
            raise UserError(
                f"tune.gpus_per_trial: a trial needs {settings.gpus_per_trial:g} whole GPU(s), but "
                f"{actors} actor(s) of {synthesis.gpus_per_actor:g} GPU may leave only "
                f"{max(0, gpus - touched):g} of {gpus:g} GPUs whole; trials would wait forever. "
                f"Use fewer actors, gpus_per_actor: 1, or a fractional tune.gpus_per_trial")
    for kind, held, total, per_trial in (("CPU", held_cpu, cpus, settings.cpus_per_trial),
                                         ("GPU", held_gpu, gpus, settings.gpus_per_trial)):
        if per_trial > 0 and total - held < per_trial:
            raise UserError(
                f"tune.{kind.lower()}s_per_trial: a trial needs {per_trial:g} {kind} but only "
                f"{max(0.0, total - held):g} of {total:g} stay free beside the generator actors "
                f"({held:g} held); trials would wait forever. Lower synthesis.actors or "
                f"synthesis.{kind.lower()}s_per_actor, or tune.{kind.lower()}s_per_trial")
