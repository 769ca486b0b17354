"""How credentials reach git: GIT_ASKPASS reading a file, GIT_SSH_COMMAND with a private copy of
the key, and a passwd entry for OpenSSH when the uid has none. Never the URL, argv or a child's
environment: a password given as a value (git-sync's variable, user-info in ``--repo``) is
written to a private 0600 file that the askpass script reads."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from dagsync.config import Config
from dagsync.errors import SourceError
from dagsync.redact import register_secret

log = logging.getLogger(__name__)

# The script only names the variables; the secret itself stays in a file or in git's env.
ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$DAGSYNC_ASKPASS_USERNAME" ;;
  *) tr -d '\\r\\n' < "$DAGSYNC_ASKPASS_PASSWORD_FILE"; printf '\\n' ;;
esac
"""
NSS_WRAPPER_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
    "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so",
    "/usr/lib64/libnss_wrapper.so",
    "/usr/lib/libnss_wrapper.so",
)


class GitAuth:
    """Builds the environment of every git child process.

    ``username``/``password`` come from the user-info of ``--repo`` when the options do not
    give them; ``nss_wrapper_paths`` and ``passwd_lookup`` are where the library is looked for
    and how a uid's passwd entry is found (injectable, so their absence can be tested).
    """

    def __init__(
        self,
        config: Config,
        *,
        username: str | None = None,
        password: str | None = None,
        nss_wrapper_paths: Sequence[str] | None = None,
        passwd_lookup: Callable[[int], object] = pwd.getpwuid,
    ) -> None:
        self.config = config
        self.username = config.username or username
        self.password = None if config.password_file else (config.password or password)
        register_secret(self.password)
        self.nss_wrapper_paths = nss_wrapper_paths
        self.passwd_lookup = passwd_lookup
        self._private: Path | None = None

    def _private_dir(self) -> Path:
        # Outside the shared volume: Airflow must never see a key copy. /tmp is writable even
        # with a read-only root filesystem (the chart mounts an emptyDir there).
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="dagsync-auth-"))
            os.chmod(self._private, 0o700)
        return self._private

    def env(self) -> dict[str, str]:
        cfg = self.config
        env = dict(cfg.child_env)
        env.update(
            {
                "GIT_TERMINAL_PROMPT": "0",
                "GCM_INTERACTIVE": "never",
                "LC_ALL": "C",
            }
        )
        if "HOME" not in env or not os.access(env["HOME"], os.W_OK):
            env["HOME"] = str(self._private_dir())
        if self.username or self.password or cfg.password_file:
            env.update(self._askpass_env())
        env["GIT_SSH_COMMAND"] = self._ssh_command()
        env.update(self._passwd_env())
        return env

    def _askpass_env(self) -> dict[str, str]:
        cfg = self.config
        script = self._private_dir() / "askpass.sh"
        if not script.exists():
            script.write_text(ASKPASS_SCRIPT)
            os.chmod(script, 0o700)
        env = {"GIT_ASKPASS": str(script), "DAGSYNC_ASKPASS_USERNAME": self.username or "git"}
        if cfg.password_file:
            # Re-read on every sync, so a rotated token works; remembered only for redaction.
            try:
                register_secret(cfg.password_file.read_text().strip())
            except OSError as exc:
                raise SourceError(
                    f"--password-file: cannot read {cfg.password_file}: {exc.strerror}",
                    str(cfg.password_file),
                ) from None
            env["DAGSYNC_ASKPASS_PASSWORD_FILE"] = str(cfg.password_file)
        else:
            env["DAGSYNC_ASKPASS_PASSWORD_FILE"] = str(self._password_copy())
        return env

    def _password_copy(self) -> Path:
        """The password given as a value, in a private 0600 file (empty when there is none)."""
        copy = self._private_dir() / "password"
        if not copy.exists():
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(self.password or "")
        return copy

    def _ssh_command(self) -> str:
        cfg = self.config
        parts = ["ssh", "-o", "BatchMode=yes"]
        if cfg.ssh_key_file:
            parts += ["-o", "IdentitiesOnly=yes", "-i", str(self._key_copy(cfg.ssh_key_file))]
        if not cfg.ssh_known_hosts:
            parts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        elif cfg.ssh_known_hosts_file:
            parts += [
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={cfg.ssh_known_hosts_file}",
            ]
        return shlex.join(parts)

    def _key_copy(self, key: Path) -> Path:
        """A 0600 copy of the key: OpenSSH refuses a key that is group-readable by its owner,
        and Kubernetes mounts secrets 0440 or 0644 owned by root."""
        copy = self._private_dir() / "ssh-key"
        try:
            data = key.read_bytes()
        except OSError as exc:
            raise SourceError(
                f"--ssh-key-file: cannot read {key}: {exc.strerror}", str(key)
            ) from None
        if not data.endswith(b"\n"):
            data += b"\n"  # OpenSSH rejects a key whose last line has no newline
        tmp = copy.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, copy)
        return copy

    def _has_passwd_entry(self) -> bool:
        try:
            self.passwd_lookup(os.getuid())
        except KeyError:
            return False
        return True

    def _nss_wrapper(self) -> str | None:
        paths = NSS_WRAPPER_PATHS if self.nss_wrapper_paths is None else self.nss_wrapper_paths
        return next((p for p in paths if os.path.exists(p)), None)

    def ssh_problem(self) -> str | None:
        """Why ssh cannot run here, said so a person can fix it; None when it can.

        OpenSSH exits with "No user exists for uid" when the uid has no passwd entry (the
        Airflow chart runs git-sync as 65533 with none); nss_wrapper can supply one."""
        if self._has_passwd_entry() or self._nss_wrapper() is not None:
            return None
        return (
            f"ssh cannot run as uid {os.getuid()}: it has no passwd entry and libnss_wrapper "
            "is not installed (install libnss-wrapper, e.g. apt-get install libnss-wrapper, "
            "as the dagsync image does; or run as a uid that has a passwd entry)"
        )

    def _passwd_env(self) -> dict[str, str]:
        """A generated passwd entry under nss_wrapper when the uid has none."""
        if self._has_passwd_entry():
            return {}
        lib = self._nss_wrapper()
        if lib is None:
            return {}  # ssh_problem() refused ssh URLs before any git ran
        uid, gid = os.getuid(), os.getgid()
        home = self._private_dir()
        passwd, group = home / "passwd", home / "group"
        if not passwd.exists():
            passwd.write_text(f"dagsync:x:{uid}:{gid}:dagsync:{home}:/bin/sh\n")
            group.write_text(f"dagsync:x:{gid}:\n")
        return {
            "LD_PRELOAD": lib,
            "NSS_WRAPPER_PASSWD": str(passwd),
            "NSS_WRAPPER_GROUP": str(group),
        }

    def close(self) -> None:
        if self._private is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._private)
            self._private = None
