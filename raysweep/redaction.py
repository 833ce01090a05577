"""Credentials never reach a log line, an artifact or an error message.

A tracking URI may carry a password (`postgresql://user:secret@host/db`,
`https://user:token@mlflow.example.com`), a token in its query (`?password=…`, an Azure SAS
`sig=…`) or a whole ODBC connection string (`?odbc_connect=…PWD%3D…`). raysweep prints URIs,
logs the resolved spec as an MLflow artifact, and prints MLflow's own error lines (which quote
the URL they failed on); every one of those goes through `redact_uri` or `redact_text`.

The user info ends at the last `@`, as SQLAlchemy reads it: a password may hold `/`, `#` or `?`
(`postgresql://mlf:s3cr/et@db/mlflow`), which `urllib.parse` would take for the start of the
path. When in doubt more is hidden, never less.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote_plus, unquote, unquote_plus

REDACTED = "***"
# Names of values that are secrets: query parameters (password=, api_key=, token=, sig=,
# X-Amz-Signature=, …) and the fields of an ODBC connection string (PWD=, Password=).
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|sig|credential|auth", re.IGNORECASE)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# `name=value` fields of a connection string; a value may be `{braced; with semicolons}`.
_FIELD = re.compile(r"(?P<name>(?:^|;)\s*[^;=]+=)(?P<value>\{[^}]*\}?|[^;]*)")
# A URL inside free text (an error message): from its scheme to the next blank.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
# A `name=value` pair with a secret's name in free text (a URL's query quoted without its scheme,
# as urllib3's retry warnings do): the value up to the next `&`, blank or quote is hidden.
_PAIR_IN_TEXT = re.compile(r"(?P<name>[\w.-]*(?:pass|pwd|secret|token|key|sig|credential|auth)"
                           r"[\w.-]*=)(?P<value>[^&\s'\"]+)", re.IGNORECASE)
# Shorter known secrets are not replaced blindly in free text (they would mangle other words);
# the URLs that carry them are still redacted as URLs.
_MIN_BLIND_SECRET = 4


def redact_uri(uri: str | None) -> str | None:
    """`uri` with the password in its user info (or a user-info token) and every secret query
    value replaced by ***; a URI with nothing to hide is returned unchanged."""
    if not uri or "://" not in uri:
        return uri
    match = _SCHEME.match(uri)
    head, rest = (match.group(), uri[match.end():]) if match else ("", uri)
    authority, query, fragment = _split(_redact_userinfo(rest))
    if query is None:
        return head + authority + fragment
    return f"{head}{authority}?{_redact_query(query)}{fragment}"


def redact_text(text: str, uris: Iterable[str | None] = ()) -> str:
    """`text` (an error line, a traceback) with every URL in it redacted, and the secrets of
    `uris` (say, the tracking URI) hidden wherever they appear, percent-encoded or not."""
    for secret in sorted({s for uri in uris for s in _secrets(uri)}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _URL_IN_TEXT.sub(lambda found: redact_uri(found.group()), text)
    return _PAIR_IN_TEXT.sub(lambda found: found["name"] + REDACTED, text)


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record through `redact_text` (for libraries that log
    the URLs they retry, such as urllib3)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), ()
        return True


def _redact_userinfo(rest: str) -> str:
    user, secret, host = _userinfo(rest)
    if secret is None:
        return rest
    return f"{user}:{REDACTED}@{host}" if user is not None else f"{REDACTED}@{host}"


def _userinfo(rest: str) -> tuple[str | None, str | None, str]:
    """(user name or None, secret or None, what follows the user info) of `rest`, the URI after
    its scheme; (None, None, rest) when it has no user info."""
    at = rest.rfind("@")
    if at < 0:
        return None, None, rest
    userinfo, host = rest[:at], rest[at + 1:]
    user, colon, password = userinfo.partition(":")
    if colon and not any(c in user for c in "/?#"):
        return user, password, host
    if not colon and not any(c in userinfo for c in "/?#"):
        return None, userinfo, host  # a token given as the user name
    return None, None, rest  # the `@` is in the path or query, not after a user


def _split(rest: str) -> tuple[str, str | None, str]:
    """(authority and path, query or None, `#fragment` or "")."""
    before_fragment, hash_, fragment = rest.partition("#")
    authority, question, query = before_fragment.partition("?")
    return authority, (query if question else None), hash_ + fragment


def _redact_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if not equals:
            pairs.append(pair)
        elif _SECRET_NAME.search(unquote_plus(name)):
            pairs.append(f"{name}={REDACTED}")
        else:
            decoded = unquote_plus(value)
            hidden = _redact_fields(decoded)
            pairs.append(pair if hidden == decoded else f"{name}={quote_plus(hidden, safe='*')}")
    return "&".join(pairs)


def _redact_fields(value: str) -> str:
    """An ODBC-style `A=1;PWD=secret;B=2` string with its secret fields' values hidden."""
    if "=" not in value:
        return value
    return _FIELD.sub(lambda f: f["name"] + (REDACTED if _SECRET_NAME.search(f["name"])
                                             else f["value"]), value)


def _secrets(uri: str | None) -> set[str]:
    """The secret strings a URI carries (password, secret query values), as written and
    percent-decoded, long enough to replace blindly."""
    if not uri or "://" not in uri:
        return set()
    match = _SCHEME.match(uri)
    _, secret, after = _userinfo(uri[match.end():] if match else uri)
    found = [] if secret is None else [secret]
    _, query, _ = _split(after)
    for pair in (query or "").split("&"):
        name, _, value = pair.partition("=")
        if _SECRET_NAME.search(unquote_plus(name)):
            found.append(value)
        found += [f["value"] for f in _FIELD.finditer(unquote_plus(value))
                  if _SECRET_NAME.search(f["name"])]
    return {form for secret in found for form in (secret, unquote(secret), unquote_plus(secret))
            if len(form) >= _MIN_BLIND_SECRET}
