"""redact.py patterns and registered secrets, and App.build registering every configured secret
(environment variables, secret files, URL passwords) before the first log line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dagsync.app import register_config_secrets
from dagsync.config import load
from dagsync.redact import (
    MASK,
    read_secret_file,
    redact,
    redact_url,
    register_secret,
    register_url_credentials,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pw@host/repo.git", "https://***@host/repo.git"),
        ("ssh://git@host:22/x", "ssh://***@host:22/x"),
        ("fatal: 'https://tok@h/x' failed", "fatal: 'https://***@h/x' failed"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),  # scp form: no secret
        ("https://h/x?sv=2022-11-02&sig=AbC%2B%3D&se=1", "https://h/x?sv=2022-11-02&sig=***&se=1"),
        ("?Signature=abc&x-oss-signature=def", "?Signature=***&x-oss-signature=***"),
        ("security-token=CAIS1234;", "security-token=***;"),
        (
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k3y/+==;EndpointSuffix=x",
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;EndpointSuffix=x",
        ),
        ("SharedAccessSignature=sv=1&sig=2", "SharedAccessSignature=***"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("authorization=Basic YWxpY2U6cHc=", "authorization=Basic ***"),
        ("Authorization: SharedKey acct:c2ln", "Authorization: SharedKey ***"),
        ("Authorization: OSS LTAIxx:c2ln", "Authorization: OSS ***"),
        ("'Authorization': 'token ghp_x'", "'Authorization': 'token ***'"),
        ("X-Gitlab-Token: glpat-123", "X-Gitlab-Token: ***"),
        ("password=hunter2 user=bob", "password=*** user=bob"),
        ("nothing secret here revision=abc", "nothing secret here revision=abc"),
        ("", ""),
    ],
)
def test_patterns(text: str, expected: str):
    assert redact(text) == expected


def test_registered_secret_anywhere():
    register_secret("  plain-registered-secret\n")
    assert redact("a plain-registered-secret b") == f"a {MASK} b"
    assert redact("xplain-registered-secretx") == f"x{MASK}x"


def test_registered_secret_url_encoded_too():
    register_secret("p@ss/w:rd+1")
    register_secret("p%40ss%2Fw%3Ard%2B2")
    assert redact("p@ss/w:rd+1") == MASK
    assert redact("p@ss/w:rd+2") == MASK  # its decoded form


def test_short_values_are_not_registered():
    register_secret("abc")
    register_secret(None)
    register_secret("")
    assert redact("abc abc") == "abc abc"


def test_longest_secret_first():
    register_secret("overlap-secret")
    register_secret("overlap-secret-longer")
    assert redact("overlap-secret-longer") == MASK


def test_url_credentials():
    register_url_credentials("https://bob:url-pass-9876@h/x")
    register_url_credentials("not a url")
    register_url_credentials(None)
    register_url_credentials("http://[bad")
    assert redact("git said url-pass-9876") == f"git said {MASK}"


def test_redact_url():
    assert redact_url("https://a:b@h/x") == "https://***@h/x"


def test_read_secret_file(tmp_path: Path):
    path = tmp_path / "s"
    path.write_text("file-secret-value\n")
    assert read_secret_file(path) == "file-secret-value"
    assert redact("file-secret-value") == MASK
    with pytest.raises(OSError):
        read_secret_file(tmp_path / "missing")


def test_config_secrets_are_registered_at_build(tmp_path: Path):
    files = {
        "password_file": "pw-from-file-1111",
        "oss_access_key_secret_file": "oss-file-secret-2222",
        "azure_account_key_file": "YXp1cmUta2V5LWZpbGU=3333",
        "azure_sas_token_file": "sv=2022&sig=sas-file-4444",
        "trigger_secret_file": "trigger-file-5555",
    }
    flags: dict[str, str] = {
        "repo": "https://alice:repo-url-pass-6666@git.example.com/r.git",
        "webhook_url": "https://hook:webhook-pass-7777@hooks.example.com/x",
        "root": str(tmp_path / "root"),
        "username": "alice",
    }
    for attr, value in files.items():
        path = tmp_path / attr
        path.write_text(value + "\n")
        flags[attr] = str(path)
    key = tmp_path / "id_ed25519"
    key.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    flags["ssh_key_file"] = str(key)
    env = {
        "PATH": os.environ["PATH"],
        "OSS_ACCESS_KEY_SECRET": "oss-env-secret-8888",
        "OSS_SESSION_TOKEN": "oss-sts-token-9999",
        "AZURE_STORAGE_CONNECTION_STRING": (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Y29ubi1rZXk=0000;"
        ),
    }
    config = load("run", flags, env)
    register_config_secrets(config)
    secrets = [
        *files.values(),
        "repo-url-pass-6666",
        "webhook-pass-7777",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
        "oss-env-secret-8888",
        "oss-sts-token-9999",
        env["AZURE_STORAGE_CONNECTION_STRING"],
        "Y29ubi1rZXk=0000",
    ]
    for secret in secrets:
        assert redact(f"<{secret}>") == f"<{MASK}>", secret


def test_gitsync_password_is_registered_when_config_carries_it(tmp_path: Path):
    """GITSYNC_PASSWORD reaches Config.password through compat; whatever the route, the value
    in the Config is registered."""
    env = {"PATH": os.environ["PATH"], "GITSYNC_PASSWORD": "gitsync-env-pass-4242"}
    config = load("run", {"repo": "https://h/r.git", "root": str(tmp_path), "username": "u"}, env)
    register_config_secrets(config)
    if config.password is None:
        pytest.skip("this build's compat layer does not read GITSYNC_PASSWORD yet")
    assert redact("gitsync-env-pass-4242") == MASK


def test_unreadable_secret_file_is_left_to_its_option(tmp_path: Path):
    config = load("run", {"repo": "file:///x", "root": str(tmp_path)}, {})
    object.__setattr__(config, "password_file", tmp_path / "missing")
    register_config_secrets(config)  # no exception: the source names the flag later
