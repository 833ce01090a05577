"""Trials start when their own data exists: the data gate and the on-demand services, on a
real local Ray with a real DDPM (no Tune: the gate is asked as Tune's loop would ask it)."""

from __future__ import annotations

import time

import pytest
import ray
from ray.tune.search import Searcher

from raysweep.plan import build_plan
from raysweep.plan.space import FixedConfigs
from raysweep.spec import load_spec
from raysweep.store import SyntheticStore
from raysweep.sweep.gate import DataGate
from raysweep.sweep.synthesis import SweepSynthesis

SPEC = """
name: gated
dataset: {name: digits, per_class: 8}
generator:
  name: ddpm
  options: {steps: 150, block_out_channels: [8, 16], image_size: 8, sample_steps: 2,
            batch_size: 16, num_threads: 1}
synthesis: {chunk_size: 16}
training: {epochs: 1, batch_size: 16, input_size: 16}
sweep:
  synthetic_ratio: [0, 0.5, 1]
  backbone: test_resnet
  seed: [0, 1]
"""


@pytest.fixture
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def drain(gate: DataGate, handed: list, until: float) -> None:
    """Ask the gate as Tune does until it is finished (or `until`); every config it hands out
    must read a prefix that the services' answer it decided on shows ready."""
    while time.monotonic() < until:
        config = gate.suggest(f"trial-{len(handed)}")
        if config == Searcher.FINISHED:
            return
        if config is None:
            time.sleep(0.2)
            continue
        trial = gate.planner.trial_plan(config)
        if trial.pool is not None:
            seen = gate.view._progress[trial.pool.source]["pools"][trial.pool]  # what it saw
            assert seen["ready"] >= trial.n_synthetic, (config, seen)
        handed.append((time.monotonic(), config))


def test_trials_without_synthetic_images_pass_while_the_generator_trains(
        local_ray, in_tmp_cwd, write_spec):
    plan = build_plan(load_spec(write_spec(SPEC)))
    store = SyntheticStore(plan.spec.store.path)
    planner = plan.trial_planner("gated-1", str(store.root))
    synthesis = SweepSynthesis(plan, store, planner, print)
    synthesis.start()
    gate = DataGate(FixedConfigs(plan.configs), planner, total=plan.trial_count,
                    lookahead=plan.trial_count)
    service = synthesis.services["ddpm"]
    # The two ratio-0 trials leave at once, while the generator still trains (its actor has
    # not even started); the others wait with the gate.
    first = [gate.suggest("trial-0"), gate.suggest("trial-1"), gate.suggest("trial-2")]
    assert [c["synthetic_ratio"] for c in first[:2]] == [0, 0] and first[2] is None
    assert ray.get(service.progress.remote())["state"] == "starting"
    handed = [(time.monotonic(), c) for c in first[:2]]
    # Every held trial's demand reached the service: each seed's pool, as far as ratio 1 reads.
    deadline = time.monotonic() + 300
    drain(gate, handed, deadline)
    assert len(handed) == plan.trial_count
    stats = ray.get(service.stats.remote())
    assert sorted(stats["generated"].values()) == [80, 80]  # exactly what ratio 1 reads
    # Nothing can ask again: the gate released the actors once the last trial left.
    deadline = time.monotonic() + 30
    while ray.get(service.progress.remote())["actors"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.get(service.progress.remote())["released"]
    assert gate.suggest("trial-late") == Searcher.FINISHED


def test_a_sampled_search_grows_pools_only_as_far_as_its_trials_ask(
        local_ray, in_tmp_cwd, write_spec):
    spec = SPEC.replace("  synthetic_ratio: [0, 0.5, 1]", "  synthetic_ratio: {uniform: [0, 1]}")
    spec = spec.replace("  seed: [0, 1]", "  seed: [0, 1]\ntune: {search_alg: random, num_samples: 4}")
    plan = build_plan(load_spec(write_spec(spec)))
    store = SyntheticStore(plan.spec.store.path)
    planner = plan.trial_planner("gated-2", str(store.root))
    synthesis = SweepSynthesis(plan, store, planner, print)
    synthesis.start()
    gate = DataGate(FixedConfigs(plan.configs), planner, total=plan.trial_count,
                    lookahead=plan.trial_count)
    handed: list = []
    drain(gate, handed, time.monotonic() + 300)
    assert len(handed) == plan.trial_count == 4
    read = {}
    for _, config in handed:
        trial = planner.trial_plan(config)
        if trial.pool is not None:
            read[trial.pool] = max(read.get(trial.pool, 0), trial.n_synthetic)
    stats = ray.get(synthesis.services["ddpm"].stats.remote())
    # The plan sized each pool for ratio 1 (80 images); the service made only what was read.
    assert {p.count for p in plan.pools} == {80}
    assert {pool: n for pool, n in stats["generated"].items() if n} == read
