"""The one exception hierarchy: every error dagsync raises on purpose is a DagsyncError."""

from __future__ import annotations


class DagsyncError(Exception):
    """Base of every error dagsync reports; the message is one line meant for a user."""


class ConfigError(DagsyncError):
    """Bad usage or configuration: exit code 2, raised before any network access."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class SourceError(DagsyncError):
    """The source could not be resolved or fetched completely."""

    def __init__(self, message: str, obj: str | None = None) -> None:
        super().__init__(message)
        self.obj = obj


class LimitExceeded(SourceError):
    """A revision is larger than --max-files / --max-bytes."""


class UnsafePath(SourceError):
    """A key or path would escape the published tree."""


class WriteFailed(SourceError):
    """A file of the revision could not be written under the root (disk full, name too long,
    a file and a folder of one name); the message names the published path, not staging."""


class CheckFailed(DagsyncError):
    """The pre-publish check rejected a candidate revision."""

    def __init__(self, message: str, revision: str = "") -> None:
        super().__init__(message)
        self.revision = revision


class PublishError(DagsyncError):
    """The on-disk store could not publish or record a revision."""


class SyncTimeout(DagsyncError):
    """One sync attempt ran past --sync-timeout and was abandoned."""


class Abandoned(BaseException):  # noqa: N818 - like KeyboardInterrupt, must not be swallowed
    """The process was asked to stop in the middle of a pass."""
