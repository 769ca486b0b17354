"""The s3, gcs and azureblob clouds of bench/store_bench.py: each a real emulator (moto's S3
server, gcp-storage-emulator, Azurite) behind tests/fakes/counting_proxy, which counts the
requests and adds the per-request latency. Both run in the bench's server process.

Each :class:`EmulatorSpec` says how to start the emulator (``factory``, returning the handlers
store_bench's ServerProcess calls: info, populate, modify, counts, clear), how dagsync reaches it
and the plain sequential SDK loop that is the baseline. Seeding goes through the proxy before
the latency is switched on (Azurite stalls ~40 ms on each PUT sent straight to it).
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

Handlers = dict[str, Callable[..., Any]]
BUCKET = "bench-dags"
PREFIX = "dags/"


@dataclass(frozen=True)
class EmulatorSpec:
    name: str
    factory: Callable[[float], tuple[Handlers, Callable[[], None]]]
    dagsync_args: Callable[[dict[str, str]], list[str]]
    dagsync_env: Callable[[dict[str, str]], dict[str, str]]
    sequential: Callable[[str, str, str], None]  # (info JSON, dest, limit)
    # request kinds that only list (gcs: the SDK reads the bucket's metadata once per client)
    listing_kinds: frozenset[str] = frozenset({"list"})


def _handlers(
    proxy: Any, latency: float, put: Callable[[str, bytes], None], info: dict[str, str]
) -> Handlers:
    sizes: dict[str, int] = {}

    def populate(count: int, size: int, seed: int) -> list[str]:
        rand = random.Random(seed)
        paths = [f"d{i // 100:03d}/f{i:05d}.py" for i in range(count)]
        for path in paths:
            put(PREFIX + path, rand.randbytes(size))
            sizes[path] = size
        proxy.latency = latency  # seeding is not part of any measurement
        return paths

    def modify(paths: list[str], seed: int) -> None:
        rand = random.Random(seed)
        proxy.latency = 0.0
        for path in paths:
            put(PREFIX + path, rand.randbytes(sizes[path]))
        proxy.latency = latency

    return {
        "info": lambda: info,
        "populate": populate,
        "modify": modify,
        "counts": lambda: Counter(r.kind for r in proxy.requests),
        "clear": proxy.clear_requests,
    }


# -- S3 ----------------------------------------------------------------------------------------


def _s3_factory(latency: float) -> tuple[Handlers, Callable[[], None]]:
    from tests.fakes.counting_proxy import CountingProxy
    from tests.fakes.emulators import MotoS3, SpawnedEmulator, s3_kind

    spawned = SpawnedEmulator("s3").start()
    moto = MotoS3()  # a handle on the spawned server: its HTTP helpers and clients
    moto.port = spawned.port
    key_id, secret = moto.create_user()
    proxy = CountingProxy(moto.address, s3_kind).start()
    admin: Any = moto.client("s3", key_id, secret)
    admin.create_bucket(Bucket=BUCKET)

    def put(key: str, data: bytes) -> None:
        admin.put_object(Bucket=BUCKET, Key=key, Body=data)

    info = {"url": proxy.url, "key_id": key_id, "secret": secret}

    def cleanup() -> None:
        proxy.stop()
        spawned.stop()

    return _handlers(proxy, latency, put, info), cleanup


def _s3_env(info: dict[str, str]) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": info["key_id"],
        "AWS_SECRET_ACCESS_KEY": info["secret"],
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def s3_sequential(info_json: str, dest: str, limit: str) -> None:
    """The baseline: boto3's paginator, then get_object for each key in turn."""
    import boto3

    info = json.loads(info_json)
    client = boto3.client("s3", endpoint_url=info["url"])
    done = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            if done >= int(limit):
                return
            path = Path(dest, item["Key"][len(PREFIX) :])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
            done += 1


# -- GCS ---------------------------------------------------------------------------------------


