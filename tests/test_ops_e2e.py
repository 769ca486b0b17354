"""The operations surface end to end: ``dagsync run`` as a subprocess on a loopback port, syncing
a real git repository (file://), observed only through its endpoints, its output and the
shared volume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from dagsync import __version__
from tests.gitservers import INITIAL_FILES, Repo, free_port
from tests.opsprocess import Dagsync, key
from tests.test_hooks import WebhookReceiver, wait_for

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """What a user's dagsync gets: hermetic git, none of dagsync's or git-sync's variables."""
    base = {
        k: v
        for k, v in hermetic_git_env.items()
        if not k.startswith(("DAGSYNC_", "GITSYNC_", "GIT_SYNC_", "OSS_", "AZURE_"))
    }
    return base


@pytest.fixture
def start(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., Dagsync]]:
    procs: list[Dagsync] = []

    def make(
        *args: str,
        extra_env: Mapping[str, str] | None = None,
        name: str = "d",
        command: str | None = "run",
        bind: bool = True,
    ) -> Dagsync:
        tmp = tmp_path / name
        tmp.mkdir(exist_ok=True)
        argv = [*args]
        if command is not None:
            argv = ["--root", str(tmp_path / "root"), "--period", "1h", *argv]
            if bind:
                argv += ["--http-bind", "127.0.0.1:{port}"]
        d = Dagsync(tmp, argv, {**env, **(extra_env or {})}, command)
        d.root = tmp_path / "root"
        procs.append(d)
        return d

    yield make
    for d in procs:
        if d.returncode is None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def push_change(repo: Repo, files: Mapping[str, str], msg: str = "change") -> str:
    for rel, content in files.items():
        repo.write(rel, content)
    sha = repo.commit(msg)
    repo.push()
    return sha


# -- metrics and every endpoint after real syncs -------------------------------------------------
def test_endpoints_and_exact_metrics_through_real_syncs(
    start: Callable[..., Dagsync], git_repo: Repo, tmp_path: Path
):
    gate = tmp_path / "gate"
    # The check holds the first pass until the test has looked at the not-ready answers.
    d = start(
        "--repo",
        git_repo.file_url,
        "--check",
        f"cmd:while [ ! -e {gate} ]; do sleep 0.02; done",
    )
    assert d.get("/readyz").status_code == 503
    assert d.get("/healthz").status_code == 200
    status = d.status()
    assert (status["revision"], status["last_attempt_at"], status["ready"]) == (None, None, False)
    assert status["sync_in_progress"] is True
    assert d.get("/").status_code == 404  # not in git-sync mode
    gate.touch()

    first = git_repo.head()
    wait_for(lambda: d.get("/readyz").status_code == 200)
    assert d.served() == first
    d.wait_idle()
    samples = d.metrics()
    size = sum(len(c.encode()) for c in INITIAL_FILES.values())
    expected = {
        key("dagsync_sync_total", source="git", result="published"): 1,
        key("dagsync_sync_total", source="git", result="unchanged"): 0,
        key("dagsync_sync_total", source="git", result="failed"): 0,
        key("dagsync_sync_total", source="git", result="rejected"): 0,
        key("dagsync_sync_duration_seconds_count", source="git", result="published"): 1,
        key("dagsync_sync_duration_seconds_count", source="git", result="failed"): 0,
        key("dagsync_consecutive_failures", source="git"): 0,
        key("dagsync_revision_info", source="git", revision=first): 1,
        key("dagsync_published_files", source="git"): len(INITIAL_FILES),
        key("dagsync_published_bytes", source="git"): size,
        key("dagsync_downloaded_files_total", source="git"): len(INITIAL_FILES),
        key("dagsync_downloaded_bytes_total", source="git"): size,
        key("dagsync_reused_files_total", source="git"): 0,
        key("dagsync_hook_total", hook="exec", result="ok"): 0,
        key("dagsync_hook_total", hook="webhook", result="failed"): 0,
    }
    assert {k: samples.get(k) for k in expected} == expected
    py = ".".join(map(str, sys.version_info[:3]))
    assert samples[key("dagsync_build_info", version=__version__, python=py)] == 1
    status = d.status()
    assert samples[key("dagsync_last_success_timestamp_seconds", source="git")] == pytest.approx(
        status["last_attempt_at"], abs=0.01
    )
    assert status["source"] == "git"
    assert status["revision"] == first
    assert status["last_error"] is None
    assert status["consecutive_failures"] == 0
    assert status["published_at"] <= status["last_attempt_at"]
    assert d.get("/readyz").text == f"ok revision={first}\n"

    # a push, then the webhook: a second revision, one file changed and one added
    second = push_change(git_repo, {"dags/a.py": "# dag a v2\n", "dags/c.py": "C = 1\n"})
    assert d.post().status_code == 202
    d.wait_syncs("published", 2)
    assert d.served() == second
    samples = d.metrics()
    revisions = [k for k in samples if k[0] == "dagsync_revision_info"]
    assert revisions == [key("dagsync_revision_info", source="git", revision=second)]
    assert samples[key("dagsync_published_files", source="git")] == len(INITIAL_FILES) + 1
    assert samples[key("dagsync_downloaded_files_total", source="git")] == len(INITIAL_FILES) + 2
    assert samples[key("dagsync_reused_files_total", source="git")] == len(INITIAL_FILES) - 1

    # nothing moved: unchanged, nothing downloaded
    assert d.post().status_code == 202
    d.wait_syncs("unchanged", 1)
    samples = d.metrics()
    assert samples[key("dagsync_downloaded_files_total", source="git")] == len(INITIAL_FILES) + 2
    assert samples[key("dagsync_sync_total", source="git", result="published")] == 2

    # the source goes away: failures are counted, readiness and the revision stay
    hidden = git_repo.bare_path.with_name("hidden.git")
    git_repo.bare_path.rename(hidden)
    assert d.post().status_code == 202
    d.wait_syncs("failed", 1)
    samples = d.metrics()
    failed = samples[key("dagsync_sync_total", source="git", result="failed")]
    assert samples[key("dagsync_consecutive_failures", source="git")] >= 1
    assert samples[key("dagsync_consecutive_failures", source="git")] <= failed
    status = d.status()
    assert status["last_error"] and status["consecutive_failures"] >= 1
    assert status["revision"] == second
    assert d.get("/readyz").status_code == 200
    assert d.get("/healthz").status_code == 200
    assert d.served() == second

    hidden.rename(git_repo.bare_path)
    unchanged = d.syncs("unchanged")
    assert d.post().status_code == 202
    d.wait_syncs("unchanged", unchanged + 1)
    assert d.metric("dagsync_consecutive_failures", source="git") == 0
    assert d.status()["last_error"] is None

    assert d.stop() == 0
    assert d.stdout == ""


