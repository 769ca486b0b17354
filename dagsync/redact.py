"""Removing secrets from text: URL user-info, tokens, keys, SAS signatures, connection strings.

The log formatter applies this to every line; error messages that leave the process (status,
error file, the CLI's last line) go through it too, so callers need not remember to.

Two mechanisms work together: values dagsync knows are secret (read from a secret file or a
credential variable) are registered and masked wherever they appear, whatever the context;
patterns catch secrets dagsync never saw as such (a token in a URL, a SAS signature in an SDK
error, a connection string echoed by a check command).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@\"'<>]+@")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://***@host
    (_USERINFO, r"\g<scheme>" + MASK + "@"),
    # Azure SAS signature and other signed query parameters
    (
        re.compile(
            r"(?i)\b(sig|signature|x-oss-signature|x-amz-signature|x-oss-security-token"
            r"|security-token|access_token|token)=[^&\s\"';,]+"
        ),
        r"\1=" + MASK,
    ),
    # connection-string style secrets (Azure: AccountKey=…;SharedAccessSignature=…)
    (
        re.compile(
            r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey|Password|Pwd)=[^;\s\"']+"
        ),
        r"\1=" + MASK,
    ),
    # Authorization headers: Basic/Bearer/token, Azure SharedKey account:sig, OSS id:sig
    (
        re.compile(
            r"(?i)\b(Authorization[\"']?\s*[:=]\s*[\"']?"
            r"(?:Basic|Bearer|token|SharedKey|SharedKeyLite|OSS4?(?:-HMAC-SHA256)?)\s+)"
            r"[^\s\"']+"
        ),
        r"\1" + MASK,
    ),
    # Webhook secrets a caller may echo (GitLab's token header)
    (re.compile(r"(?i)\b(X-Gitlab-Token[\"']?\s*[:=]\s*[\"']?)[^\s\"']+"), r"\1" + MASK),
)

_secrets_lock = threading.Lock()
_secrets: set[str] = set()

MIN_SECRET_LENGTH = 4


def register_secret(value: str | None) -> None:
    """Remember a secret value (a password, key, token) so it is masked wherever it appears.

    Values shorter than ``MIN_SECRET_LENGTH`` are ignored: masking every "abc" in every log
    line would destroy the logs and protect nothing.
    """
    if value is None:
        return
    candidates = {value, value.strip()}
    # A secret may also appear URL-encoded (in a URL) or decoded (from one).
    candidates |= {unquote(c) for c in list(candidates)}
    with _secrets_lock:
        _secrets.update(c for c in candidates if len(c) >= MIN_SECRET_LENGTH)


def register_url_credentials(url: str | None) -> None:
    """Register the password of ``scheme://user:password@host`` (the URL pattern masks the
    user-info in URLs; this catches the password when a tool prints it on its own)."""
    if not url:
        return
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    register_secret(password)


def read_secret_file(path: Path) -> str:
    """The stripped content of a secret file, registered for redaction.

    Every module that reads a credential file (at start and on every re-read, for rotation)
    goes through this, so a rotated secret is masked as soon as it is used. Raises OSError.
    """
    value = path.read_text(encoding="utf-8", errors="replace").strip()
    register_secret(value)
    return value


def known_secret_count() -> int:
    with _secrets_lock:
        return len(_secrets)


def redact(text: str) -> str:
    """``text`` with every known secret and secret-looking pattern masked."""
    if not text:
        return text
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_url(url: str) -> str:
    """A URL fit for a log line: user-info masked (and any registered secret)."""
    return redact(url)
