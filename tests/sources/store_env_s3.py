"""The S3 store for the contract suite: moto's S3 server behind the counting proxy, driven by
the real boto3. moto checks credentials once ``break_credentials`` switched that on."""

from __future__ import annotations

import contextlib
import os
import posixpath
from pathlib import Path
from typing import Any

from tests.fakes.counting_proxy import CountingProxy
from tests.fakes.emulators import MotoS3, patched_environ, s3_kind
from tests.sources.cloud_env import CloudStoreEnv

BUCKET = "dags-bucket"
PREFIX = "team/dags/"
WRONG_SECRET = "WrongSecretKey-0000000000000000000000"


def aws_environ(home: str) -> dict[str, str | None]:
    """The AWS chain, apart from the keys: no shared files, instance metadata or profile."""
    return {
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_DEFAULT_PROFILE": None,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": None,
        "AWS_CONFIG_FILE": os.path.join(home, "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ROLE_ARN": None,
        "AWS_WEB_IDENTITY_TOKEN_FILE": None,
    }


class S3StoreEnv(CloudStoreEnv):
    """A bucket whose ``team/dags/`` prefix is published; decoys around it must not be."""

    source = "s3"
    list_page_size = 1000
    bucket = BUCKET

    def start(self) -> None:
        self._stack = contextlib.ExitStack()
        self.moto = MotoS3().start()
        self._stack.callback(self.moto.stop)
        self.key_id, self.secret = self.moto.create_user()
        self.good_secret = self.secret
        self.fake = self._stack.enter_context(CountingProxy(self.moto.address, s3_kind))
        self._stack.enter_context(
            patched_environ({**aws_environ(str(self.tmp_path)), **self.environ()})
        )
        self.admin: Any = self.moto.client("s3", self.key_id, self.secret)
        self.admin.create_bucket(Bucket=BUCKET)
        self.admin.put_object(Bucket=BUCKET, Key=PREFIX, Body=b"")  # the console's folder
        self.admin.put_object(Bucket=BUCKET, Key="team/dags-old/decoy.py", Body=b"no")
        self.admin.put_object(Bucket=BUCKET, Key="team/other.py", Body=b"no")
        self.folders: set[str] = set()

    def stop(self) -> None:
        self._stack.close()

    def put(self, path: str, data: bytes) -> None:
        folder = posixpath.dirname(path)
        if folder and folder not in self.folders:
            self.folders.add(folder)
            self.admin.put_object(Bucket=BUCKET, Key=f"{PREFIX}{folder}/", Body=b"")
        self.admin.put_object(Bucket=BUCKET, Key=PREFIX + path, Body=data)

    def put_raw(self, key: str, data: bytes) -> None:
        self.admin.put_object(Bucket=BUCKET, Key=PREFIX + key, Body=data)

    def delete(self, path: str) -> None:
        self.admin.delete_object(Bucket=BUCKET, Key=PREFIX + path)

    def options(self) -> dict[str, Any]:
        return {"s3_endpoint_url": self.fake.url, "s3_bucket": BUCKET, "s3_prefix": "team/dags"}

    def environ(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret}

    def secrets(self) -> list[str]:
        return [self.key_id, self.good_secret, WRONG_SECRET]

    def missing_bucket_options(self) -> dict[str, Any]:
        return {**self.options(), "s3_bucket": "no-such-bucket"}

    def credential_file(self, path: Path) -> tuple[dict[str, Any], dict[str, str | None]]:
        path.write_text(
            f"[default]\naws_access_key_id = {self.key_id}\naws_secret_access_key = {self.secret}\n"
        )
        environ = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
        return {}, {**environ, "AWS_SHARED_CREDENTIALS_FILE": str(path)}

    def rotate_credentials(self) -> None:
        self.moto.enable_auth()
        iam: Any = self.moto.client("iam", self.key_id, self.secret)
        new = iam.create_access_key(UserName="dagsync")["AccessKey"]
        iam.delete_access_key(UserName="dagsync", AccessKeyId=self.key_id)
        self.key_id, self.secret = new["AccessKeyId"], new["SecretAccessKey"]
        self.admin = self.moto.client("s3", self.key_id, self.secret)

    def break_credentials(self) -> None:
        self.moto.enable_auth()
        self.secret = WRONG_SECRET


STORE_ENV = S3StoreEnv