# -- the trigger ---------------------------------------------------------------------------------
def test_trigger_secret_github_gitlab_bearer(
    start: Callable[..., Dagsync], git_repo: Repo, tmp_path: Path
):
    secret = tmp_path / "trigger-secret"
    secret.write_text(GITHUB_SECRET + "\n")
    d = start("--repo", git_repo.file_url, "--trigger-secret-file", str(secret))
    d.wait_syncs("published", 1)
    d.wait_idle()
    before = d.total_syncs()

    for headers in (
        {},
        {"X-Hub-Signature-256": GITHUB_SIGNATURE.replace("7", "8")},
        {"X-Gitlab-Token": "nope"},
        {"Authorization": "Bearer nope"},
    ):
        resp = d.post(data=GITHUB_PAYLOAD, headers=headers)
        assert resp.status_code == 401, headers
    d.wait_idle()
    assert d.total_syncs() == before  # refused requests start nothing

    resp = d.post(
        data=GITHUB_PAYLOAD,
        headers={"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Event": "push"},
    )
    assert resp.status_code == 202
    d.wait_syncs("unchanged", 1)
    assert d.post(headers={"X-Gitlab-Token": GITHUB_SECRET}).status_code == 202
    d.wait_syncs("unchanged", 2)
    assert d.post(headers={"Authorization": f"Bearer {GITHUB_SECRET}"}).status_code == 202
    d.wait_syncs("unchanged", 3)

    # rotation: the file changes, the old secret stops working
    secret.write_text("rotated-trigger-secret")
    assert d.post(headers={"X-Gitlab-Token": GITHUB_SECRET}).status_code == 401
    assert d.post(headers={"X-Gitlab-Token": "rotated-trigger-secret"}).status_code == 202
    assert d.post(data=b"x" * ((1 << 20) + 1)).status_code == 413
    assert d.stop() == 0
    assert GITHUB_SECRET not in d.stderr and "rotated-trigger-secret" not in d.stderr


def post_all_at_once(d: Dagsync, count: int) -> list[int]:
    """``count`` POST /sync requests released together; their status codes."""
    codes: list[int] = []
    lock = threading.Lock()
    go = threading.Event()

    def fire() -> None:
        go.wait()
        code = d.post().status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=fire) for _ in range(count)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    return codes


