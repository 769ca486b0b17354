"""hooks.py: the exec hook and the webhook, the background workers (retry, newest revision wins,
stop) and the inline ``once`` mode."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dagsync.config import Config, load
from dagsync.hooks import (
    HookFailed,
    Hooks,
    HookWorker,
    backoff,
    run_exec_hook,
    run_webhook,
    split_userinfo,
)
from dagsync.manifest import Manifest
from dagsync.metrics import Metrics
from dagsync.sources.base import Published
from dagsync.syncer import SyncResult

DEADLINE_SECONDS = 10.0


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE_SECONDS) -> Any:
    """Poll ``condition`` until truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.005)


# -- a webhook receiver ------------------------------------------------------------------------
@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint recording deliveries; answers ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    hold: threading.Event | None = None

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.deliveries.append(Delivery(self.path, dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.hold is not None:
                    receiver.hold.wait(DEADLINE_SECONDS)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


# -- helpers -----------------------------------------------------------------------------------
def make_config(tmp_path: Path, command: str = "run", **flags: Any) -> Config:
    env = {"PATH": os.environ["PATH"], "KEEP_ME": "inherited"}
    flags.setdefault("repo", "file:///nonexistent.git")
    flags.setdefault("root", str(tmp_path / "root"))
    return load(command, flags, env)


def make_published(tmp_path: Path, revision: str) -> Published:
    folder = tmp_path / "revisions" / revision
    folder.mkdir(parents=True, exist_ok=True)
    return Published(revision, folder, Manifest(()))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def hook_count(registry: CollectorRegistry, hook: str, result: str) -> float:
    value = registry.get_sample_value("dagsync_hook_total", {"hook": hook, "result": result})
    return value or 0.0


# -- the exec hook -----------------------------------------------------------------------------
def test_exec_hook_env_and_cwd(tmp_path: Path):
    out = tmp_path / "out.json"
    cmd = (
        'python3 -c \'import json,os,sys; json.dump({"cwd": os.getcwd(), "env": '
        f'dict(os.environ)}}, open(sys.argv[1], "w"))\' {out}'
    )
    config = make_config(tmp_path, exechook_command=cmd)
    pub = make_published(tmp_path, "c0ffee")
    run_exec_hook(config, pub, threading.Event(), 30)
    doc = json.loads(out.read_text())
    assert doc["cwd"] == str(pub.path)
    assert doc["env"]["DAGSYNC_REVISION"] == "c0ffee"
    assert doc["env"]["GITSYNC_HASH"] == "c0ffee"
    assert doc["env"]["DAGSYNC_PATH"] == str(pub.path)
    assert doc["env"]["KEEP_ME"] == "inherited"


def test_exec_hook_runs_through_sh(tmp_path: Path):
    out = tmp_path / "out"
    config = make_config(tmp_path, exechook_command=f'echo "$GITSYNC_HASH" | tr a-z A-Z > {out}')
    run_exec_hook(config, make_published(tmp_path, "abc"), threading.Event(), 30)
    assert out.read_text() == "ABC\n"


def test_exec_hook_failure_says_why(tmp_path: Path):
    config = make_config(tmp_path, exechook_command="echo going down; exit 3")
    with pytest.raises(HookFailed, match="exited 3: going down"):
        run_exec_hook(config, make_published(tmp_path, "abc"), threading.Event(), 30)


def test_exec_hook_timeout_kills_the_group(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    config = make_config(tmp_path, exechook_command=f"sleep 60 & echo $! > {pidfile}; wait")
    t0 = time.monotonic()
    with pytest.raises(HookFailed, match="timed out"):
        run_exec_hook(config, make_published(tmp_path, "abc"), threading.Event(), 0.3)
    assert time.monotonic() - t0 < 5
    child = int(pidfile.read_text())
    wait_for(lambda: not _alive(child))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of an exited parent is reaped by init; treat a zombie as gone
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False


def test_exec_hook_stops_on_request(tmp_path: Path):
    config = make_config(tmp_path, exechook_command="sleep 60")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(HookFailed, match="stopped"):
        run_exec_hook(config, make_published(tmp_path, "abc"), stop, 60)
    assert time.monotonic() - t0 < 5


# -- the webhook -------------------------------------------------------------------------------
def test_webhook_delivery(tmp_path: Path, receiver: WebhookReceiver):
    config = make_config(tmp_path, webhook_url=receiver.url)
    run_webhook(config, make_published(tmp_path, "abc123"), 5)
    (delivery,) = receiver.deliveries
    assert delivery.path == "/hook"
    assert delivery.headers["Gitsync-Hash"] == "abc123"
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.json() == {"revision": "abc123", "source": "git"}


def test_webhook_url_userinfo_becomes_basic_auth(tmp_path: Path, receiver: WebhookReceiver):
    url = receiver.url.replace("http://", "http://hook%40user:p%3Ass@")
    config = make_config(tmp_path, webhook_url=url)
    run_webhook(config, make_published(tmp_path, "abc"), 5)
    (delivery,) = receiver.deliveries
    assert delivery.headers["Authorization"] == "Basic aG9va0B1c2VyOnA6c3M="  # hook@user:p:ss
    assert delivery.path == "/hook"


def test_split_userinfo():
    assert split_userinfo("https://h/x") == ("https://h/x", None)
    assert split_userinfo("https://u:p@h:8/x?q") == ("https://h:8/x?q", "Basic dTpw")
    assert split_userinfo("https://tok@h/x") == ("https://h/x", "Basic dG9rOg==")


def test_webhook_error_status_fails(tmp_path: Path, receiver: WebhookReceiver):
    receiver.statuses[:] = [500]
    config = make_config(tmp_path, webhook_url=receiver.url)
    with pytest.raises(HookFailed, match="HTTP 500"):
        run_webhook(config, make_published(tmp_path, "abc"), 5)


def test_webhook_unreachable_fails(tmp_path: Path):
    from tests.gitservers import free_port

    config = make_config(tmp_path, webhook_url=f"http://127.0.0.1:{free_port()}/x")
    with pytest.raises(HookFailed, match="request failed"):
        run_webhook(config, make_published(tmp_path, "abc"), 5)


def test_webhook_timeout_fails(tmp_path: Path):
    receiver = WebhookReceiver(hold=threading.Event())
    try:
        config = make_config(tmp_path, webhook_url=receiver.url)
        with pytest.raises(HookFailed):
            run_webhook(config, make_published(tmp_path, "abc"), 0.3)
    finally:
        receiver.close()


# -- backoff -----------------------------------------------------------------------------------
def test_backoff_doubles_and_caps():
    mid = lambda: 0.5  # noqa: E731 - no jitter
    assert [backoff(n, 1.0, 10.0, mid) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff(1, 1.0, 10.0, lambda: 0.0) == pytest.approx(0.9)
    assert backoff(1, 1.0, 10.0, lambda: 1.0) == pytest.approx(1.1)


# -- the background worker ---------------------------------------------------------------------
class ScriptedAction:
    """An action whose outcomes are scripted per revision; records every call."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.failures = dict(failures or {})
        self.calls: list[str] = []
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()

    def __call__(self, published: Published, stop: threading.Event) -> None:
        with self.lock:
            self.calls.append(published.revision)
        if self.gate is not None:
            self.gate.wait(DEADLINE_SECONDS)
        if stop.is_set():
            raise HookFailed("stopped")
        with self.lock:
            left = self.failures.get(published.revision, 0)
            if left:
                self.failures[published.revision] = left - 1
                raise HookFailed(f"scripted failure {left}")


def make_worker(
    action: ScriptedAction, metrics: Metrics, backoff_start: float = 0.01
) -> HookWorker:
    return HookWorker("exec", action, metrics.hook, backoff_start=backoff_start, backoff_cap=0.05)


def test_worker_retries_until_success(tmp_path: Path, registry: CollectorRegistry):
    metrics = Metrics(registry, "git")
    action = ScriptedAction({"a": 3})
    worker = make_worker(action, metrics)
    worker.start()
    try:
        worker.submit(make_published(tmp_path, "a"))
        wait_for(lambda: hook_count(registry, "exec", "ok") == 1)
        assert action.calls == ["a"] * 4
        assert hook_count(registry, "exec", "failed") == 3
    finally:
        worker.close()
    assert not worker.alive


def test_worker_drops_an_old_revision_for_a_newer_one(tmp_path: Path, registry: CollectorRegistry):
    metrics = Metrics(registry, "git")
    action = ScriptedAction({"old": 10**6})
    worker = make_worker(action, metrics)
    worker.start()
    try:
        worker.submit(make_published(tmp_path, "old"))
        wait_for(lambda: action.calls.count("old") >= 2)
        worker.submit(make_published(tmp_path, "new"))
        wait_for(lambda: hook_count(registry, "exec", "ok") == 1)
        with action.lock:
            first_new = action.calls.index("new")
            assert "old" not in action.calls[first_new:]
    finally:
        worker.close()


def test_worker_runs_only_the_newest_of_a_burst(tmp_path: Path, registry: CollectorRegistry):
    metrics = Metrics(registry, "git")
    action = ScriptedAction()
    action.gate = threading.Event()
    worker = make_worker(action, metrics)
    worker.start()
    try:
        worker.submit(make_published(tmp_path, "r1"))
        wait_for(lambda: action.calls == ["r1"])
        for rev in ("r2", "r3", "r4"):  # published while r1's hook still runs
            worker.submit(make_published(tmp_path, rev))
        action.gate.set()
        wait_for(lambda: hook_count(registry, "exec", "ok") == 2)
        assert action.calls == ["r1", "r4"]
    finally:
        worker.close()


def test_worker_close_interrupts_a_long_backoff(tmp_path: Path, registry: CollectorRegistry):
    action = ScriptedAction({"a": 1})
    worker = HookWorker("exec", action, Metrics(registry, "git").hook, backoff_start=3600)
    worker.start()
    worker.submit(make_published(tmp_path, "a"))
    wait_for(lambda: hook_count(registry, "exec", "failed") == 1)
    t0 = time.monotonic()
    worker.close()
    assert time.monotonic() - t0 < 2
    assert not worker.alive
    assert action.calls == ["a"]


def test_worker_does_not_count_an_attempt_cut_by_stop(tmp_path: Path, registry: CollectorRegistry):
    action = ScriptedAction()
    action.gate = threading.Event()
    worker = make_worker(action, Metrics(registry, "git"))
    worker.start()
    worker.submit(make_published(tmp_path, "a"))
    wait_for(lambda: action.calls == ["a"])
    closer = threading.Thread(target=worker.close)
    closer.start()
    wait_for(lambda: worker._stop.is_set())
    action.gate.set()
    closer.join()
    assert hook_count(registry, "exec", "failed") == 0


def test_worker_close_without_start(tmp_path: Path, registry: CollectorRegistry):
    worker = make_worker(ScriptedAction(), Metrics(registry, "git"))
    worker.close()


# -- Hooks: run and once -----------------------------------------------------------------------
def test_hooks_in_run_do_not_block_and_follow_publishes(
    tmp_path: Path, registry: CollectorRegistry, receiver: WebhookReceiver
):
    receiver.hold = threading.Event()
    config = make_config(tmp_path, webhook_url=receiver.url)
    hooks = Hooks(config, Metrics(registry, "git"), background=True)
    try:
        pub = make_published(tmp_path, "abc")
        t0 = time.monotonic()
        for kind in ("unchanged", "failed", "rejected", "published"):
            hooks.on_result(SyncResult(kind, "git", "abc", pub, 0.0, 0.0))
        assert time.monotonic() - t0 < 0.5  # the receiver is holding the request
        wait_for(lambda: len(receiver.deliveries) == 1)
        receiver.hold.set()
        wait_for(lambda: hook_count(registry, "webhook", "ok") == 1)
        assert [d.json()["revision"] for d in receiver.deliveries] == ["abc"]
    finally:
        hooks.close()
    assert not any(t.name.startswith("dagsync-hook-") for t in threading.enumerate())


def test_hooks_in_run_retry_the_webhook(
    tmp_path: Path, registry: CollectorRegistry, receiver: WebhookReceiver
):
    receiver.statuses[:] = [500, 503]
    config = make_config(tmp_path, webhook_url=receiver.url)
    hooks = Hooks(config, Metrics(registry, "git"), background=True, backoff_start=0.01)
    try:
        hooks.notify(make_published(tmp_path, "abc"))
        wait_for(lambda: hook_count(registry, "webhook", "ok") == 1)
        assert hook_count(registry, "webhook", "failed") == 2
        assert len(receiver.deliveries) == 3
    finally:
        hooks.close()


def test_hooks_in_once_run_inline_and_report_failure(
    tmp_path: Path, registry: CollectorRegistry, receiver: WebhookReceiver
):
    receiver.statuses[:] = [500]
    marker = tmp_path / "ran"
    config = make_config(
        tmp_path, "once", exechook_command=f"touch {marker}", webhook_url=receiver.url
    )
    hooks = Hooks(config, Metrics(registry, "git"), background=False)
    hooks.notify(make_published(tmp_path, "abc"))
    assert marker.exists()
    assert len(receiver.deliveries) == 1  # no retry in once
    assert hooks.failed
    assert hook_count(registry, "exec", "ok") == 1
    assert hook_count(registry, "webhook", "failed") == 1
    assert not hooks.workers
    hooks.close()


def test_hooks_in_once_success(tmp_path: Path, registry: CollectorRegistry):
    config = make_config(tmp_path, "once", exechook_command="true")
    hooks = Hooks(config, Metrics(registry, "git"), background=False)
    hooks.notify(make_published(tmp_path, "abc"))
    assert not hooks.failed
    assert hook_count(registry, "exec", "ok") == 1


def test_no_hooks_configured(tmp_path: Path):
    hooks = Hooks(make_config(tmp_path), None, background=True)
    assert not hooks
    hooks.notify(make_published(tmp_path, "abc"))
    assert not any(t.name.startswith("dagsync-hook-") for t in threading.enumerate())
    hooks.close()
