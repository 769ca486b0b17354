"""The OSS store for the contract suite: tests/fakes/oss_server.FakeOss driven by the real oss2."""

from __future__ import annotations

import posixpath
from collections import Counter
from typing import Any

from tests.fakes.oss_server import FakeOss
from tests.sources.store_contract import StoreEnv

ACCESS_KEY_ID = "LTAI5tDagsyncTestKeyId"
ACCESS_KEY_SECRET = "DagsyncTestSecret-8f3a1c"
BUCKET = "dags-bucket"
PREFIX = "team/dags/"


class OssStoreEnv(StoreEnv):
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

    def requests(self) -> Counter[str]:
        return Counter(r.kind for r in self.fake.requests)

    def clear_requests(self) -> None:
        self.fake.clear_requests()

    def fail_next(self, n: int, status: int = 500) -> None:
        self.fake.fail_next(n, status, kind="get")

    def reset_next(self, n: int) -> None:
        self.fake.reset_next(n, kind="get")

    def truncate_next_get(self, n: int) -> None:
        self.fake.truncate_next_get(n)

    def corrupt_next_get(self, n: int) -> None:
        self.fake.corrupt_next_get(n)


STORE_ENV = OssStoreEnv
