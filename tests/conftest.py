"""Shared fixtures: small spec files written into a temp dir, and a clean working directory."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

REPO = Path(__file__).resolve().parent.parent


def _ray_importable() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


# GPU test machines may have torch and CUDA but no Ray (its wheel is 79 MB): `pytest -m gpu`
# runs there, so the modules that import Ray, directly or through raysweep.plan, are left out.
NEEDS_RAY = ["test_autoscaler.py", "test_cluster_config.py", "test_cluster_sweep.py",
             "test_gate.py", "test_mlflow_ui.py", "test_report.py", "test_search_spaces.py",
             "test_sweep_end_to_end.py", "test_synthesis_actors.py", "test_trial_plan.py",
             "test_sweep_lifecycle.py", "test_tracking_errors.py", "test_yardstick.py"]
if not _ray_importable():
    collect_ignore = NEEDS_RAY


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec mapping (or raw text) to a YAML file and return its path."""

    def write(content, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return path

    return write


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run in an empty working directory, as a new user would (mlflow.db, .raysweep/ land here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


class CompleteMultipartUploadRoot:
    """WSGI middleware for the moto server: moto 5.2.1 names the root element of its
    CompleteMultipartUpload answer `CompleteMultipartUploadResponse` instead of S3's
    `CompleteMultipartUploadResult` (getmoto/moto#10055), and Arrow's S3 client, which Tune's
    storage uses, rightly reads that as an error. Renamed back here; remove with moto > 5.2.1."""

    WRONG, RIGHT = b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult"

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or "uploadId=" not in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)
        answer = {}

        def keep(status, headers, exc_info=None):
            answer.update(status=status, headers=headers)

        body = b"".join(self.app(environ, keep)).replace(self.WRONG, self.RIGHT)
        headers = [(k, v) for k, v in answer["headers"] if k.lower() != "content-length"]
        start_response(answer["status"], headers + [("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on a free loopback port, and boto3's environment pointing at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    server._server.app = CompleteMultipartUploadRoot(server._server.app)
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    environment = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
        # Nothing may leave loopback: no user config, no instance metadata, no proxy.
        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        yield url
    server.stop()


@pytest.fixture
def s3(endpoint):
    return boto3.client("s3")


@pytest.fixture
def bucket(s3):
    name = f"raysweep-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
