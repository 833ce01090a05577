"""Spec validation: every bad input is one line on stderr and exit code 2, before Ray starts."""

from __future__ import annotations

import pytest
from PIL import Image

from raysweep.cli import main
from raysweep.spec import Axis, apply_overrides, load_spec, parse_spec

GOOD = {"name": "t", "dataset": {"name": "digits", "per_class": 10},
        "training": {"epochs": 1},
        "sweep": {"synthetic_ratio": [0, 1], "backbone": "resnet10t", "seed": [0, 1]}}


def validate(path, capsys, *extra):
    code = main(["validate", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expect_error(path, capsys, *words, extra=()):
    code, out, err = validate(path, capsys, *extra)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_good_spec_validates_and_counts_trials(write_spec, capsys):
    code, out, err = validate(write_spec(GOOD), capsys)
    assert code == 0, err
    assert "4 trial(s)" in out
    assert "seed 0:" in out and "seed 1:" in out


def test_yaml_syntax_error(write_spec, capsys):
    expect_error(write_spec("name: x\nsweep: [unclosed\n"), capsys, "YAML syntax error", "line")


def test_missing_spec_file(tmp_path, capsys):
    expect_error(tmp_path / "nope.yaml", capsys, "nope.yaml", "no such spec file")


def test_unknown_key_names_the_key_and_known_ones(write_spec, capsys):
    line = expect_error(write_spec({**GOOD, "training": {"epochz": 2}}), capsys,
                        "training.epochz", "unknown key")
    assert "epochs" in line


def test_wrong_type(write_spec, capsys):
    expect_error(write_spec({**GOOD, "training": {"epochs": "many"}}), capsys,
                 "training.epochs", "'many'")


def test_negative_ratio(write_spec, capsys):
    spec = {**GOOD, "sweep": {**GOOD["sweep"], "synthetic_ratio": [0, -0.5]}}
    expect_error(write_spec(spec), capsys, "synthetic_ratio", "-0.5")


def test_filter_threshold_is_a_probability(write_spec, capsys):
    spec = {**GOOD, "sweep": {**GOOD["sweep"], "filter_threshold": [0, 1.5]}}
    expect_error(write_spec(spec), capsys, "filter_threshold", "1.5", "<= 1")


def test_negative_ratio_in_a_distribution(write_spec, capsys):
    spec = {**GOOD, "tune": {"num_samples": 2},
            "sweep": {**GOOD["sweep"], "synthetic_ratio": {"uniform": [-1, 2]}}}
    expect_error(write_spec(spec), capsys, "synthetic_ratio", "-1")


def test_replace_mode_caps_the_ratio(write_spec, capsys):
    spec = {**GOOD, "synthesis": {"mode": "replace"}}
    spec["sweep"] = {**GOOD["sweep"], "synthetic_ratio": [0, 2]}
    expect_error(write_spec(spec), capsys, "replace", "<= 1")


def test_unknown_backbone_suggests_names(write_spec, capsys):
    spec = {**GOOD, "sweep": {**GOOD["sweep"], "backbone": ["resnet181"]}}
    line = expect_error(write_spec(spec), capsys, "resnet181", "timm")
    assert "resnet18" in line


def test_unknown_generator_lists_known(write_spec, capsys):
    expect_error(write_spec({**GOOD, "generator": {"name": "stylegan9"}}), capsys,
                 "stylegan9", "ddpm")


def test_unknown_dataset_lists_known(write_spec, capsys):
    expect_error(write_spec({**GOOD, "dataset": {"name": "imagenet"}}), capsys,
                 "imagenet", "mnist5k", "digits", "folder")


def test_unknown_augmentation_lists_known(write_spec, capsys):
    spec = {**GOOD, "sweep": {**GOOD["sweep"], "augmentation": ["none", "sparkles"]}}
    expect_error(write_spec(spec), capsys, "sparkles", "classic")


def test_set_overrides_a_key(write_spec, capsys):
    code, out, _ = validate(write_spec(GOOD), capsys, "--set", "sweep.seed=[0, 1, 2]")
    assert code == 0 and "6 trial(s)" in out


def test_set_with_unknown_key_is_an_error(write_spec, capsys):
    expect_error(write_spec(GOOD), capsys, "trainig", extra=("--set", "trainig.epochs=2"))


def _folder_spec(path):
    return {**GOOD, "dataset": {"name": "folder", "options": {"path": str(path), "mode": "L",
                                                              "image_size": 8}}}


def _image_tree(root, classes=("cat", "dog"), per_class=4):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), color=30 * i).save(root / name / f"{i}.png")
    return root


