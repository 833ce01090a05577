"""No credentials in printed lines or logged artifacts: tracking URIs are redacted."""

from __future__ import annotations

import pytest

from raysweep.redaction import redact_uri
from raysweep.spec import parse_spec, spec_to_yaml


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://alice:s3cr3t@db.example.com:5432/mlflow",
     "postgresql://alice:***@db.example.com:5432/mlflow"),
    ("https://tok3n@mlflow.example.com/", "https://***@mlflow.example.com/"),
    ("https://mlflow.example.com/?password=s3cr3t&x=1",
     "https://mlflow.example.com/?password=***&x=1"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    (None, None),
])
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown


def test_logged_spec_carries_no_password():
    spec = parse_spec({"name": "t", "tracking": {
        "tracking_uri": "postgresql://alice:s3cr3t@db.example.com/mlflow"}})
    text = spec_to_yaml(spec)
    assert "s3cr3t" not in text and "alice:***@db.example.com" in text
    assert spec.tracking.tracking_uri.endswith(":s3cr3t@db.example.com/mlflow")  # still usable