def test_burst_of_posts_while_a_sync_runs_costs_one_more_sync(
    start: Callable[..., Dagsync], git_repo: Repo, tmp_path: Path
):
    """SPEC 5: requests that arrive while a sync runs coalesce into exactly one more sync.
    The check holds the pass (on a gate file) so that all 50 requests land during it."""
    gate, started = tmp_path / "gate", tmp_path / "check-started"
    gate.touch()
    hold = f"cmd:touch {started}; while [ ! -e {gate} ]; do sleep 0.02; done"
    d = start("--repo", git_repo.file_url, "--check", hold)
    d.wait_syncs("published", 1)
    d.wait_idle()
    before = d.total_syncs()
    gate.unlink()
    started.unlink()
    second = push_change(git_repo, {"dags/burst.py": "B = 1\n"})
    assert d.post().status_code == 202
    wait_for(started.exists)  # the pass is in its check, held

    assert post_all_at_once(d, 50) == [202] * 50
    assert d.status()["sync_in_progress"] is True
    gate.touch()
    d.wait_idle()
    assert d.total_syncs() - before == 2  # the held pass and exactly one more
    assert d.syncs("published") == 2 and d.syncs("unchanged") == 1
    assert d.served() == second

    # a push after the burst is not missed
    third = push_change(git_repo, {"dags/after.py": "A = 1\n"})
    assert d.post().status_code == 202
    wait_for(lambda: d.served() == third)
    assert d.stop() == 0


def test_burst_of_posts_from_idle_costs_at_most_two_syncs(
    start: Callable[..., Dagsync], git_repo: Repo
):
    """SPEC 5: a burst costs at most two syncs, also when it hits an idle loop (the trigger
    settles briefly before the pass, so requests arriving a few ms apart share it)."""
    d = start("--repo", git_repo.file_url)
    d.wait_syncs("published", 1)
    d.wait_idle()
    before = d.total_syncs()
    pushed = push_change(git_repo, {"dags/idle_burst.py": "B = 2\n"})
    assert post_all_at_once(d, 50) == [202] * 50
    wait_for(lambda: d.served() == pushed)
    d.wait_idle()
    assert 1 <= d.total_syncs() - before <= 2
    assert d.stop() == 0


# -- hooks ---------------------------------------------------------------------------------------
EXEC_HOOK_SCRIPT = """\
import json, os, sys
record = {
    "cwd": os.getcwd(),
    "rev": os.environ["DAGSYNC_REVISION"],
    "path": os.environ["DAGSYNC_PATH"],
    "hash": os.environ["GITSYNC_HASH"],
}
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(record) + "\\n")
"""


def exec_hook(tmp_path: Path, out: Path, fail_marker: Path) -> str:
    """A hook that records its env and cwd, then fails while ``fail_marker`` says so."""
    script = tmp_path / "hook.py"
    script.write_text(EXEC_HOOK_SCRIPT)
    return f'python3 {script} {out}; test "$(cat {fail_marker} 2>/dev/null)" != fail'


