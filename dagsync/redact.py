"""Removing secrets from text: URL user-info, tokens, keys, SAS signatures, connection strings.

The log formatter applies this to every line; error messages that leave the process (status,
error file) go through it too, so callers need not remember to.
"""

from __future__ import annotations

import re
import threading

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://***@host
    (re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@"), r"\g<scheme>" + MASK + "@"),
    # Azure SAS signature and other signed query parameters
    (re.compile(r"(?i)\b(sig|signature|x-oss-signature|x-amz-signature)=[^&\s\"']+"), r"\1=" + MASK),
    # connection-string style secrets
    (
        re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|SharedAccessKey|Password)=[^;\s\"']+"),
        r"\1=" + MASK,
    ),
    # Authorization headers
    (re.compile(r"(?i)\b(Authorization:?\s*(?:Basic|Bearer|SharedKey|OSS4?-?\S*)\s+)\S+"), r"\1" + MASK),
)

_secrets_lock = threading.Lock()
_secrets: set[str] = set()

MIN_SECRET_LENGTH = 4


def register_secret(value: str | None) -> None:
    """Remember a secret value (a password, key, token) so it is masked wherever it appears."""
    if value is None:
        return
    for candidate in {value, value.strip()}:
        if len(candidate) >= MIN_SECRET_LENGTH:
            with _secrets_lock:
                _secrets.add(candidate)


def redact(text: str) -> str:
    """``text`` with every known secret and secret-looking pattern masked."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_url(url: str) -> str:
    return _PATTERNS[0][0].sub(_PATTERNS[0][1], url)
