"""The Azure Blob store for the contract suite: Azurite (npm) behind the counting proxy, driven
by the real azure-storage-blob SDK. Skipped only where node is not installed (CI installs it).

Names the SDK would normalise (``a/../b``) are stored with a raw PUT signed by a container SAS.
Azure turns a backslash in a blob name into a slash, so a name like ``a\\..\\b`` cannot be
stored at all; such keys are stored under a placeholder and renamed in listing responses (an
endpoint that misbehaves so). The env's own uploads go through a second, uncounted proxy: the
SDK's PUTs straight to Azurite stall on Nagle's algorithm (~40 ms each). Credential rotation
uses what Azure offers for revoking a SAS: a stored access policy, replaced.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import pytest

from tests.fakes.counting_proxy import CountingProxy, RecordedRequest
from tests.fakes.emulators import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    Azurite,
    azure_kind,
    install_azurite,
)
from tests.sources.cloud_env import CloudStoreEnv

CONTAINER = "dags"
PREFIX = "team/dags/"
PAGE_SIZE = 500  # the suite's 1,234 blobs take three listing pages
WRONG_KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="


class AzureBlobStoreEnv(CloudStoreEnv):
    """A container whose ``team/dags/`` prefix is published; decoys around it must not be."""

    source = "azureblob"
    bucket = CONTAINER
    list_page_size = PAGE_SIZE

    def start(self) -> None:
        from azure.storage.blob import ContainerClient

        binary = install_azurite()
        if binary is None:
            pytest.skip("node and npm are not installed (Azurite needs them; CI installs them)")
        self._stack = contextlib.ExitStack()
        self.azurite = Azurite(binary).start()
        self._stack.callback(self.azurite.stop)
        self.fake = self._stack.enter_context(CountingProxy(self.azurite.address, azure_kind))
        self.renames: dict[str, str] = {}
        self.fake.rewrites.append(self._rename_in_listings)
        uploads = self._stack.enter_context(CountingProxy(self.azurite.address, azure_kind))
        self.key = AZURITE_KEY
        self.admin: Any = ContainerClient.from_connection_string(
            self.azurite.connection_string(uploads.address), CONTAINER
        )
        self._stack.callback(self.admin.close)
        self.admin.create_container()
        self.admin.upload_blob("team/dags-old/decoy.py", b"no")
        self.admin.upload_blob("team/other.py", b"no")
        self.policy = 0

    def stop(self) -> None:
        self._stack.close()

    def put(self, path: str, data: bytes) -> None:
        self.admin.upload_blob(PREFIX + path, data, overwrite=True)

    def _rename_in_listings(self, request: RecordedRequest, body: bytes) -> bytes:
        if request.kind != "list":
            return body
        for placeholder, name in self.renames.items():
            body = body.replace(
                f"<Name>{placeholder}</Name>".encode(), f"<Name>{escape(name)}</Name>".encode()
            )
        return body

    def put_raw(self, key: str, data: bytes) -> None:
        if "\\" in key:
            placeholder = f"{PREFIX}raw-{len(self.renames)}.py"
            self.admin.upload_blob(placeholder, data)
            self.renames[placeholder] = PREFIX + key
            return
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        sas = generate_container_sas(
            AZURITE_ACCOUNT,
            CONTAINER,
            account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(write=True, create=True),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        )
        host, _, port = self.azurite.address.partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        path = f"/{AZURITE_ACCOUNT}/{CONTAINER}/{quote(PREFIX + key, safe='/.')}?{sas}"
        conn.request("PUT", path, body=data, headers={"x-ms-blob-type": "BlockBlob"})
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 201, response.status

    def delete(self, path: str) -> None:
        self.admin.delete_blob(PREFIX + path)

    def options(self) -> dict[str, Any]:
        return {
            "azureblob_container": CONTAINER,
            "azureblob_prefix": "team/dags",
            "source_option": [f"page_size={PAGE_SIZE}"],
        }

    def environ(self) -> dict[str, str]:
        return {
            "AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string(
                self.fake.address, self.key
            )
        }

    def secrets(self) -> list[str]:
        return [AZURITE_KEY, WRONG_KEY]

    def break_credentials(self) -> None:
        self.key = WRONG_KEY

    def missing_bucket_options(self) -> dict[str, Any]:
        return {**self.options(), "azureblob_container": "no-such-container"}

    # a SAS bound to a stored access policy: replacing the policy revokes it
    def _set_policy(self) -> str:
        from azure.storage.blob import AccessPolicy, ContainerSasPermissions

        policy_id = f"dagsync-{self.policy}"
        now = dt.datetime.now(dt.UTC)
        policy = AccessPolicy(
            permission=ContainerSasPermissions(read=True, list=True),
            expiry=now + dt.timedelta(hours=1),
            start=now - dt.timedelta(minutes=5),
        )
        self.admin.set_container_access_policy(signed_identifiers={policy_id: policy})
        return policy_id

    def credential_file(self, path: Path) -> tuple[dict[str, Any], dict[str, str | None]]:
        from azure.storage.blob import generate_container_sas

        policy_id = self._set_policy()
        sas = generate_container_sas(
            AZURITE_ACCOUNT, CONTAINER, account_key=AZURITE_KEY, policy_id=policy_id
        )
        path.write_text(sas + "\n")
        options = {
            "azureblob_account_url": f"http://{self.fake.address}/{AZURITE_ACCOUNT}",
            "azure_sas_token_file": str(path),
        }
        return options, {"AZURE_STORAGE_CONNECTION_STRING": None}

    def rotate_credentials(self) -> None:
        self.policy += 1
        self._set_policy()


STORE_ENV = AzureBlobStoreEnv