def hook_lines(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hooks_env_cwd_headers_retry_and_startup(
    start: Callable[..., Dagsync], git_repo: Repo, tmp_path: Path
):
    out, fail_marker = tmp_path / "exec.jsonl", tmp_path / "fail"
    receiver = WebhookReceiver(statuses=[500, 502])
    try:
        fail_marker.write_text("fail")  # the exec hook fails until the marker changes
        command = exec_hook(tmp_path, out, fail_marker)
        d = start(
            "--repo", git_repo.file_url,
            "--exechook-command", command,
            "--webhook-url", receiver.url,
        )  # fmt: skip
        first = git_repo.head()
        wait_for(lambda: len(receiver.deliveries) == 3)  # 500, 502, then 200
        for delivery in receiver.deliveries:
            assert delivery.headers["Gitsync-Hash"] == first
            assert delivery.headers["Content-Type"] == "application/json"
            assert delivery.json() == {"revision": first, "source": "git"}
        wait_for(lambda: d.metric("dagsync_hook_total", hook="webhook", result="ok") == 1)
        assert d.metric("dagsync_hook_total", hook="webhook", result="failed") == 2

        wait_for(lambda: len(hook_lines(out)) >= 2)  # failed and retried
        fail_marker.write_text("ok")
        wait_for(lambda: d.metric("dagsync_hook_total", hook="exec", result="ok") == 1)
        lines = hook_lines(out)
        revision_dir = str(d.root / ".dagsync" / "revisions" / first)
        assert all(
            line == {"cwd": revision_dir, "rev": first, "path": revision_dir, "hash": first}
            for line in lines
        )
        assert d.metric("dagsync_hook_total", hook="exec", result="failed") == len(lines) - 1
        assert d.served() == first  # a failing hook never holds the revision back

        second = push_change(git_repo, {"dags/new.py": "N = 1\n"})
        assert d.post().status_code == 202
        wait_for(lambda: d.metric("dagsync_hook_total", hook="webhook", result="ok") == 2)
        assert receiver.deliveries[-1].headers["Gitsync-Hash"] == second
        wait_for(lambda: hook_lines(out)[-1]["rev"] == second)
        assert d.stop() == 0

        # a restart with the revision already on disk: hooks fire once for it
        seen = len(receiver.deliveries)
        d2 = start(
            "--repo", git_repo.file_url,
            "--exechook-command", command,
            "--webhook-url", receiver.url,
            name="restart",
        )  # fmt: skip
        assert d2.get("/readyz").status_code == 200  # found on disk: ready at once
        assert d2.metric("dagsync_revision_info", source="git", revision=second) == 1
        wait_for(lambda: len(receiver.deliveries) == seen + 1)
        assert receiver.deliveries[-1].headers["Gitsync-Hash"] == second
        wait_for(lambda: d2.metric("dagsync_hook_total", hook="exec", result="ok") == 1)
        d2.wait_syncs("unchanged", 1)
        d2.wait_idle()
        assert len(receiver.deliveries) == seen + 1  # unchanged passes do not fire hooks
        assert d2.stop() == 0
    finally:
        receiver.close()


def test_once_hook_failure_exits_1_and_keeps_the_revision(
    start: Callable[..., Dagsync], git_repo: Repo, tmp_path: Path, env: dict[str, str]
):
    root = tmp_path / "once-root"
    args = ["once", "--repo", git_repo.file_url, "--root", str(root)]
    failing = subprocess.run(
        [sys.executable, "-m", "dagsync", *args, "--exechook-command", "echo nope; exit 7"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert failing.returncode == 1, failing.stderr
    assert "hook failed" in failing.stderr and "exited 7: nope" in failing.stderr
    assert os.path.basename(os.readlink(root / "current")) == git_repo.head()
    assert "http listening" not in failing.stderr  # no HTTP in once by default

    marker = tmp_path / "marker"
    ok = subprocess.run(
        [sys.executable, "-m", "dagsync", *args, "--exechook-command", f"pwd > {marker}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    # unchanged, and the hook ran for the revision on disk
    assert marker.read_text().strip() == str(root / ".dagsync" / "revisions" / git_repo.head())


# -- the check gate ------------------------------------------------------------------------------
def test_check_gate_keeps_a_broken_commit_out(
    start: Callable[..., Dagsync], git_repo: Repo, tmp_path: Path
):
    error_file = tmp_path / "root" / "dagsync-error.json"
    d = start("--repo", git_repo.file_url, "--check", "python", "--error-file", error_file.name)
    d.wait_syncs("published", 1)
    good = git_repo.head()

    broken = push_change(git_repo, {"dags/broken.py": "import os\ndef f(:\n    pass\n"})
    assert d.post().status_code == 202
    d.wait_syncs("rejected", 1)
    assert d.served() == good
    assert not (d.root / ".dagsync" / "revisions" / broken).exists()
    status = d.status()
    assert status["revision"] == good
    assert status["rejected_revision"] == broken
    assert status["last_error"].startswith("--check python: dags/broken.py:2: ")
    assert d.get("/readyz").status_code == 200
    doc = json.loads(error_file.read_text())
    assert doc["message"] == status["last_error"]
    assert doc["result"] == "rejected"
    assert doc["revision"] == broken
    assert doc["time"].endswith("Z")
    samples = d.metrics()
    assert samples[key("dagsync_revision_info", source="git", revision=good)] == 1
    assert samples[key("dagsync_consecutive_failures", source="git")] == 0

    assert d.post().status_code == 202  # the source has not moved: not tried again
    d.wait_syncs("rejected", 2)
    assert d.stderr.count("revision rejected") == 1

    fixed = push_change(git_repo, {"dags/broken.py": "import os\ndef f():\n    pass\n"})
    assert d.post().status_code == 202
    wait_for(lambda: d.served() == fixed)
    wait_for(lambda: not error_file.exists())
    status = d.status()
    assert (status["last_error"], status["rejected_revision"]) == (None, None)
    assert d.stop() == 0


# -- git-sync mode -------------------------------------------------------------------------------
def test_gitsync_mode_root_endpoint(start: Callable[..., Dagsync], git_repo: Repo, tmp_path: Path):
    gate = tmp_path / "gate"
    d = start(
        "--check",
        f"cmd:while [ ! -e {gate} ]; do sleep 0.02; done",
        command=None,
        extra_env={
            "GITSYNC_REPO": git_repo.file_url,
            "GITSYNC_ROOT": str(tmp_path / "root"),
            "GITSYNC_LINK": "current",
            "GITSYNC_PERIOD": "1h",
            "GITSYNC_HTTP_BIND": "127.0.0.1:{port}",
        },
    )
    resp = d.get("/")
    assert (resp.status_code, resp.text) == (503, "repo is not ready\n")
    gate.touch()
    wait_for(lambda: d.get("/").status_code == 200)
    assert d.served() == git_repo.head()
    assert d.get("/metrics").status_code == 200
    assert d.stop() == 0


# -- logs and secrets ----------------------------------------------------------------------------
def test_json_logs_and_no_secret_in_any_output(
    start: Callable[..., Dagsync], git_repo: Repo, tmp_path: Path
):
    secrets = {
        "password_file": "pw-file-secret-6f1d",
        "trigger_file": "trigger-file-secret-77aa",
        "oss_file": "oss-file-secret-91bc",
        "webhook_pass": "webhook-yaml-pass-3e5f",
        "oss_env": "oss-env-secret-c0de",
        "azure_key": "YXp1cmUtYWNjb3VudC1rZXk=",
        "gitsync_env": "gitsync-env-password-4d2a",
    }
    files = {}
    for name in ("password_file", "trigger_file", "oss_file"):
        files[name] = tmp_path / name
        files[name].write_text(secrets[name] + "\n")
    config = tmp_path / "dagsync.yaml"
    receiver_port = free_port()  # nothing listens: the webhook fails, naming its URL
    hook_url = f"http://hook:{secrets['webhook_pass']}@127.0.0.1:{receiver_port}/x"
    config.write_text(f"webhook_url: {json.dumps(hook_url)}\n")
    connection = f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={secrets['azure_key']}"
    everything = " ".join(secrets.values())
    leak = " ".join(f"$(cat {p})" for p in files.values())
    error_file = tmp_path / "root" / "error.json"
    # The check and the hook print every secret when they fail: the worst realistic case.
    check = (
        f"cmd:if [ -e dags/leak.py ]; then echo {everything} {leak}; echo {connection}; exit 1; fi"
    )
    d = start(
        "--repo", git_repo.file_url,
        "--config", str(config),
        "--username", "alice",
        "--password-file", str(files["password_file"]),
        "--trigger-secret-file", str(files["trigger_file"]),
        "--oss-access-key-secret-file", str(files["oss_file"]),
        "--exechook-command", f"echo {everything} {leak}; exit 1",
        "--check", check,
        "--error-file", str(error_file),
        "--link", "current",
        "--log-format", "json",
        "--log-level", "debug",
        extra_env={
            "OSS_ACCESS_KEY_SECRET": secrets["oss_env"],
            "AZURE_STORAGE_CONNECTION_STRING": connection,
            "GITSYNC_PASSWORD": secrets["gitsync_env"],
        },
    )  # fmt: skip
    d.wait_syncs("published", 1)
    wait_for(lambda: (d.metric("dagsync_hook_total", hook="exec", result="failed") or 0) >= 1)
    wait_for(lambda: (d.metric("dagsync_hook_total", hook="webhook", result="failed") or 0) >= 1)

    push_change(git_repo, {"dags/leak.py": "x = 1\n"})
    bearer = {"Authorization": f"Bearer {secrets['trigger_file']}"}
    assert d.post(headers=bearer).status_code == 202
    d.wait_syncs("rejected", 1)
    status_text = d.get("/status").text
    metrics_text = d.get("/metrics").text
    error_text = error_file.read_text()
    assert d.stop() == 0
    stderr, stdout = d.stderr, d.stdout

    # the leaks did happen, masked
    assert "***" in json.loads(status_text)["last_error"]
    assert "***" in json.loads(error_text)["message"]
    assert "hook failed" in stderr

    for where, text in (
        ("stdout", stdout),
        ("stderr", stderr),
        ("/status", status_text),
        ("/metrics", metrics_text),
        ("error file", error_text),
    ):
        for name, value in secrets.items():
            # not even a piece: a formatter that cuts "key=value" pairs could leak a prefix
            assert value[:12] not in text, f"{name} leaked into {where}"
        assert connection not in text

    lines = stderr.splitlines()
    assert lines
    for line in lines:
        doc = json.loads(line)
        assert {"ts", "level", "event", "logger"} <= set(doc), line
    events = [json.loads(line)["event"] for line in lines]
    assert "published" in events and "revision rejected" in events
