"""One event per line, as text with key=value fields or as JSON; secrets redacted here, at the
formatter, so no caller has to remember to.

Callers log ``"event words key=value key=value"`` (``log.info("published revision=%s", rev)``)
or pass ``extra={"key": value}``; the JSON formatter turns both into fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from dagsync.redact import redact

_KV = re.compile(r"(?:(?<=\s)|^)(\w+)=(\S*)")
_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}
# Loggers of libraries whose debug output would only repeat ours (and may carry headers).
NOISY_LOGGERS = ("git", "urllib3", "azure", "oss2", "watchdog")


def _timestamp(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


class TextFormatter(logging.Formatter):
    """``2026-11-22T03:04:05.123Z info    published revision=… files=3``"""

    def format(self, record: logging.LogRecord) -> str:
        message = _one_line(redact(_message(record)))
        line = f"{_timestamp(record)} {record.levelname.lower():<7} {message}"
        extra = _extra_fields(record)
        if extra:
            line += " " + " ".join(f"{k}={_quote(v)}" for k, v in extra.items())
        if record.exc_info:
            line += " exception=" + _quote(self.formatException(record.exc_info))
        if record.stack_info:
            line += " stack=" + _quote(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """``{"ts": …, "level": …, "event": …, "logger": …, …fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        # Redact before splitting: a secret holding "=" (base64) would otherwise be cut into a
        # field name and a value, neither of which matches the registered secret any more.
        event, fields = split_event(redact(_message(record)))
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "event": event,
            "logger": record.name,
        }
        for key, value in {**fields, **_extra_fields(record)}.items():
            if key not in ("ts", "level", "event", "logger"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = record.stack_info
        # Redact every value before encoding: a secret with a quote or a backslash in it would
        # no longer match once JSON-escaped, and masking the encoded line could break it.
        return json.dumps(_redact_values(doc), default=str, ensure_ascii=False)


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string must not lose the event (nor raise in a thread)
        return f"{record.msg} args={record.args!r}"


def _redact_values(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_values(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


def split_event(message: str) -> tuple[str, dict[str, Any]]:
    """``"published revision=abc files=3"`` -> ``("published", {"revision": "abc", ...})``.

    The event is the text before the first key=value; values run to the next key=value, so
    the last field keeps the rest of the line (error messages contain spaces). A value that
    starts with a double quote is a JSON string (``_quote`` writes them) and is decoded.
    """
    first = _KV.search(message)
    if first is None:
        return message.strip(), {}
    event = message[: first.start()].strip()
    fields: dict[str, Any] = {}
    matches = list(_KV.finditer(message, first.start()))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(message)
        fields[m.group(1)] = _typed(m.group(1), _unquote(message[m.start(2) : end].strip()))
    return event, fields


_INTEGER = re.compile(r"-?\d{1,18}")
# Identifiers that may happen to be all digits stay strings, so their JSON type never changes.
_ALWAYS_TEXT = frozenset({"revision", "previous", "sha", "ref", "key", "path"})


def _typed(key: str, value: str) -> Any:
    """Counts and sizes become JSON numbers, so log queries can compare them."""
    if key not in _ALWAYS_TEXT and _INTEGER.fullmatch(value):
        return int(value)
    return value


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _quote(value: Any) -> str:
    """A text-format field value: redacted first (escaping could hide a secret from the
    redaction), on one line, quoted when it holds spaces, quotes or ``=``."""
    text = _one_line(redact(str(value)))
    if not text or any(c in text for c in ' "='):
        return json.dumps(text, ensure_ascii=False)
    return text


def _one_line(text: str) -> str:
    return text.replace("\r\n", " | ").replace("\n", " | ").replace("\r", " | ")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is emitted, not when logging was set
    up: the CLI run in-process (tests, embedding) must not keep writing to a replaced and
    closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Configure the root logger once per process."""
    handler: logging.Handler = logging.StreamHandler(stream) if stream else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The SDKs log every request and error response at INFO, repeating our own lines; they
    # speak at INFO only when the user asked for debug.
    sdk_level = logging.INFO if root.level <= logging.DEBUG else max(logging.WARNING, root.level)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(sdk_level)
    logging.captureWarnings(True)
