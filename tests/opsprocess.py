"""``dagsync run`` (or ``once``) as a subprocess on a loopback port, observed through its
endpoints and its output files. Shared by the operations end-to-end tests and the reliability
campaigns (tests/reliability/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.gitservers import free_port
from tests.helpers import wait_for

START_ATTEMPTS = 3
STOP_TIMEOUT_SECONDS = 20.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


class Dagsync:
    """One ``dagsync`` process with its HTTP port; output goes to files the test reads."""

    def __init__(
        self,
        tmp: Path,
        args: list[str],
        env: Mapping[str, str],
        command: str | None = "run",
        source: str = "git",
    ) -> None:
        self.tmp = tmp
        self.source = source
        self.root = tmp / "root"
        self.stdout_path = tmp / "stdout.log"
        self.stderr_path = tmp / "stderr.log"
        self.returncode: int | None = None
        for _attempt in range(START_ATTEMPTS):
            self.port = free_port()
            argv = [sys.executable, "-m", "dagsync", *([command] if command else []), *args]
            argv = [a.replace("{port}", str(self.port)) for a in argv]
            run_env = {k: v.replace("{port}", str(self.port)) for k, v in env.items()}
            with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
                self.proc = subprocess.Popen(
                    argv, env=run_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
                )
            if self._wait_listening():
                return
            # lost the free-port race (or failed to start): say why if it was not the port
            if "cannot listen" not in self.stderr:
                raise AssertionError(f"dagsync did not start:\n{self.stderr}")
        raise AssertionError(f"no free port after {START_ATTEMPTS} attempts:\n{self.stderr}")

    def _wait_listening(self) -> bool:
        def up() -> bool | None:
            if self.proc.poll() is not None:
                return False
            try:
                requests.get(self.url + "/healthz", timeout=1)
            except requests.ConnectionError:
                return None
            return True

        return bool(wait_for(lambda: up() is not None, what="dagsync to listen"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kw)

    def post(self, path: str = "/sync", **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kw)

    def metrics(self) -> Samples:
        return parse_metrics(self.get("/metrics").text)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get(key(name, **labels))

    def syncs(self, result: str) -> float:
        return self.metric("dagsync_sync_total", source=self.source, result=result) or 0.0

    def total_syncs(self) -> float:
        return sum(self.syncs(r) for r in ("published", "unchanged", "failed", "rejected"))

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.get("/status").json()
        return doc

    def served(self, link: str = "current") -> str | None:
        try:
            return os.path.basename(os.readlink(self.root / link))
        except OSError:
            return None

    def wait_syncs(self, result: str, count: float) -> None:
        wait_for(lambda: self.syncs(result) >= count)

    def wait_idle(self) -> None:
        wait_for(lambda: not self.status()["sync_in_progress"])

    def stop(self) -> int:
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            self.returncode = self.proc.wait(STOP_TIMEOUT_SECONDS)
        return self.returncode
