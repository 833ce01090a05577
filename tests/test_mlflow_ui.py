"""The MLflow UI as a user sees it: `raysweep ui` on loopback, opened in headless Chromium.

The page that compares a sweep's trials must show each child run by the values it varies and
the swept param by its spec name. The screenshot is kept in test-artifacts/ for a person to look
at. Needs Debian's `chromium` (installed by .ci/run)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from raysweep.cli import sweep_page
from recorded_sweeps import record_sweep

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1600,1000", "--virtual-time-budget=30000"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_session(pid: int, session: int) -> bool:
    try:
        return os.getsid(pid) == session
    except OSError:  # ended meanwhile
        return False


def chromium(url: str, profile: Path, *extra: str) -> str:
    result = subprocess.run(
        [shutil.which("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=180)
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's chromium (apt-get install -y chromium; .ci/run does)")
def test_ui_shows_the_sweeps_child_runs_and_swept_param(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trials = [{"synthetic_ratio": r, "backbone": "resnet10t", "seed": s,
               "metrics": {"test_balanced_accuracy": 0.8 + 0.05 * r}}
              for r in (0.0, 2.0) for s in (0, 1, 2)]
    sweep = record_sweep(uri, "ratio", trials)
    port = free_port()
    # The store given through the environment: then no command line (`ps`) may show it, since a
    # store URI can hold a password.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MLFLOW_TRACKING_URI": uri}
    server = subprocess.Popen([sys.executable, "-m", "raysweep.cli", "ui", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        address = f"http://127.0.0.1:{port}"
        for _ in range(180):
            try:
                urllib.request.urlopen(address, timeout=2)
                break
            except OSError:
                time.sleep(1)
        command_lines = [(p / "cmdline").read_bytes() for p in Path("/proc").iterdir()
                         if p.name.isdigit() and in_session(int(p.name), server.pid)]
        url = f"{address}/{sweep_page(uri, sweep)}"
        dom = chromium(url, tmp_path / "profile-dom", "--dump-dom")
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "mlflow_ui_compare_runs.png"
        chromium(url, tmp_path / "profile-shot", f"--screenshot={screenshot}")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    for ratio in ("0", "2"):
        for seed in (0, 1, 2):
            assert f"synthetic_ratio={ratio} seed={seed}" in dom
    assert "synthetic_ratio" in dom and "backbone" in dom
    assert any(b"mlflow" in line for line in command_lines)
    assert not any(str(tmp_path).encode() in line for line in command_lines), command_lines
    assert screenshot.stat().st_size > 10_000
