"""Which credential the azure and azureblob sources use (this module is shared by both), and
reading it: the connection string from the environment, or an account key / SAS token file
that is re-read every pass (rotation).

No SDK here: validation happens before any client exists, and every secret read is registered
for redaction before it can reach a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from dagsync.config import Config
from dagsync.errors import ConfigError, SourceError
from dagsync.redact import register_secret

AUTH_HINTS = {
    "connection string": "a wrong or rotated AccountKey, or an expired SharedAccessSignature?",
    "account key": "a wrong or rotated key, or one of another account?",
    "SAS token": "expired, for another share, or without read and list permissions?",
}


@dataclass(frozen=True)
class Credential:
    """Where the credential comes from; files are re-read every pass (rotation)."""

    route: str  # "connection string" | "account key" | "SAS token"
    account_url: str | None
    file: Path | None
    flag: str

    def read(self, config: Config) -> str:
        if self.file is None:
            assert config.azure_connection_string is not None
            return config.azure_connection_string
        try:
            value = self.file.read_text(encoding="utf-8", errors="replace").strip()
        except OSError as exc:
            raise SourceError(f"--{self.flag}: cannot read {self.file}: {exc.strerror}") from None
        if self.route == "SAS token":
            value = value.lstrip("?")
        register_secret(value)
        for sig in parse_qs(value).get("sig", []):
            register_secret(sig)
        if not value:
            raise SourceError(f"--{self.flag}: {self.file} is empty")
        return value


def credential_route(config: Config) -> Credential:
    """Exactly one of: the connection string, or the account URL with a key or SAS file."""
    conn, url = config.azure_connection_string, config.azure_account_url
    key_file, sas_file = config.azure_account_key_file, config.azure_sas_token_file
    if key_file and sas_file:
        raise ConfigError(
            "--azure-account-key-file and --azure-sas-token-file: give only one",
            "azure-account-key-file",
        )
    if conn and (url or key_file or sas_file):
        raise ConfigError(
            "--azure-account-url: give either AZURE_STORAGE_CONNECTION_STRING or "
            "--azure-account-url with a key or SAS file, not both",
            "azure-account-url",
        )
    if conn:
        return Credential("connection string", None, None, "azure-connection-string")
    if not url:
        flag = "azure-account-key-file" if key_file or sas_file else "azure-account-url"
        raise ConfigError(
            f"--{flag}: Azure credentials needed: env AZURE_STORAGE_CONNECTION_STRING, or "
            "--azure-account-url with --azure-account-key-file or --azure-sas-token-file",
            flag,
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            "--azure-account-url: expected https://ACCOUNT.file.core.windows.net",
            "azure-account-url",
        )
    if parts.query or parts.fragment:
        raise ConfigError(
            "--azure-account-url: must not carry a query; put a SAS token in "
            "--azure-sas-token-file",
            "azure-account-url",
        )
    if key_file is None and sas_file is None:
        raise ConfigError(
            "--azure-account-url: needs --azure-account-key-file or --azure-sas-token-file",
            "azure-account-url",
        )
    if key_file is not None:
        return Credential("account key", url.rstrip("/"), key_file, "azure-account-key-file")
    assert sas_file is not None
    return Credential("SAS token", url.rstrip("/"), sas_file, "azure-sas-token-file")


def register_connection_string(value: str) -> None:
    """Mask the connection string, its AccountKey and its SAS (and the SAS signature)."""
    register_secret(value)
    for part in value.split(";"):
        name, _, secret = part.partition("=")
        if name.strip().lower() in ("accountkey", "sharedaccesssignature"):
            register_secret(secret)
            for sig in parse_qs(secret.lstrip("?")).get("sig", []):
                register_secret(sig)
