"""log.py: one event per line, text with key=value fields or JSON, redaction at the formatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from dagsync import log as logsetup
from dagsync.log import JsonFormatter, TextFormatter, split_event
from dagsync.redact import register_secret


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """Root logging into a buffer, restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream, logging.getLogger("dagsync.test")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize(
    ("message", "event", "fields"),
    [
        ("published", "published", {}),
        (
            "published revision=abc files=3",
            "published",
            {"revision": "abc", "files": 3},
        ),
        (
            "sync failed revision=abc error=ls-remote failed: exit 128",
            "sync failed",
            {"revision": "abc", "error": "ls-remote failed: exit 128"},
        ),
        ('hook failed error="two words"', "hook failed", {"error": "two words"}),
        ("url=https://h/p?a=b&c=d", "", {"url": "https://h/p?a=b&c=d"}),
        ("empty value=", "empty", {"value": ""}),
    ],
)
def test_split_event(message: str, event: str, fields: dict[str, str]):
    assert split_event(message) == (event, fields)


def test_json_lines(capture: tuple[io.StringIO, logging.Logger]):
    stream, log = capture
    logsetup.setup("json", "debug", stream)
    log.info("published revision=%s files=%d", "abc", 3)
    log.debug("detail", extra={"attempt": 2, "ok": True})
    log.warning("multi\nline message=x")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("sync failed unexpectedly")
    out = lines(stream)
    assert len(out) == 4  # one event per line, even with newlines and tracebacks
    docs = [json.loads(line) for line in out]
    for doc in docs:
        assert {"ts", "level", "event", "logger"} <= set(doc)
        assert doc["ts"].endswith("Z") and "T" in doc["ts"]
        assert doc["logger"] == "dagsync.test"
    assert docs[0]["event"] == "published"
    assert docs[0]["level"] == "info"
    assert (docs[0]["revision"], docs[0]["files"]) == ("abc", 3)
    assert (docs[1]["level"], docs[1]["attempt"], docs[1]["ok"]) == ("debug", 2, True)
    assert docs[3]["level"] == "error"
    assert "ValueError: bad" in docs[3]["exception"]


def test_json_fields_cannot_overwrite_the_envelope(capture: tuple[io.StringIO, logging.Logger]):
    stream, log = capture
    logsetup.setup("json", "info", stream)
    log.info("weird level=debug event=x ts=0")
    doc = json.loads(lines(stream)[0])
    assert (doc["level"], doc["event"]) == ("info", "weird")
    assert doc["ts"] != "0"


def test_text_lines(capture: tuple[io.StringIO, logging.Logger]):
    stream, log = capture
    logsetup.setup("text", "info", stream)
    log.info("published revision=%s", "abc", extra={"note": "two words"})
    log.debug("not shown")
    try:
        raise RuntimeError("x\ny")
    except RuntimeError:
        log.exception("boom")
    out = lines(stream)
    assert len(out) == 2
    ts, level, rest = out[0].split(" ", 2)
    assert ts.endswith("Z") and level == "info"
    assert rest.strip() == 'published revision=abc note="two words"'
    assert out[1].split()[1] == "error"
    assert "RuntimeError: x | y" in out[1]


def test_log_level(capture: tuple[io.StringIO, logging.Logger]):
    stream, log = capture
    logsetup.setup("text", "warning", stream)
    log.info("hidden")
    log.warning("shown")
    assert [line.split()[-1] for line in lines(stream)] == ["shown"]
    assert logging.getLogger("git").level >= logging.WARNING  # chatty libraries follow


def test_a_bad_format_string_still_logs(capture: tuple[io.StringIO, logging.Logger]):
    stream, log = capture
    logsetup.setup("json", "info", stream)
    log.info("count=%d", "not a number")
    doc = json.loads(lines(stream)[0])
    assert "count" in json.dumps(doc)


SECRETS = {
    "registered": "s3cret-registered-value",
    "base64": "YmFzZTY0LXNlY3JldA==",
    "quote": 'pa"ss\\word-with-quotes',
    "unicode": "clé-secrète-ü",
}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_never_reach_a_line(capture: tuple[io.StringIO, logging.Logger], fmt: str):
    stream, log = capture
    logsetup.setup(fmt, "debug", stream)
    for value in SECRETS.values():
        register_secret(value)
    log.info("auth value=%s", SECRETS["registered"])
    log.info("quoted value=%s", SECRETS["quote"])
    log.info("echoed %s then=%s", SECRETS["base64"], SECRETS["base64"])
    log.info("unicode", extra={"detail": {"nested": [SECRETS["unicode"]]}})
    log.info("url=https://user:pat-token-123@git.example.com/repo.git")
    log.info("sas url=https://acct.file.core.windows.net/share?sv=2022&sig=abc%2Fdef&se=x")
    log.info("conn string=DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bWFkZSB1cA==;")
    log.info("header Authorization: Bearer eyJhbGciOi.payload.sig")
    try:
        raise ValueError(f"failed with {SECRETS['registered']}")
    except ValueError:
        log.exception("boom")
    text = stream.getvalue()
    for value in SECRETS.values():
        assert value[:10] not in text  # not even a piece of it (a field split at "=")
        assert json.dumps(value)[1:-1] not in text  # nor its JSON-escaped form
    for leaked in ("pat-token-123", "abc%2Fdef", "bWFkZSB1cA==", "eyJhbGciOi"):
        assert leaked not in text
    if fmt == "json":
        for line in lines(stream):
            json.loads(line)


def test_text_formatter_and_json_formatter_directly():
    record = logging.makeLogRecord(
        {"name": "x", "levelname": "INFO", "levelno": 20, "msg": "hello who=%s", "args": ("w",)}
    )
    assert TextFormatter().format(record).endswith("info    hello who=w")
    assert json.loads(JsonFormatter().format(record))["who"] == "w"


def test_default_handler_writes_to_the_current_stderr(
    capture: tuple[io.StringIO, logging.Logger], monkeypatch: pytest.MonkeyPatch
):
    _stream, log = capture
    logsetup.setup("text", "info")  # no stream: sys.stderr, looked up for every line
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    log.info("one")
    first.close()  # e.g. a test's capture, replaced and closed
    monkeypatch.setattr("sys.stderr", second)
    log.info("two")
    assert second.getvalue().rstrip().endswith("info    two")
