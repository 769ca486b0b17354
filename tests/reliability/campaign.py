"""What the campaigns share: seeded randomness that says its seed, the processes a dagsync
started (to prove none outlives it), the figures each campaign prints, and store fakes run
through the contract suite's environments."""

from __future__ import annotations

import importlib
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import descendants

POLL_SECONDS = 0.02


def seeded(name: str, seed: int) -> random.Random:
    """A Random for ``name`` with a fixed seed, printed so a failing run can be replayed."""
    print(f"\n[{name}] seed={seed}")
    return random.Random(seed)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, printed (``pytest -s``) and returned."""
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    lines += [f"| {' | '.join(str(c) for c in row)} |" for row in rows]
    text = f"\n{title}\n\n" + "\n".join(lines) + "\n"
    print(text)
    return text


# --- processes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Child:
    pid: int
    start_ticks: int
    cmdline: str


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of ``pid``, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[0].decode(), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def alive(child: Child) -> bool:
    stat = _stat(child.pid)
    return stat is not None and stat[1] == child.start_ticks and stat[0] not in ("Z", "X")


class ChildWatch:
    """Samples the descendants of one process from a thread until stopped; ``children`` is
    every process seen (a child started in a new session is still a descendant)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.children: dict[tuple[int, int], Child] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"childwatch-{pid}")

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        for pid in descendants(self.pid):
            stat = _stat(pid)
            if stat is not None and (pid, stat[1]) not in self.children:
                self.children[(pid, stat[1])] = Child(pid, stat[1], _cmdline(pid))

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.sample()

    def running(self, needle: str) -> list[Child]:
        self.sample()
        return [c for c in self.children.values() if needle in c.cmdline and alive(c)]

    def survivors(self, timeout: float = 5.0) -> list[Child]:
        """Children still alive ``timeout`` seconds after the parent is gone (a helper git
        started may take a moment to notice its parent died)."""
        deadline = time.monotonic() + timeout
        while True:
            left = [c for c in self.children.values() if alive(c)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(POLL_SECONDS)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def walk_files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder`` the way Airflow lists a DAG folder."""
    for dirpath, _dirs, files in os.walk(folder, followlinks=True):
        for name in files:
            yield Path(dirpath) / name


# --- sources a campaign syncs from --------------------------------------------------------


class Feed:
    """A source dagsync syncs from, and how the campaign writes generations into it. Every file
    of generation G starts and ends with ``# generation G`` (a torn or mixed tree shows)."""

    name: str

    def __init__(self, files: int, file_bytes: int) -> None:
        self.files = files
        self.file_bytes = file_bytes
        self.generation = -1
        self.expected: dict[str, str] = {}

    def content(self, generation: int, rand: random.Random) -> dict[str, str]:
        out = {}
        for i in range(self.files):
            marker = f"# generation {generation}"
            body = rand.randbytes(self.file_bytes // 2).hex()
            out[f"dags/d{i % 10}/f{i}.py"] = f"{marker}\nX = {body!r}\n{marker}\n"
        return out

    def next_generation(self, rand: random.Random) -> dict[str, str]:
        """Replace every file with the next generation's; returns the expected tree."""
        self.generation += 1
        files = self.content(self.generation, rand)
        self.write(files)
        self.expected = files
        return files

    def write(self, files: dict[str, str]) -> None:
        raise NotImplementedError

    def args(self) -> list[str]:
        raise NotImplementedError

    def environ(self) -> dict[str, str]:
        return {}

    def revision(self) -> str | None:
        """The revision id dagsync must publish, when the source names one (git)."""
        return None


class GitFeed(Feed):
    name = "git"

    def __init__(self, repo: Any, files: int, file_bytes: int, url: str | None = None) -> None:
        super().__init__(files, file_bytes)
        self.repo = repo
        self.url = url or repo.file_url

    def write(self, files: dict[str, str]) -> None:
        for path, text in files.items():
            self.repo.write(path, text)
        self.repo.commit(f"generation {self.generation}")
        self.repo.push()

    def args(self) -> list[str]:
        return ["--repo", self.url]

    def revision(self) -> str | None:
        return str(self.repo.head())


class StoreFeed(Feed):
    """A store fake (OSS or Azure Files) through the contract suite's environment."""

    def __init__(self, env: Any, files: int, file_bytes: int) -> None:
        super().__init__(files, file_bytes)
        self.env = env
        self.name = env.source

    def write(self, files: dict[str, str]) -> None:
        for path, text in files.items():
            self.env.put(path, text.encode())

    def args(self) -> list[str]:
        args = ["--source", self.env.source]
        for attr, value in self.env.options().items():
            for item in value if isinstance(value, list | tuple) else [value]:
                args += [f"--{attr.replace('_', '-')}", str(item)]
        return args

    def environ(self) -> dict[str, str]:
        return dict(self.env.environ())


def store_env(name: str, tmp_path: Path) -> Any:
    """The contract suite's running environment for store ``name`` (``oss``, ``azure``)."""
    module = importlib.import_module(f"tests.sources.store_env_{name}")
    env = module.STORE_ENV(tmp_path)
    env.start()
    return env
