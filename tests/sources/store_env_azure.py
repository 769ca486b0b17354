"""The Azure Files store for the contract suite: tests/fakes/azure_server.FakeAzureFiles driven
by the real azure-storage-file-share SDK."""

from __future__ import annotations

from typing import Any

from tests.fakes.azure_server import FakeAzureFiles
from tests.sources.store_contract import FakeServerStoreEnv

SHARE = "dags"
BASE = "team/dags"  # --azure-path
WRONG_KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="
PAGE_SIZE = 500  # small enough that the suite's 1,234-file folder takes three listing pages


class AzureStoreEnv(FakeServerStoreEnv):
    """A share whose ``team/dags`` directory is published; files around it must not be."""

    source = "azure"
    list_page_size = PAGE_SIZE
    # Azure Files names cannot hold "/", "\\" or be ".." (the service refuses them), so keys
    # like "../x" or "/abs.py" cannot be stored: there is no such share to test against. The
    # walker still refuses such names from a misbehaving endpoint (tests/sources/test_azure.py),
    # and manifest.safe_path, which every source's keys pass, has its own tests.
    supports_unsafe_keys = False

    def start(self) -> None:
        self.fake = FakeAzureFiles()
        self.fake.start()
        self.fake.create_share(SHARE)
        self.fake.put(SHARE, "team/dags-old/decoy.py", b"not published")
        self.fake.put(SHARE, "team/other.py", b"not published")
        self.fake.mkdir(SHARE, f"{BASE}/empty-folder")
        self.connection_string = self.fake.connection_string

    def stop(self) -> None:
        self.fake.close()

    def put(self, path: str, data: bytes) -> None:
        self.fake.put(SHARE, f"{BASE}/{path}", data)

    def delete(self, path: str) -> None:
        self.fake.delete(SHARE, f"{BASE}/{path}")

    def options(self) -> dict[str, Any]:
        return {
            "azure_share": SHARE,
            "azure_path": BASE,
            # Hidden knobs: a small page so paging is exercised; short SDK retry waits.
            "source_option": [f"page_size={PAGE_SIZE}", "retry_backoff=0.05"],
        }

    def environ(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def secrets(self) -> list[str]:
        return [self.fake.key, self.fake.connection_string, WRONG_KEY]

    def break_credentials(self) -> None:
        self.connection_string = self.fake.connection_string.replace(self.fake.key, WRONG_KEY)


STORE_ENV = AzureStoreEnv
