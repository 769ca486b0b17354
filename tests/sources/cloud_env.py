"""What the s3, gcs and azureblob store envs add to the contract's StoreEnv for
tests/sources/test_cloud_stores.py: a missing bucket, credential files to rotate, and a way to
replace an object between the listing and its download."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

from tests.fakes.counting_proxy import CountingProxy, RecordedRequest, Reply
from tests.sources.store_contract import FakeServerStoreEnv


class CloudStoreEnv(FakeServerStoreEnv):
    """A cloud emulator behind ``self.fake``, a :class:`CountingProxy`."""

    fake: CountingProxy
    #: the bucket or container the env's options name
    bucket: str

    @abstractmethod
    def missing_bucket_options(self) -> dict[str, Any]:
        """Options naming a bucket (container) that does not exist."""

    @abstractmethod
    def credential_file(self, path: Path) -> tuple[dict[str, Any], dict[str, str | None]]:
        """Write the currently valid credential to ``path``; return the options and the
        process environment (None: unset) that make dagsync use that file alone."""

    @abstractmethod
    def rotate_credentials(self) -> None:
        """The service accepts a new credential from now on, and no longer the old one."""

    def replace_on_first_download(self, path: str, data: bytes) -> None:
        """Replace the object published as ``path`` just before the first download reaches
        the server (after the listing saw the old version)."""
        done: list[bool] = []

        def hook(request: RecordedRequest, body: bytes) -> Reply | None:
            if request.kind == self.download_kind and not done:
                done.append(True)
                self.put(path, data)
            return None

        self.fake.intercepts.append(hook)