def test_folder_path_missing(write_spec, tmp_path, capsys):
    expect_error(write_spec(_folder_spec(tmp_path / "absent")), capsys, "absent")


def test_folder_empty(write_spec, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    expect_error(write_spec(_folder_spec(tmp_path / "empty")), capsys, "empty")


def test_folder_class_without_images(write_spec, tmp_path, capsys):
    root = _image_tree(tmp_path / "data")
    (root / "bird").mkdir()
    (root / "bird" / "notes.txt").write_text("no images here")
    expect_error(write_spec(_folder_spec(root)), capsys, "bird")


def test_folder_corrupt_image_is_named(write_spec, tmp_path, capsys):
    root = _image_tree(tmp_path / "data")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    expect_error(write_spec(_folder_spec(root)), capsys, "broken.png")


def test_folder_good_tree_validates(write_spec, tmp_path, capsys):
    root = _image_tree(tmp_path / "data", per_class=10)
    code, out, err = validate(write_spec(_folder_spec(root)), capsys)
    assert code == 0, err
    assert "2 classes" in out


def test_axis_forms():
    assert Axis.parse("x", 3).kind == "fixed"
    assert Axis.parse("x", [1, 2]).kind == "grid"
    assert Axis.parse("x", {"loguniform": [0.1, 1]}).kind == "loguniform"
    with pytest.raises(ValueError, match="distribution"):
        Axis.parse("x", {"gaussian": [0, 1]})


def test_overrides_parse_yaml_values():
    raw = apply_overrides({"training": {"epochs": 3}}, ["training.epochs=5", "sweep.backbone=[a, b]"])
    assert raw["training"]["epochs"] == 5 and raw["sweep"]["backbone"] == ["a", "b"]


def test_parse_and_load_round_trip(write_spec):
    spec = load_spec(write_spec(GOOD))
    assert spec == parse_spec(GOOD)
    assert spec.axes()["synthetic_ratio"].max_value == 1


def test_bad_generator_option_is_named(write_spec, capsys):
    spec = {**GOOD, "generator": {"name": "ddpm", "options": {"stepz": 3}}}
    expect_error(write_spec(spec), capsys, "generator.options", "stepz")


def test_synthesis_kinds_on_the_augmentation_axis_pick_generators(write_spec):
    from raysweep.plan import build_plan

    spec = {**GOOD, "sweep": {**GOOD["sweep"], "augmentation": ["none", "gan+classic", "vae"]},
            "generator": {"name": "ddpm", "options_by_name": {"vae": {"steps": 5}}}}
    plan = build_plan(load_spec(write_spec(spec)))
    assert plan.generators == {"ddpm": {}, "dcgan": {}, "vae": {"steps": 5}}
    assert sorted((p.pool.source, p.pool.seed) for p in plan.pools) == [
        (g, s) for g in ("dcgan", "ddpm", "vae") for s in (0, 1)]


def test_two_synthesis_kinds_in_one_value(write_spec, capsys):
    spec = {**GOOD, "sweep": {**GOOD["sweep"], "augmentation": ["gan+vae"]}}
    expect_error(write_spec(spec), capsys, "gan+vae", "one generator")


def test_inpaint_kind_needs_a_generator_that_inpaints(write_spec, capsys):
    spec = {**GOOD, "generator": {"name": "vae"},
            "sweep": {**GOOD["sweep"], "synthetic_ratio": [1], "augmentation": ["inpaint"]}}
    expect_error(write_spec(spec), capsys, "'vae'", "cannot inpaint")


def test_optuna_with_only_fixed_values(write_spec, capsys):
    spec = {**GOOD, "tune": {"search_alg": "optuna"},
            "sweep": {"synthetic_ratio": 0, "backbone": "resnet10t", "seed": 0}}
    expect_error(write_spec(spec), capsys, "optuna", "fixed")


def test_unknown_search_algorithm_and_scheduler(write_spec, capsys):
    expect_error(write_spec({**GOOD, "tune": {"search_alg": "hyperopt"}}), capsys,
                 "tune.search_alg", "hyperopt")
    expect_error(write_spec({**GOOD, "tune": {"scheduler": "pbt"}}), capsys,
                 "tune.scheduler", "pbt")


def test_magnitude_out_of_range(write_spec, capsys):
    spec = {**GOOD, "training": {"augmentation_params": {"rotation_degrees": 500}},
            "sweep": {**GOOD["sweep"], "augmentation": "classic"}}
    expect_error(write_spec(spec), capsys, "rotation_degrees", "500")


# -- inputs that used to crash or slip through: each is one line and exit 2 ----------------

def with_sweep(**axes):
    return {**GOOD, "sweep": {**GOOD["sweep"], **axes}}


@pytest.mark.parametrize("spec, words", [
    (with_sweep(synthetic_ratio=[0, float("inf")]), ("synthetic_ratio", "inf", "finite")),
    (with_sweep(synthetic_ratio=[0, 1e9]), ("synthetic_ratio", "1000000000", "above 100")),
    (with_sweep(seed=[0, 0]), ("sweep.seed", "listed twice")),
    (with_sweep(seed=[0, 4294967296]), ("sweep.seed", "4294967296", "above")),
    (with_sweep(seed=[1, 2**32 + 1]), ("sweep.seed", "above")),
    (with_sweep(backbone={"choice": ["resnet10t", "resnet10t"]}), ("backbone", "listed twice")),
    ({**GOOD, "training": {"lr": float("inf")}}, ("training.lr", "finite")),
    ({**GOOD, "training": {"lr": float("nan")}}, ("training.lr", "finite")),
    ({**GOOD, "training": {"input_size": 100000}}, ("training.input_size", "1024")),
    ({**GOOD, "tune": {"gpus_per_trial": 1.5}}, ("gpus_per_trial", "1.5")),
    ({**GOOD, "generator": {"seed": -1}}, ("generator.seed",)),
    ({**GOOD, "dataset": {**GOOD["dataset"], "split_seed": 2**40}}, ("split_seed",)),
    ({**GOOD, "name": "rev'x"}, ("name", "rev'x", "MLflow", "rev-x")),
    ({**GOOD, "tracking": {"experiment": 'a" OR 1=1'}}, ("tracking.experiment", "MLflow")),
])
def test_bad_numbers_seeds_and_names(write_spec, capsys, spec, words):
    expect_error(write_spec(spec), capsys, *words)


def test_non_utf8_yaml(write_spec, tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    expect_error(path, capsys, "latin1.yaml", "not UTF-8", "0xe9")


def test_duplicate_yaml_keys(write_spec, capsys):
    text = "name: t\ntraining: {epochs: 1}\ntraining: {epochs: 5}\n"
    expect_error(write_spec(text), capsys, "duplicate key 'training'", "line 3")


def test_ratio_planning_too_many_images(write_spec, capsys, monkeypatch):
    # The real bound (2 million images per pool) needs a dataset of 20k images at ratio 100;
    # the check is the same at a bound this test can reach in a second.
    monkeypatch.setattr("raysweep.plan.pools.MAX_POOL_IMAGES", 500)
    spec = with_sweep(synthetic_ratio=[0, 10])
    expect_error(write_spec(spec), capsys, "synthetic_ratio", "synthetic images per pool",
                 "more than 500")


def test_fractional_actors_on_several_nodes_leave_no_whole_gpu():
    from raysweep.errors import UserError
    from raysweep.plan import check_budget

    spec = parse_spec({**GOOD, "synthesis": {"actors": 2, "gpus_per_actor": 0.5},
                       "tune": {"gpus_per_trial": 1}})
    check_budget(spec, cpus=8, gpus=2)  # one node packs both actors on one GPU
    with pytest.raises(UserError, match="leave only 0 of 2 GPUs whole"):
        check_budget(spec, cpus=8, gpus=2, spread=True)  # two nodes: one actor on each GPU


def test_generator_option_checked_against_its_signature_not_by_catching_type_errors():
    from raysweep.errors import UserError
    from raysweep.generators.base import _REGISTRY, register_generator
    from raysweep.plan.names import check_generator

    @register_generator("test-buggy")
    class Buggy:
        def __init__(self, steps: int = 1):
            len(steps)  # a bug inside the constructor: a TypeError that is not the user's

    try:
        with pytest.raises(UserError, match="unexpected keyword argument 'stepz'"):
            check_generator("test-buggy", {"stepz": 3})
        with pytest.raises(TypeError, match="has no len"):
            check_generator("test-buggy", {"steps": 3})
    finally:
        _REGISTRY.pop("test-buggy")


def _symlinked_tree(root):
    _image_tree(root)
    (root / "cat" / "loop").symlink_to(root / "cat")  # a folder that contains itself
    (root / "cat" / "up").symlink_to(root)  # the whole tree again, twice over
    (root / "dog" / "alias").symlink_to(root / "dog")
    return root


def test_folder_symlink_loops_count_each_image_once(write_spec, tmp_path, capsys):
    from raysweep.data import create_dataset

    root = _symlinked_tree(tmp_path / "data")
    (root / "cat" / "up").unlink()  # reaching dog's images from cat is its own error, below
    ds = create_dataset("folder", path=str(root), mode="L", image_size=8)
    assert ds.labels.tolist() == [0] * 4 + [1] * 4
    code, out, err = validate(write_spec(_folder_spec(root)), capsys)
    assert code == 0, err


def test_folder_image_in_two_classes_is_an_error(write_spec, tmp_path, capsys):
    root = _symlinked_tree(tmp_path / "data")
    expect_error(write_spec(_folder_spec(root)), capsys, "also in class", "symlink")


def test_folder_16_bit_png_is_scaled_not_clipped(tmp_path):
    import numpy as np

    from raysweep.data import create_dataset

    root = _image_tree(tmp_path / "data")
    Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(root / "cat" / "deep.png")
    assert Image.open(root / "cat" / "deep.png").mode.startswith("I")  # really 16 bit
    ds = create_dataset("folder", path=str(root), mode="L", image_size=8)
    values = sorted(int(image.mean()) for image in ds.images[ds.labels == 0])
    assert round(30000 / 65535 * 255) in values and 255 not in values, values


def test_folder_huge_image_size_is_refused(write_spec, tmp_path, capsys):
    root = _image_tree(tmp_path / "data")
    spec = _folder_spec(root)
    spec["dataset"]["options"]["image_size"] = 1000000
    expect_error(write_spec(spec), capsys, "image_size", "1000000", "1024")


def test_folder_is_decoded_once_and_cached_for_trials(tmp_path, monkeypatch):
    """The second load of an unchanged folder reads the cache: garbage written into a file
    (same size, same mtime) is not seen. A changed file is decoded again."""
    import os

    from raysweep.data import create_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = _image_tree(tmp_path / "data")
    first = create_dataset("folder", path=str(root), mode="L", image_size=8)
    target = root / "cat" / "1.png"
    stat = target.stat()
    target.write_bytes(b"\0" * stat.st_size)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = create_dataset("folder", path=str(root), mode="L", image_size=8)
    assert (again.images == first.images).all()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    from raysweep.errors import UserError

    with pytest.raises(UserError, match="1.png is not a readable image"):
        create_dataset("folder", path=str(root), mode="L", image_size=8)


# -- every number has a bound, named in the message (issue 17) -----------------------------

@pytest.mark.parametrize("section, key, value, bound", [
    ("saliency", "seed", 2**64, "2147483647"),
    ("saliency", "seed", -1, "0"),
    ("saliency", "input_size", 100_000, "1024"),
    ("saliency", "epochs", 10**6, "10000"),
    ("saliency", "smoothing", 1e6, "1024"),
    ("synthesis", "actors", 1_000_000, "256"),
    ("synthesis", "cpus_per_actor", 10_000, "256"),
    ("synthesis", "chunk_size", 10**7, "10000"),
    ("synthesis", "quality_epochs", 10**6, "10000"),
    ("training", "epochs", 10**6, "10000"),
    ("training", "batch_size", 10**7, "65536"),
    ("training", "lr", 1e3, "10"),
    ("training", "weight_decay", 1e3, "10"),
    ("training", "threads", 10**4, "256"),
    ("training", "early_stopping_patience", 10**6, "10000"),
    ("tune", "gpus_per_trial", 1000, "16"),
    ("tune", "cpus_per_trial", 10**4, "256"),
    ("tune", "max_concurrent_trials", 10**7, "100000"),
    ("dataset", "per_class", 10**9, "1000000"),
])
def test_every_number_is_bounded_with_the_bound_in_the_message(write_spec, capsys, section, key,
                                                                 value, bound):
    spec = {**GOOD, section: {**GOOD.get(section, {}), key: value}}
    line = expect_error(write_spec(spec), capsys, f"{section}.{key}", bound)
    assert "within that bound" in line


def test_a_yaml_alias_bomb_is_refused_before_it_expands(write_spec, capsys):
    """565 bytes that expand to 10**9 list items: refused at the first alias, in one line."""
    lines = ["name: t", "generator:", "  options_by_name:", "    vae:",
             '      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, previous in zip("bcdefghi", "abcdefgh"):
        lines.append(f"      {name}: &{name} [" + ",".join([f"*{previous}"] * 10) + "]")
    text = "\n".join(lines) + "\n"
    assert len(text) < 700
    line = expect_error(write_spec(text), capsys, "alias *a", "line 6", "write the value out")
    assert len(line) < 300


def test_an_alias_in_a_set_value_is_refused(write_spec, capsys):
    expect_error(write_spec(GOOD), capsys, "--set", "alias *x",
                 extra=("--set", "sweep.seed=[&x 1, *x]"))


# -- only storage raysweep can write: local paths and s3:// (issue 17) ----------------------

@pytest.mark.parametrize("extra, words", [
    (("--storage", "gs://bkt/p"), ("--storage", "gs://", "s3://bucket/prefix")),
    (("--storage", "hdfs://namenode/p"), ("--storage", "hdfs://")),
    (("--set", "store.path=S3://bkt/p"), ("store.path", "lower case", "s3://bkt/p")),
    (("--set", "tune.storage_path=abfs://container/p"), ("tune.storage_path", "abfs://")),
    (("--set", "store.path=s3://bkt/a/../../escape"), ("store.path", "'..'")),
])
def test_storage_schemes_raysweep_cannot_write_are_refused(write_spec, in_tmp_cwd, capsys, extra,
                                                           words):
    expect_error(write_spec(GOOD), capsys, *words, extra=extra)
    # Nothing became a local folder named after the scheme (`./gs:/bkt/p`).
    assert sorted(p.name for p in in_tmp_cwd.iterdir()) == ["spec.yaml"]


def test_cache_commands_refuse_other_schemes(in_tmp_cwd, capsys):
    assert main(["cache", "ls", "--store", "gs://bkt/p"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s3://bucket/prefix" in err
    assert list(in_tmp_cwd.iterdir()) == []


@pytest.mark.parametrize("url", ["s3://bkt/a/../../outside", "s3://../x", "s3://bkt/./p"])
def test_an_s3_store_prefix_cannot_climb_out_of_the_download_cache(tmp_path, url):
    from raysweep.errors import UserError
    from raysweep.store.store import SyntheticStore

    with pytest.raises(UserError, match="s3://"):
        SyntheticStore(url, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04garbage", "wrong shape"])
def test_a_damaged_dataset_cache_is_decoded_again(tmp_path, monkeypatch, damage):
    """An empty cache file (a crash before fsync), garbage, or arrays of another shape: the
    folder is decoded again and the cache replaced, never an EOFError or wrong images."""
    import numpy as np

    from raysweep.data import create_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = _image_tree(tmp_path / "data")
    first = create_dataset("folder", path=str(root), mode="L", image_size=8)
    [cache] = (tmp_path / "cache" / "raysweep" / "datasets").glob("folder-*.npz")
    if damage == "wrong shape":
        np.savez(cache, images=np.zeros((3, 8, 8, 1), np.uint8), labels=np.zeros(3, np.int64))
    else:
        cache.write_bytes(damage)
    again = create_dataset("folder", path=str(root), mode="L", image_size=8)
    assert (again.images == first.images).all() and (again.labels == first.labels).all()
    with np.load(cache) as arrays:  # replaced by a good one
        assert arrays["images"].shape == first.images.shape


def test_options_for_generators_the_sweep_does_not_use_are_checked(write_spec, capsys):
    """An `options_by_name` entry no augmentation value names yet is still a known generator
    with options its constructor takes."""
    unknown = {**GOOD, "generator": {"name": "ddpm", "options_by_name": {"vea": {}}}}
    expect_error(write_spec(unknown), capsys, "options_by_name", "'vea'", "known:")
    typo = {**GOOD, "generator": {"name": "ddpm", "options_by_name": {"vae": {"stepz": 3}}}}
    expect_error(write_spec(typo), capsys, "options_by_name.vae", "stepz", "known options")
