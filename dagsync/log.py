"""One event per line, as text with key=value fields or as JSON; secrets redacted here, at the
formatter, so no caller has to remember to."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from dagsync.redact import redact

_KV = re.compile(r"(\w+)=(\S+)")
_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """``2026-11-22T03:04:05Z info  dagsync.syncer published revision=… files=3``"""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        line = f"{ts} {record.levelname.lower():<7} {record.getMessage()}"
        extra = _extra_fields(record)
        if extra:
            line += " " + " ".join(f"{k}={_quote(v)}" for k, v in extra.items())
        if record.exc_info:
            line += " exception=" + _quote(self.formatException(record.exc_info))
        return redact(line.replace("\n", " | "))


class JsonFormatter(logging.Formatter):
    """``{"ts": …, "level": …, "event": …, …fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, fields = split_event(message)
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": event,
            "logger": record.name,
        }
        doc.update(fields)
        doc.update(_extra_fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, default=str, ensure_ascii=False))


def split_event(message: str) -> tuple[str, dict[str, str]]:
    """``"published revision=abc files=3"`` -> ``("published", {"revision": "abc", ...})``.

    The event is the text before the first key=value; values run to the next space, except
    the last field, which keeps the rest of the line (error messages contain spaces).
    """
    first = _KV.search(message)
    if first is None:
        return message.strip(), {}
    event = message[: first.start()].strip()
    fields: dict[str, str] = {}
    matches = list(_KV.finditer(message, first.start()))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(message)
        fields[m.group(1)] = message[m.start(2) : end].strip()
    return event, fields


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def setup(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # GitPython and the SDKs are chatty at debug; their lines would only repeat ours.
    for noisy in ("git", "urllib3", "azure", "oss2"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