def _gcs_factory(latency: float) -> tuple[Handlers, Callable[[], None]]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from tests.fakes.counting_proxy import CountingProxy
    from tests.fakes.emulators import SpawnedEmulator, gcs_kind

    emulator = SpawnedEmulator("gcs").start()
    proxy = CountingProxy(emulator.address, gcs_kind).start()
    admin = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": proxy.url},
    )
    bucket = admin.create_bucket(BUCKET)

    def put(key: str, data: bytes) -> None:
        bucket.blob(key).upload_from_string(data)

    def cleanup() -> None:
        admin.close()
        proxy.stop()
        emulator.stop()

    return _handlers(proxy, latency, put, {"url": proxy.url}), cleanup


def _gcs_env(info: dict[str, str]) -> dict[str, str]:
    # Anonymous, as the SDK does for an emulator when no credentials are found.
    return {"STORAGE_EMULATOR_HOST": info["url"], "NO_GCE_CHECK": "True"}


def gcs_sequential(info_json: str, dest: str, limit: str) -> None:
    """The baseline: list_blobs, then download_to_filename for each object in turn (through a
    fresh Blob: the emulator's mediaLink names its own port, not the proxy's)."""
    from google.cloud import storage

    client = storage.Client(project="bench")
    bucket = client.bucket(BUCKET)
    for done, blob in enumerate(client.list_blobs(BUCKET, prefix=PREFIX)):
        if done >= int(limit):
            return
        path = Path(dest, blob.name[len(PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        bucket.blob(blob.name).download_to_filename(str(path))


# -- Azure Blob --------------------------------------------------------------------------------


def _azureblob_factory(latency: float) -> tuple[Handlers, Callable[[], None]]:
    from azure.storage.blob import ContainerClient

    from tests.fakes.counting_proxy import CountingProxy
    from tests.fakes.emulators import Azurite, azure_kind, install_azurite

    binary = install_azurite()
    if binary is None:
        raise RuntimeError("azureblob needs node and npm (for Azurite)")
    azurite = Azurite(binary).start()
    proxy = CountingProxy(azurite.address, azure_kind).start()
    connection = azurite.connection_string(proxy.address)
    admin = ContainerClient.from_connection_string(connection, BUCKET)
    admin.create_container()

    def put(key: str, data: bytes) -> None:
        admin.upload_blob(key, data, overwrite=True)

    def cleanup() -> None:
        admin.close()
        proxy.stop()
        azurite.stop()

    return _handlers(proxy, latency, put, {"connection": connection}), cleanup


def azureblob_sequential(info_json: str, dest: str, limit: str) -> None:
    """The baseline: list_blobs, then download_blob().readinto() for each blob in turn."""
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"], BUCKET
    )
    for done, blob in enumerate(client.list_blobs(name_starts_with=PREFIX)):
        if done >= int(limit):
            return
        path = Path(dest, blob.name[len(PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            client.download_blob(blob.name).readinto(out)


EMULATORS = (
    EmulatorSpec(
        "s3",
        _s3_factory,
        lambda i: (
            ["--source", "s3", "--s3-endpoint-url", i["url"], "--s3-bucket", BUCKET]
            + ["--s3-prefix", PREFIX]
        ),
        _s3_env,
        s3_sequential,
    ),
    EmulatorSpec(
        "gcs",
        _gcs_factory,
        lambda i: ["--source", "gcs", "--gcs-bucket", BUCKET, "--gcs-prefix", PREFIX],
        _gcs_env,
        gcs_sequential,
        frozenset({"list", "bucket"}),
    ),
    EmulatorSpec(
        "azureblob",
        _azureblob_factory,
        lambda i: (
            ["--source", "azureblob", "--azureblob-container", BUCKET]
            + ["--azureblob-prefix", PREFIX]
        ),
        lambda i: {"AZURE_STORAGE_CONNECTION_STRING": i["connection"]},
        azureblob_sequential,
    ),
)
