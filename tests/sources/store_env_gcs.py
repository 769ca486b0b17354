"""The GCS store for the contract suite: gcp-storage-emulator behind the counting proxy, driven
by the real google-cloud-storage SDK with a service-account key file (Application Default
Credentials).

The emulator checks no credentials, so the proxy does, as Google does: it serves the OAuth token
endpoint the key file names (checking the RS256-signed JWT against the one valid key) and
refuses storage requests without a token it issued. The emulator also refuses to store names
like ``../x``; such keys are stored under a placeholder and renamed in listing responses.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.counting_proxy import CountingProxy, RecordedRequest, Reply
from tests.fakes.emulators import GcsEmulator, gcs_kind, patched_environ
from tests.sources.cloud_env import CloudStoreEnv

BUCKET = "dags-bucket"
PREFIX = "team/dags/"
CLIENT_EMAIL = "dagsync@dags-project.iam.gserviceaccount.com"
JSON_HEADERS = {"Content-Type": "application/json"}


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class GoogleAuth:
    """The credential check the emulator lacks: one valid service-account key at a time."""

    def __init__(self, token_uri: str) -> None:
        self.token_uri = token_uri
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens: set[str] = set()

    def rotate(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens.clear()

    def key_file(self, key: rsa.RSAPrivateKey | None = None) -> str:
        pem = (key or self.key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return json.dumps(
            {
                "type": "service_account",
                "project_id": "dags-project",
                "private_key_id": "k1",
                "private_key": pem.decode(),
                "client_email": CLIENT_EMAIL,
                "client_id": "1234567890",
                "token_uri": self.token_uri,
            }
        )

    def _signed_by_valid_key(self, jwt: str) -> bool:
        try:
            header, payload, signature = jwt.split(".")
            self.key.public_key().verify(
                _b64url(signature),
                f"{header}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:
            return False
        return True

    def __call__(self, request: RecordedRequest, body: bytes) -> Reply | None:
        if request.kind == "token":
            form = dict(parse_qsl(body.decode()))
            if not self._signed_by_valid_key(form.get("assertion", "")):
                error = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                return Reply(400, json.dumps(error).encode(), JSON_HEADERS)
            token = "ya29." + secrets.token_urlsafe(24)
            self.tokens.add(token)
            answer = {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
            return Reply(200, json.dumps(answer).encode(), JSON_HEADERS)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer in self.tokens or self._signed_by_valid_key(bearer):
            return None
        error = {"error": {"code": 401, "message": "Invalid Credentials", "errors": []}}
        return Reply(401, json.dumps(error).encode(), JSON_HEADERS)


class GcsStoreEnv(CloudStoreEnv):
    """A bucket whose ``team/dags/`` prefix is published; decoys around it must not be."""

    source = "gcs"
    bucket = BUCKET
    # A new client asks for a token first, and the SDK (with OpenTelemetry installed) reads the
    # bucket's metadata once per client, in the background; neither is a download.
    listing_kinds = frozenset({"list", "token", "bucket"})

    def start(self) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self._stack = contextlib.ExitStack()
        self.server = GcsEmulator().start()
        self._stack.callback(self.server.stop)
        self.fake = self._stack.enter_context(CountingProxy(self.server.address, gcs_kind))
        self.auth = GoogleAuth(self.fake.url + "/token")
        self.fake.intercepts.append(self.auth)
        self.renames: dict[str, str] = {}
        self.fake.rewrites.append(self._rename_in_listings)
        self.key_path = self.tmp_path / "service-account.json"
        self.key_path.write_text(self.auth.key_file())
        self._stack.enter_context(
            patched_environ(
                {
                    "STORAGE_EMULATOR_HOST": self.fake.url,
                    "GOOGLE_APPLICATION_CREDENTIALS": str(self.key_path),
                    "GOOGLE_CLOUD_PROJECT": None,
                    "CLOUDSDK_CONFIG": str(self.tmp_path / "gcloud"),
                    "NO_GCE_CHECK": "True",
                }
            )
        )
        self.admin: Any = storage.Client(
            project="dags-project",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.server.url},
        )
        self._stack.callback(self.admin.close)
        self.admin.create_bucket(BUCKET)
        self._bucket = self.admin.bucket(BUCKET)
        self._bucket.blob(PREFIX).upload_from_string(b"")  # the console's folder object
        self._bucket.blob("team/dags-old/decoy.py").upload_from_string(b"no")
        self._bucket.blob("team/other.py").upload_from_string(b"no")

    def stop(self) -> None:
        self._stack.close()

    def _rename_in_listings(self, request: RecordedRequest, body: bytes) -> bytes:
        if request.kind != "list" or not self.renames:
            return body
        listing = json.loads(body)
        for item in listing.get("items", []):
            item["name"] = self.renames.get(item["name"], item["name"])
        return json.dumps(listing).encode()

    def put(self, path: str, data: bytes) -> None:
        self._bucket.blob(PREFIX + path).upload_from_string(data)

    def put_raw(self, key: str, data: bytes) -> None:
        placeholder = f"{PREFIX}raw-{len(self.renames)}.py"
        self._bucket.blob(placeholder).upload_from_string(data)
        self.renames[placeholder] = PREFIX + key

    def delete(self, path: str) -> None:
        self._bucket.blob(PREFIX + path).delete()

    def options(self) -> dict[str, Any]:
        return {"gcs_bucket": BUCKET, "gcs_prefix": "team/dags"}

    def secrets(self) -> list[str]:
        pem = json.loads(self.auth.key_file())["private_key"]
        return [pem.splitlines()[5], *self.auth.tokens]

    def missing_bucket_options(self) -> dict[str, Any]:
        return {**self.options(), "gcs_bucket": "no-such-bucket"}

    def credential_file(self, path: Path) -> tuple[dict[str, Any], dict[str, str | None]]:
        path.write_text(self.auth.key_file())
        return {}, {"GOOGLE_APPLICATION_CREDENTIALS": str(path)}

    def rotate_credentials(self) -> None:
        self.auth.rotate()

    def break_credentials(self) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_path.write_text(self.auth.key_file(other))


STORE_ENV = GcsStoreEnv
