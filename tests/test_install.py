"""raysweep installed, not cloned: the specs in search_spaces/ ship in the wheel, and a shipped
spec's name works where a path does (`raysweep validate ratio`, `raysweep init ratio DIR`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raysweep.cli import main
from raysweep.spec import load_spec, shipped_specs

REPO = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted(path.name for path in (REPO / "search_spaces").glob("*.yaml"))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_every_spec_in_search_spaces_is_shipped():
    assert [f"{name}.yaml" for name in shipped_specs()] == SPEC_FILES
    for name, entry in shipped_specs().items():
        assert entry.read_bytes() == (REPO / "search_spaces" / f"{name}.yaml").read_bytes()


def test_a_shipped_name_loads_in_an_empty_directory(in_tmp_cwd):
    shipped = load_spec("ratio", ["training.epochs=1"])
    assert shipped == load_spec(REPO / "search_spaces/ratio.yaml", ["training.epochs=1"])
    assert shipped.training.epochs == 1


def test_a_path_wins_over_a_shipped_name(in_tmp_cwd):
    (in_tmp_cwd / "ratio").write_text((REPO / "search_spaces/backbone.yaml").read_text())
    assert load_spec("ratio").name == "backbone"


def test_unknown_name_lists_the_shipped_ones(in_tmp_cwd, capsys):
    assert main(["validate", "rattio"]) == 2
    line = one_error_line(capsys)
    assert "rattio" in line and "no such spec file" in line
    assert all(name in line for name in shipped_specs())


def test_init_writes_a_commented_copy_and_never_overwrites(in_tmp_cwd, capsys):
    assert main(["init", "mask", "specs/mine"]) == 0
    target = in_tmp_cwd / "specs/mine/mask.yaml"
    assert "raysweep run specs/mine/mask.yaml" in capsys.readouterr().out
    text = target.read_text()
    header, _, body = text.partition("\n\n")
    assert all(line.startswith("#") for line in header.splitlines())
    assert body == (REPO / "search_spaces/mask.yaml").read_text()
    assert load_spec(target) == load_spec("mask")

    target.write_text(text + "# my edit\n")
    assert main(["init", "mask", "specs/mine"]) == 2
    assert "exists" in one_error_line(capsys)
    assert target.read_text().endswith("# my edit\n")


def test_init_refuses_an_unknown_name_and_a_file_for_a_folder(in_tmp_cwd, capsys):
    assert main(["init", "nope"]) == 2
    assert "ratio" in one_error_line(capsys) and not (in_tmp_cwd / "nope.yaml").exists()
    (in_tmp_cwd / "taken").write_text("")
    assert main(["init", "ratio", "taken"]) == 2
    assert "not a folder" in one_error_line(capsys)


def pip(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--quiet"],
                   cwd=cwd, check=True)


@pytest.mark.slow
def test_wheel_ships_the_specs_and_runs_them_by_name(tmp_path):
    # 1. Build the wheel from the files a release holds (as docker/Dockerfile copies them),
    #    away from the checkout so that its build/ and egg-info stay out of the worktree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("raysweep", "search_spaces"):
        shutil.copytree(REPO / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(source),
        cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("raysweep-*.whl")

    # 2. Install it alone into a target folder; the dependencies come from this environment.
    target = tmp_path / "target"
    pip("install", "--target", str(target), str(wheel), cwd=tmp_path)
    assert not (target / "raysweep/search_spaces").is_symlink()

    # 3. From an empty folder, with nothing of the checkout on the path.
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("MLFLOW_TRACKING_URI", None)

    def raysweep(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raysweep.cli", *args], cwd=empty, env=env,
                              capture_output=True, text=True, timeout=300)

    listed = subprocess.run(
        [sys.executable, "-c", "import importlib.resources as r, raysweep;"
         "print(raysweep.__file__);"
         "print(*sorted(p.name for p in (r.files('raysweep') / 'search_spaces').iterdir()))"],
        cwd=empty, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    where, names = listed.stdout.splitlines()
    assert Path(where).is_relative_to(target)
    assert names.split() == SPEC_FILES

    validated = raysweep("validate", "ratio")
    assert validated.returncode == 0, validated.stderr
    assert "9 trial(s)" in validated.stdout

    written = raysweep("init", "ratio", "edit")
    assert written.returncode == 0, written.stderr
    copy = empty / "edit/ratio.yaml"
    assert yaml.safe_load(copy.read_text()) == \
        yaml.safe_load((REPO / "search_spaces/ratio.yaml").read_text())
    again = raysweep("init", "ratio", "edit")
    assert again.returncode == 2 and "exists" in again.stderr

    unknown = raysweep("validate", "nope")
    assert unknown.returncode == 2 and "augment, backbone" in unknown.stderr
