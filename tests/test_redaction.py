"""No credentials in printed lines, logged artifacts or error messages: URIs are redacted."""

from __future__ import annotations

import pytest

from raysweep.redaction import redact_text, redact_uri
from raysweep.spec import parse_spec, spec_to_yaml


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://alice:s3cr3t@db.example.com:5432/mlflow",
     "postgresql://alice:***@db.example.com:5432/mlflow"),
    ("https://tok3n@mlflow.example.com/", "https://***@mlflow.example.com/"),
    ("https://mlflow.example.com/?password=s3cr3t&x=1",
     "https://mlflow.example.com/?password=***&x=1"),
    # A password may hold '/', '#' or '?' (SQLAlchemy reads up to the '@'); urlsplit would not.
    ("postgresql://mlf:s3cr/et@db/mlflow", "postgresql://mlf:***@db/mlflow"),
    ("postgresql://mlf:s3#cr?et@db/mlflow", "postgresql://mlf:***@db/mlflow"),
    ("mysql://u:p@ss@host/db", "mysql://u:***@host/db"),
    # An Azure SAS token, and an ODBC connection string with its password in braces.
    ("https://acct.blob.core.windows.net/c?sv=2020-08-04&sig=abc%2Bdef%3D&se=2027",
     "https://acct.blob.core.windows.net/c?sv=2020-08-04&sig=***&se=2027"),
    ("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC+18%7D%3BUID%3Dsa%3BPWD%3D%7Bs3c%3Br%7D",
     "mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC+18%7D%3BUID%3Dsa%3BPWD%3D***"),
    ("mssql+pyodbc:///?odbc_connect=SERVER%3Ddb%3BPWD%3Dplain",
     "mssql+pyodbc:///?odbc_connect=SERVER%3Ddb%3BPWD%3D***"),
    # Nothing to hide: unchanged, byte for byte.
    ("https://host/path?email=a@b.c", "https://host/path?email=a@b.c"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    (None, None),
])
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown


def test_redact_text_hides_urls_and_known_secrets_in_error_lines():
    uri = "http://mlf:hunter%2F22@tracking:5000"
    line = (f"API request to {uri}/api/2.0/mlflow/runs/log-batch failed with exception "
            f"ConnectionError; the password was hunter/22")
    shown = redact_text(line, [uri])
    assert "hunter" not in shown and "http://mlf:***@tracking:5000/api/2.0" in shown


def test_logged_spec_carries_no_password():
    spec = parse_spec({"name": "t", "tracking": {
        "tracking_uri": "postgresql://alice:s3cr/3t@db.example.com/mlflow"}})
    text = spec_to_yaml(spec)
    assert "s3cr" not in text and "alice:***@db.example.com" in text
    assert spec.tracking.tracking_uri.endswith(":s3cr/3t@db.example.com/mlflow")  # still usable

