"""The OSS store for the contract suite: tests/fakes/oss_server.FakeOss driven by the real oss2."""

from __future__ import annotations

import posixpath
from typing import Any

from tests.fakes.oss_server import FakeOss
from tests.sources.store_contract import FakeServerStoreEnv

ACCESS_KEY_ID = "LTAI5tDagsyncTestKeyId"
ACCESS_KEY_SECRET = "DagsyncTestSecret-8f3a1c"
BUCKET = "dags-bucket"
PREFIX = "team/dags/"


class OssStoreEnv(FakeServerStoreEnv):
    """A bucket whose ``team/dags/`` prefix is published; decoys around it must not be."""

    source = "oss"
    list_page_size = 1000

    def start(self) -> None:
        self.fake = FakeOss(access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET)
        self.fake.start()
        self.fake.put(BUCKET, PREFIX, b"")  # the console's "folder" object for the prefix
        self.fake.put(BUCKET, "team/dags-old/decoy.py", b"not published")
        self.fake.put(BUCKET, "team/other.py", b"not published")
        self.secret = ACCESS_KEY_SECRET

    def stop(self) -> None:
        self.fake.stop()

    def put(self, path: str, data: bytes) -> None:
        folder = posixpath.dirname(path)
        if folder:  # uploads through the console leave empty "folder/" objects
            self.fake.put(BUCKET, f"{PREFIX}{folder}/", b"")
        self.fake.put(BUCKET, PREFIX + path, data)

    def put_raw(self, key: str, data: bytes) -> None:
        self.fake.put(BUCKET, PREFIX + key, data)

    def delete(self, path: str) -> None:
        self.fake.delete(BUCKET, PREFIX + path)

    def options(self) -> dict[str, Any]:
        return {"oss_endpoint": self.fake.endpoint, "oss_bucket": BUCKET, "oss_prefix": "team/dags"}

    def environ(self) -> dict[str, str]:
        return {"OSS_ACCESS_KEY_ID": ACCESS_KEY_ID, "OSS_ACCESS_KEY_SECRET": self.secret}

    def secrets(self) -> list[str]:
        return [ACCESS_KEY_ID, ACCESS_KEY_SECRET]

    def break_credentials(self) -> None:
        self.secret = "WrongSecret-0000"


STORE_ENV = OssStoreEnv
