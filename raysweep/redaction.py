"""Credentials never reach a log line or an artifact: `redact_uri` hides them in URIs.

A tracking URI may carry a password (`postgresql://user:secret@host/db`,
`https://user:token@mlflow.example.com`) or a token in its query (`?password=...`). raysweep
prints URIs and logs the resolved spec as an MLflow artifact; both go through `redact_uri`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
# Query parameters whose values are secrets (password=, api_key=, token=, X-Amz-Signature=, ...).
_SECRET_PARAMETER = re.compile(r"pass|secret|token|key|signature|credential|auth", re.IGNORECASE)


def redact_uri(uri: str | None) -> str | None:
    """`uri` with any password in its user info and any secret query value replaced by ***."""
    if not uri or "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # not parseable as a URL: show nothing of it rather than a secret
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret = any(_SECRET_PARAMETER.search(k) for k, _ in pairs)
    if netloc == parts.netloc and not secret:
        return uri  # nothing to hide (and urlunsplit would turn sqlite:/// into sqlite:/)
    query = urlencode([(k, REDACTED if _SECRET_PARAMETER.search(k) else v) for k, v in pairs],
                      safe="*") if secret else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
