"""The Helm chart, rendered by Helm's own engine, and the Kubernetes examples.

Rendered objects are validated against the Kubernetes schemas (strict: unknown fields fail);
the Prometheus operator's CRDs, which those schemas do not cover, are checked by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "dagsync"
EXAMPLES = REPO / "examples"
KUBE_VERSION = "1.30"
RELEASE = "rel"
NAMESPACE = "airflow"
FULLNAME = "rel-dagsync"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# Secret names nobody would type: wherever one shows up it must be a reference.
SSH = "sentinel-ssh-secret"
KNOWN_HOSTS = "sentinel-known-hosts-secret"
HTTPS = "sentinel-https-secret"
OSS = "sentinel-oss-secret"
AZ_CONN = "sentinel-azure-conn-secret"
AZ_SAS = "sentinel-azure-sas-secret"
AZ_KEY = "sentinel-azure-key-secret"
TRIGGER = "sentinel-trigger-secret"
RELAY = "sentinel-relay-token-secret"
S3_KEYS = "sentinel-s3-keys-secret"
GCS_KEY = "sentinel-gcs-key-secret"
BLOB_SAS = "sentinel-azureblob-sas-secret"
SENTINELS = (
    SSH,
    KNOWN_HOSTS,
    HTTPS,
    OSS,
    AZ_CONN,
    AZ_SAS,
    AZ_KEY,
    TRIGGER,
    RELAY,
    S3_KEYS,
    GCS_KEY,
    BLOB_SAS,
)
ROLE_ARN = "arn:aws:iam::123456789012:role/airflow-dags-reader"
GSA = "dags-reader@acme-prod.iam.gserviceaccount.com"
CLIENT_ID = "00000000-1111-2222-3333-444444444444"

CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "git-ssh": {
        "git": {
            "repo": "git@github.com:acme/dags.git",
            "ref": "main",
            "subpath": "dags",
            "sshKeySecret": SSH,
            "knownHostsSecret": KNOWN_HOSTS,
        },
        "triggerSecret": TRIGGER,
    },
    "git-https": {
        "git": {"repo": "https://github.com/acme/dags.git", "credentialsSecret": HTTPS},
        "include": ["*.py", "sql/**"],
        "exclude": ["tests/"],
        "check": "python",
    },
    "oss": {
        "source": "oss",
        "oss": {
            "endpoint": "https://oss-cn-beijing-internal.aliyuncs.com",
            "bucket": "acme-dags",
            "prefix": "dags/",
            "credentialsSecret": OSS,
        },
        # Leftover git settings must not leak into another source's pod.
        "git": {"credentialsSecret": HTTPS},
    },
    "azure-connection-string": {
        "source": "azure",
        "azure": {"share": "airflow", "path": "dags", "connectionStringSecret": AZ_CONN},
    },
    "azure-sas": {
        "source": "azure",
        "azure": {
            "share": "airflow",
            "accountUrl": "https://acme.file.core.windows.net",
            "sasTokenSecret": AZ_SAS,
        },
    },
    "azure-account-key": {
        "source": "azure",
        "azure": {
            "share": "airflow",
            "accountUrl": "https://acme.file.core.windows.net",
            "accountKeySecret": AZ_KEY,
        },
    },
    "local": {
        "source": "local",
        "local": {"path": "/source", "volume": {"nfs": {"server": "nas", "path": "/dags"}}},
        "persistence": {"existingClaim": "airflow-dags", "accessModes": ["ReadWriteOnce"]},
    },
    "s3-irsa": {
        "source": "s3",
        "s3": {
            "bucket": "acme-dags",
            "prefix": "dags/",
            "region": "eu-west-1",
            "roleArn": ROLE_ARN,
        },
        "serviceAccount": {"create": True},
    },
    "s3-keys": {
        "source": "s3",
        "s3": {
            "bucket": "dags",
            "endpointUrl": "http://minio.minio.svc:9000",
            "credentialsSecret": S3_KEYS,
        },
    },
    "gcs-workload-identity": {
        "source": "gcs",
        "gcs": {"bucket": "acme-dags", "prefix": "dags", "serviceAccount": GSA},
        "serviceAccount": {"create": True, "annotations": {"team": "data"}},
    },
    "gcs-key": {
        "source": "gcs",
        "gcs": {"bucket": "acme-dags", "project": "acme-prod", "keyFileSecret": GCS_KEY},
    },
    "azureblob-workload-identity": {
        "source": "azureblob",
        "azureblob": {
            "container": "dags",
            "accountUrl": "https://acme.blob.core.windows.net",
            "clientId": CLIENT_ID,
        },
        "serviceAccount": {"create": True},
    },
    "azureblob-sas": {
        "source": "azureblob",
        "azureblob": {
            "container": "dags",
            "prefix": "prod",
            "accountUrl": "https://acme.blob.core.windows.net",
            "sasTokenSecret": BLOB_SAS,
        },
    },
    "monitoring": {
        "git": {"repo": "https://github.com/acme/dags.git"},
        "period": "2m",
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "prometheusRule": {"enabled": True, "staleAfterPeriods": 3},
        "serviceAccount": {"create": True},
    },
    "relay": {
        "git": {"repo": "https://github.com/acme/dags.git", "subpath": "dags"},
        "keepRevisions": 10,
        "serveRevisions": {"enabled": True, "existingSecret": RELAY},
        "networkPolicy": {
            "enabled": True,
            "airflowPodSelector": {"matchLabels": {"tier": "airflow", "release": "airflow"}},
            "extraFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    },
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
        },
    },
}

EXPECTED_SOURCE = {
    "default": "git",
    "git-ssh": "git",
    "git-https": "git",
    "oss": "oss",
    "azure-connection-string": "azure",
    "azure-sas": "azure",
    "azure-account-key": "azure",
    "local": "local",
    "monitoring": "git",
    "relay": "git",
    "s3-irsa": "s3",
    "s3-keys": "s3",
    "gcs-workload-identity": "gcs",
    "gcs-key": "gcs",
    "azureblob-workload-identity": "azureblob",
    "azureblob-sas": "azureblob",
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any]) -> dict[str, str]:
    return chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in kinds, f"two {doc['kind']} objects"
        kinds[doc["kind"]] = doc
    return kinds


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def env_values(c: dict[str, Any]) -> dict[str, str]:
    return {name: e["value"] for name, e in env_of(c).items() if "value" in e}


def occurrences(node: Any, needle: str, path: tuple[Any, ...] = ()) -> Iterator[tuple]:
    """Paths (tuples of keys/indexes) of every string containing needle."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from occurrences(value, needle, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from occurrences(value, needle, (*path, index))
    elif isinstance(node, str) and needle in node:
        yield path


def is_reference(path: tuple) -> bool:
    """A secret name in a secretKeyRef, a secret volume or a projected volume's secret source."""
    return (
        path[-2:] == ("secretKeyRef", "name")
        or path[-2:] == ("secret", "secretName")
        or (len(path) >= 4 and path[-2] == "secret" and "sources" in path)
    )


@pytest.fixture(scope="module")
def renders(chart: Any) -> dict[str, dict[str, str]]:
    return {case: render(chart, values) for case, values in CASES.items()}


# --- lint and schemas -------------------------------------------------------------------------


def test_lint_clean_with_defaults() -> None:
    report = helm.lint(CHART, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    "case",
    ["git-ssh", "oss", "azure-sas", "local", "monitoring", "relay", "s3-irsa", "azureblob-sas"],
)
def test_lint_clean_per_source(case: str) -> None:
    report = helm.lint(CHART, values=CASES[case], strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_metadata(chart: Any) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == "0.1.0"
    assert chart.schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert chart.schema["properties"]["source"]["enum"] == [
        "git",
        "oss",
        "azure",
        "s3",
        "gcs",
        "azureblob",
        "local",
    ]


@pytest.mark.parametrize(
    "values",
    [
        {"source": "ftp"},
        {"period": "1m30s"},
        {"git": {"branch": "main"}},
        {"keepRevisions": 0},
        {"persistence": {"accessModes": ["ReadWriteSometimes"]}},
        {"serveRevisions": {"enabled": True, "token": "inline-secret"}},
        {"networkPolicy": {"enabled": True, "extraFrom": {"podSelector": {}}}},
    ],
    ids=[
        "source-ftp",
        "compound-duration",
        "unknown-key",
        "keep-zero",
        "access-mode",
        "serve-inline-token",
        "extra-from-not-a-list",
    ],
)
def test_schema_rejects(chart: Any, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmError):
        render(chart, values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"git": {"repo": "git@h:r.git", "sshKeySecret": SSH}}, "knownHostsSecret"),
        (
            {"source": "azure", "azure": {"share": "s", "sasTokenSecret": AZ_SAS}},
            "accountUrl",
        ),
        (
            {
                "source": "azure",
                "azure": {
                    "share": "s",
                    "connectionStringSecret": AZ_CONN,
                    "sasTokenSecret": AZ_SAS,
                },
            },
            "only one",
        ),
        ({"source": "local"}, "local.volume"),
        ({"source": "s3", "s3": {"bucket": "b", "roleArn": ROLE_ARN}}, "serviceAccount.create"),
        (
            {"source": "gcs", "gcs": {"serviceAccount": GSA, "keyFileSecret": GCS_KEY}},
            "not both",
        ),
        ({"source": "azureblob", "azureblob": {"container": "c"}}, "accountUrl is required"),
        (
            {
                "source": "azureblob",
                "azureblob": {
                    "accountUrl": "https://a.blob.core.windows.net",
                    "accountKeySecret": AZ_KEY,
                    "sasTokenSecret": BLOB_SAS,
                },
            },
            "only one",
        ),
    ],
    ids=[
        "ssh-without-known-hosts",
        "azure-file-without-url",
        "azure-two-credentials",
        "local",
        "irsa-without-service-account",
        "gcs-two-credentials",
        "azureblob-without-url",
        "azureblob-two-credentials",
    ],
)
def test_render_refuses_incomplete_credentials(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(chart, values)


# --- every rendered object --------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_objects_validate_against_kubernetes_schemas(
    renders: dict[str, dict[str, str]], case: str
) -> None:
    docs = objects(renders[case])
    assert {"Deployment", "Service"} <= {d["kind"] for d in docs}
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


@pytest.mark.parametrize("case", list(CASES))
def test_deployment_shape(renders: dict[str, dict[str, str]], case: str) -> None:
    docs = objects(renders[case])
    deployment = by_kind(docs)["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()

    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65533,
        "runAsGroup": 0,
        "fsGroup": 0,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    c = container(docs)
    assert "command" not in c, "the image's entrypoint (tini -- dagsync) must stay"
    assert c["args"][0] == "run"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65533
    assert sc["runAsGroup"] == 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    assert c["ports"] == [{"name": "http", "containerPort": 9797, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    env = env_values(c)
    assert env["DAGSYNC_SOURCE"] == EXPECTED_SOURCE[case]
    assert env["DAGSYNC_ROOT"] == "/git"
    assert env["DAGSYNC_HTTP_BIND"] == "0.0.0.0:9797"
    assert env["DAGSYNC_LINK"] == "current"
    prefixes = ("DAGSYNC_", "OSS_", "AZURE_", "AWS_", "GOOGLE_")
    assert all(name.startswith(prefixes) for name in env_of(c))

    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    root = volumes[mounts["/git"]["name"]]
    claim = CASES[case].get("persistence", {}).get("existingClaim", FULLNAME)
    assert root["persistentVolumeClaim"] == {"claimName": claim}
    tmp = volumes[mounts["/tmp"]["name"]]
    assert "emptyDir" in tmp
    assert pod["automountServiceAccountToken"] is False

    service = by_kind(docs)["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


@pytest.mark.parametrize("case", list(CASES))
def test_secrets_only_by_reference(renders: dict[str, dict[str, str]], case: str) -> None:
    docs = objects(renders[case])
    assert "Secret" not in {d["kind"] for d in docs}
    for sentinel in SENTINELS:
        for doc in docs:
            for path in occurrences(doc, sentinel):
                assert is_reference(path), f"{sentinel} inline at {'.'.join(map(str, path))}"
    for name, entry in env_of(container(docs)).items():
        if any(word in name for word in ("PASSWORD", "SECRET", "KEY_ID", "TOKEN", "CONNECTION")):
            assert "value" not in entry or name.endswith("_FILE"), name


def secret_files(docs: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """{path under /etc/dagsync: (secret name, key)} from the projected volume."""
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container(docs)["volumeMounts"] if m["mountPath"] == "/etc/dagsync"]
    assert mount["readOnly"] is True
    projected = volumes[mount["name"]]["projected"]
    assert projected["defaultMode"] == 0o440
    files = {}
    for source in projected["sources"]:
        for item in source["secret"]["items"]:
            files[item["path"]] = (source["secret"]["name"], item["key"])
    return files


def test_git_ssh(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["git-ssh"])
    env = env_values(container(docs))
    assert env["DAGSYNC_REPO"] == "git@github.com:acme/dags.git"
    assert env["DAGSYNC_REF"] == "main"
    assert env["DAGSYNC_SUBPATH"] == "dags"
    assert env["DAGSYNC_SSH_KEY_FILE"] == "/etc/dagsync/git/ssh"
    assert env["DAGSYNC_SSH_KNOWN_HOSTS_FILE"] == "/etc/dagsync/git/known_hosts"
    assert env["DAGSYNC_TRIGGER_SECRET_FILE"] == "/etc/dagsync/trigger/token"
    assert secret_files(docs) == {
        "git/ssh": (SSH, "ssh-privatekey"),
        "git/known_hosts": (KNOWN_HOSTS, "known_hosts"),
        "trigger/token": (TRIGGER, "token"),
    }


def test_git_ssh_without_host_key_checking(chart: Any) -> None:
    values = {"git": {"repo": "git@h:r.git", "sshKeySecret": SSH, "strictHostKeyChecking": False}}
    env = env_values(container(objects(render(chart, values))))
    assert env["DAGSYNC_SSH_KNOWN_HOSTS"] == "false"
    assert "DAGSYNC_SSH_KNOWN_HOSTS_FILE" not in env


def test_git_https(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["git-https"])
    c = container(docs)
    env = env_of(c)
    assert env["DAGSYNC_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": HTTPS,
        "key": "username",
    }
    assert env["DAGSYNC_PASSWORD_FILE"]["value"] == "/etc/dagsync/git/password"
    assert "DAGSYNC_PASSWORD" not in env
    assert secret_files(docs) == {"git/password": (HTTPS, "password")}
    assert c["args"] == ["run", "--include=*.py", "--include=sql/**", "--exclude=tests/"]
    assert env["DAGSYNC_CHECK"]["value"] == "python"


def test_oss(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["oss"])
    c = container(docs)
    env = env_of(c)
    assert env["DAGSYNC_OSS_ENDPOINT"]["value"] == "https://oss-cn-beijing-internal.aliyuncs.com"
    assert env["DAGSYNC_OSS_BUCKET"]["value"] == "acme-dags"
    assert env["DAGSYNC_OSS_PREFIX"]["value"] == "dags/"
    for name in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": OSS, "key": name}
    assert env["OSS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": OSS,
        "key": "OSS_SESSION_TOKEN",
        "optional": True,
    }
    assert not any(name.startswith(("DAGSYNC_REPO", "DAGSYNC_USERNAME")) for name in env)
    assert "/etc/dagsync" not in {m["mountPath"] for m in c["volumeMounts"]}


def test_azure_connection_string(renders: dict[str, dict[str, str]]) -> None:
    env = env_of(container(objects(renders["azure-connection-string"])))
    assert env["DAGSYNC_AZURE_SHARE"]["value"] == "airflow"
    assert env["DAGSYNC_AZURE_PATH"]["value"] == "dags"
    assert env["AZURE_STORAGE_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"] == {
        "name": AZ_CONN,
        "key": "AZURE_STORAGE_CONNECTION_STRING",
    }


def test_azure_sas_and_account_key_are_files(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["azure-sas"])
    env = env_values(container(docs))
    assert env["DAGSYNC_AZURE_ACCOUNT_URL"] == "https://acme.file.core.windows.net"
    assert env["DAGSYNC_AZURE_SAS_TOKEN_FILE"] == "/etc/dagsync/azure/sas-token"
    assert secret_files(docs) == {"azure/sas-token": (AZ_SAS, "sas-token")}

    docs = objects(renders["azure-account-key"])
    env = env_values(container(docs))
    assert env["DAGSYNC_AZURE_ACCOUNT_KEY_FILE"] == "/etc/dagsync/azure/account-key"
    assert secret_files(docs) == {"azure/account-key": (AZ_KEY, "azurestorageaccountkey")}


def service_account(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs)["ServiceAccount"]


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = by_kind(docs)["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def test_s3_irsa_annotates_the_service_account(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["s3-irsa"])
    env = env_of(container(docs))
    assert {k: v["value"] for k, v in env.items() if k.startswith("DAGSYNC_S3_")} == {
        "DAGSYNC_S3_BUCKET": "acme-dags",
        "DAGSYNC_S3_PREFIX": "dags/",
        "DAGSYNC_S3_REGION": "eu-west-1",
    }
    assert not any(name.startswith("AWS_") for name in env)  # EKS injects the web identity
    assert service_account(docs)["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": ROLE_ARN
    }
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME


def test_s3_static_keys_by_reference(renders: dict[str, dict[str, str]]) -> None:
    env = env_of(container(objects(renders["s3-keys"])))
    assert env["DAGSYNC_S3_ENDPOINT_URL"]["value"] == "http://minio.minio.svc:9000"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": S3_KEYS, "key": name}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_gcs_workload_identity_and_key_file(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["gcs-workload-identity"])
    assert service_account(docs)["metadata"]["annotations"] == {
        "team": "data",
        "iam.gke.io/gcp-service-account": GSA,
    }
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env_of(container(docs))

    docs = objects(renders["gcs-key"])
    env = env_values(container(docs))
    assert env["DAGSYNC_GCS_PROJECT"] == "acme-prod"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/etc/dagsync/gcs/key.json"
    assert secret_files(docs) == {"gcs/key.json": (GCS_KEY, "key.json")}
    assert "ServiceAccount" not in {d["kind"] for d in docs}


def test_azureblob_workload_identity_and_sas_file(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["azureblob-workload-identity"])
    assert service_account(docs)["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": CLIENT_ID
    }
    assert pod_labels(docs)["azure.workload.identity/use"] == "true"
    env = env_values(container(docs))
    assert env["DAGSYNC_AZUREBLOB_ACCOUNT_URL"] == "https://acme.blob.core.windows.net"
    assert not any(k.startswith(("AZURE_", "DAGSYNC_AZURE_")) for k in env)

    docs = objects(renders["azureblob-sas"])
    env = env_values(container(docs))
    assert env["DAGSYNC_AZUREBLOB_PREFIX"] == "prod"
    assert env["DAGSYNC_AZURE_SAS_TOKEN_FILE"] == "/etc/dagsync/azureblob/sas-token"
    assert secret_files(docs) == {"azureblob/sas-token": (BLOB_SAS, "sas-token")}
    assert "azure.workload.identity/use" not in pod_labels(docs)


def test_local(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["local"])
    c = container(docs)
    assert env_values(c)["DAGSYNC_LOCAL_PATH"] == "/source"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/source"]["readOnly"] is True
    volumes = {
        v["name"]: v for v in by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes[mounts["/source"]["name"]]["nfs"] == {"server": "nas", "path": "/dags"}
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}, "existingClaim is reused"


def test_default_persistent_volume_claim(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["default"])
    pvc = by_kind(docs)["PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == FULLNAME
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in pvc["spec"]
    assert {"ServiceMonitor", "PrometheusRule", "ServiceAccount"}.isdisjoint(
        d["kind"] for d in docs
    )


def test_storage_class_and_emptydir(chart: Any) -> None:
    pvc = by_kind(objects(render(chart, {"persistence": {"storageClass": "-"}})))
    assert pvc["PersistentVolumeClaim"]["spec"]["storageClassName"] == ""
    pvc = by_kind(objects(render(chart, {"persistence": {"storageClass": "azurefile-csi"}})))
    assert pvc["PersistentVolumeClaim"]["spec"]["storageClassName"] == "azurefile-csi"
    docs = objects(render(chart, {"persistence": {"enabled": False}}))
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    assert {"name": "root", "emptyDir": {}} in pod["volumes"]


def test_extra_env_args_and_volumes(chart: Any) -> None:
    values = {
        "git": {"repo": "https://h/r.git"},
        "extraArgs": ["--max-failures=5"],
        "extraEnv": [
            {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "px", "key": "url"}}}
        ],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}],
        "keepRevisions": 5,
        "period": "30s",
        "syncTimeout": "2m",
    }
    docs = objects(render(chart, values))
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    c = container(docs)
    assert c["args"] == ["run", "--max-failures=5"]
    env = env_of(c)
    assert env["HTTPS_PROXY"]["valueFrom"]["secretKeyRef"]["name"] == "px"
    assert env["DAGSYNC_KEEP_REVISIONS"]["value"] == "5"
    assert env["DAGSYNC_PERIOD"]["value"] == "30s"
    assert env["DAGSYNC_SYNC_TIMEOUT"]["value"] == "2m"
    assert "/etc/ssl/corp" in {m["mountPath"] for m in c["volumeMounts"]}


def test_service_monitor_and_prometheus_rule(renders: dict[str, dict[str, str]]) -> None:
    kinds = by_kind(objects(renders["monitoring"]))
    monitor = kinds["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        kinds["Service"]["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"

    rule = kinds["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {"DagsyncStale", "DagsyncRevisionRejected"}
    selector = f'job="{FULLNAME}",namespace="{NAMESPACE}"'
    # 3 periods of 2 minutes.
    assert alerts["DagsyncStale"]["expr"] == (
        f"time() - dagsync_last_success_timestamp_seconds{{{selector}}} > 360"
    )
    assert alerts["DagsyncRevisionRejected"]["expr"] == (
        f'increase(dagsync_sync_total{{{selector},result="rejected"}}[15m]) > 0'
    )
    for alert in alerts.values():
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["summary"]
        assert "{{ $labels.pod }}" in alert["annotations"]["description"]

    account = kinds["ServiceAccount"]
    assert account["metadata"]["name"] == FULLNAME
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME


@pytest.mark.parametrize(("period", "seconds"), [("90", "450"), ("500ms", "2.5"), ("1h", "18000")])
def test_stale_threshold_follows_period(chart: Any, period: str, seconds: str) -> None:
    values = {"period": period, "prometheusRule": {"enabled": True}}
    rule = by_kind(objects(render(chart, values)))["PrometheusRule"]
    stale = rule["spec"]["groups"][0]["rules"][0]
    assert stale["expr"].endswith(f"> {seconds}")


def test_notes_explain_dags_folder_and_status(renders: dict[str, dict[str, str]]) -> None:
    notes = renders["git-ssh"]["dagsync/templates/NOTES.txt"]
    assert "dags_folder: /opt/airflow/dags/current" in notes
    assert f"existingClaim: {FULLNAME}" in notes
    assert "/status" in notes
    assert "dagsync status --root /git" in notes
    assert "git.repo is empty" in renders["default"]["dagsync/templates/NOTES.txt"]
    assert "git.repo is empty" not in notes


def test_serve_revisions_token_is_a_mounted_secret(renders: dict[str, dict[str, str]]) -> None:
    docs = objects(renders["relay"])
    env = env_values(container(docs))
    assert env["DAGSYNC_SERVE_REVISIONS"] == "true"
    assert env["DAGSYNC_SERVE_TOKEN_FILE"] == "/etc/dagsync/serve/token"
    assert env["DAGSYNC_KEEP_REVISIONS"] == "10"
    assert secret_files(docs) == {"serve/token": (RELAY, "token")}
    notes = renders["relay"]["dagsync/templates/NOTES.txt"]
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:9797" in notes
    assert "--source relay" in notes and "dagsync.airflow.DagsyncDagBundle" in notes
    assert "WARNING" not in notes


def test_serve_revisions_off_by_default_and_token_key_configurable(
    chart: Any, renders: dict[str, dict[str, str]]
) -> None:
    env = env_values(container(objects(renders["default"])))
    assert not {"DAGSYNC_SERVE_REVISIONS", "DAGSYNC_SERVE_TOKEN_FILE"} & set(env)
    assert "relay" not in renders["default"]["dagsync/templates/NOTES.txt"]
    values = {
        "git": {"repo": "https://h/r.git"},
        "serveRevisions": {"enabled": True, "existingSecret": RELAY, "secretKey": "relay"},
    }
    assert secret_files(objects(render(chart, values))) == {"serve/token": (RELAY, "relay")}
    # A token secret left over while serving is off mounts nothing.
    values["serveRevisions"]["enabled"] = False
    docs = objects(render(chart, values))
    assert "/etc/dagsync" not in {m["mountPath"] for m in container(docs)["volumeMounts"]}
    # Serving without a token or a policy: the notes say anyone in the cluster can read.
    rendered = render(
        chart, {"git": {"repo": "https://h/r.git"}, "serveRevisions": {"enabled": True}}
    )
    env = env_values(container(objects(rendered)))
    assert env["DAGSYNC_SERVE_REVISIONS"] == "true"
    assert "DAGSYNC_SERVE_TOKEN_FILE" not in env
    assert "no token" in rendered["dagsync/templates/NOTES.txt"]


def test_network_policy_admits_airflow_pods_to_the_http_port(
    renders: dict[str, dict[str, str]],
) -> None:
    kinds = by_kind(objects(renders["relay"]))
    policy = kinds["NetworkPolicy"]
    pod = kinds["Deployment"]["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    # The port is the container's named HTTP port: /v1/ and /metrics alike (no path filter).
    (port,) = rule["ports"]
    (http,) = pod["spec"]["containers"][0]["ports"]
    assert port == {"port": http["name"], "protocol": "TCP"}
    airflow, scraper = rule["from"]
    assert airflow == {"podSelector": {"matchLabels": {"tier": "airflow", "release": "airflow"}}}
    assert scraper["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


def test_network_policy_default_selector_and_namespaces(chart: Any) -> None:
    assert "NetworkPolicy" not in {d["kind"] for d in objects(render(chart, {}))}
    values = {
        "networkPolicy": {
            "enabled": True,
            "airflowNamespaceSelector": {"matchLabels": {"team": "data"}},
        }
    }
    policy = by_kind(objects(render(chart, values)))["NetworkPolicy"]
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    (rule,) = policy["spec"]["ingress"]
    # One peer with both selectors: Airflow-labelled pods in those namespaces (AND, not OR).
    assert rule["from"] == [
        {
            "podSelector": {"matchLabels": {"tier": "airflow"}},
            "namespaceSelector": {"matchLabels": {"team": "data"}},
        }
    ]


# --- examples ---------------------------------------------------------------------------------


def load_examples(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("source", ["git", "oss", "azure", "s3", "gcs", "azureblob"])
def test_airflow_chart_values(source: str) -> None:
    (values,) = load_examples(EXAMPLES / "airflow-chart" / f"values-{source}.yaml")
    assert values["images"]["gitSync"]["repository"].endswith("/dagsync")
    assert isinstance(values["images"]["gitSync"]["tag"], str)
    git_sync = values["dags"]["gitSync"]
    assert git_sync["enabled"] is True
    assert git_sync["repo"], "the Airflow chart requires a repo value"
    env = {e["name"]: e for e in git_sync.get("env", [])}
    for name, entry in env.items():
        assert set(entry) <= {"name", "value", "valueFrom"}, name
        if name.startswith(("OSS_", "AZURE_", "AWS_", "GOOGLE_")):
            assert "value" not in entry, f"{name} must come from a Secret"
            assert entry["valueFrom"]["secretKeyRef"]["name"]
    if source == "git":
        assert "DAGSYNC_SOURCE" not in env
        assert git_sync["sshKeySecret"]
    else:
        assert env["DAGSYNC_SOURCE"]["value"] == source
        assert git_sync["subPath"] == ""
        required = {
            "oss": {"DAGSYNC_OSS_ENDPOINT", "DAGSYNC_OSS_BUCKET", "OSS_ACCESS_KEY_ID"},
            "azure": {"DAGSYNC_AZURE_SHARE", "AZURE_STORAGE_CONNECTION_STRING"},
            "s3": {"DAGSYNC_S3_BUCKET", "DAGSYNC_S3_PREFIX"},
            "gcs": {"DAGSYNC_GCS_BUCKET", "DAGSYNC_GCS_PREFIX"},
            "azureblob": {"DAGSYNC_AZUREBLOB_CONTAINER", "DAGSYNC_AZUREBLOB_ACCOUNT_URL"},
        }[source]
        assert required <= set(env)
    identity = {
        "s3": "eks.amazonaws.com/role-arn",
        "gcs": "iam.gke.io/gcp-service-account",
        "azureblob": "azure.workload.identity/client-id",
    }.get(source)
    if identity:  # every component running the sidecar gets the cloud's identity wiring
        for component in ("scheduler", "dagProcessor", "workers"):
            assert values[component]["serviceAccount"]["annotations"][identity]
            if source == "azureblob":
                assert values[component]["labels"]["azure.workload.identity/use"] == "true"


def pod_specs(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    "name", ["pod_template.yaml", "scheduler-sidecar.yaml", "pod_template_relay.yaml"]
)
def test_kubernetes_examples_validate(name: str) -> None:
    docs = load_examples(EXAMPLES / "kubernetes" / name)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        pod = pod_specs(doc)
        (dagsync,) = [c for c in pod["initContainers"] if c["name"] == "dagsync"]
        assert "command" not in dagsync
        env = {e["name"]: e for e in dagsync["env"]}
        root, link = env["DAGSYNC_ROOT"]["value"], env["DAGSYNC_LINK"]["value"]
        (root_mount,) = [m for m in dagsync["volumeMounts"] if m["mountPath"] == root]
        assert "/tmp" in {m["mountPath"] for m in dagsync["volumeMounts"]}
        assert dagsync["securityContext"]["readOnlyRootFilesystem"] is True
        assert dagsync["securityContext"]["runAsUser"] == 65533
        for entry in env.values():
            if entry["name"].startswith(("OSS_", "AZURE_")) or "PASSWORD" in entry["name"]:
                assert "valueFrom" in entry
        # The Airflow container reads the same volume through the link.
        (airflow,) = pod["containers"]
        airflow_env = {e["name"]: e.get("value") for e in airflow["env"]}
        (dags_mount,) = [m for m in airflow["volumeMounts"] if m["name"] == root_mount["name"]]
        assert airflow_env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{dags_mount['mountPath']}/{link}"
        assert dags_mount.get("readOnly") is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[root_mount["name"]] == {"name": root_mount["name"], "emptyDir": {}}


def test_pod_template_runs_once_and_sidecar_runs() -> None:
    (pod,) = load_examples(EXAMPLES / "kubernetes" / "pod_template.yaml")
    assert pod["spec"]["containers"][0]["name"] == "base", "KubernetesExecutor needs `base` first"
    (init,) = pod["spec"]["initContainers"]
    assert init["args"] == ["once"]
    (deployment,) = load_examples(EXAMPLES / "kubernetes" / "scheduler-sidecar.yaml")
    (sidecar,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert sidecar["args"] == ["run"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"


# --- fleet examples: the relay and the Airflow 3 bundle ---------------------------------------

RELAY_RELEASE = "dagsync"  # the release name the fleet examples assume, in NAMESPACE


def relay_url(chart: Any) -> str:
    """The URL the dagsync chart serves revisions at, for the release the examples assume."""
    values = {"git": {"repo": "https://h/r.git"}, "serveRevisions": {"enabled": True}}
    rendered = chart.render(values=values, name=RELAY_RELEASE, namespace=NAMESPACE)
    service = by_kind(objects(rendered))["Service"]
    (port,) = service["spec"]["ports"]
    return f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port['port']}"


def accepted_by_dagsync(args: list[str], env: dict[str, str], files: dict[str, Path]) -> Any:
    """The Config dagsync builds from a container's args and env (``files`` swaps in-cluster
    paths of mounted secrets for real files): the example is one dagsync starts with."""
    from dagsync.cli import build_parser
    from dagsync.config import load

    args = [str(files.get(a, a)) for a in args]
    env = {k: str(files.get(v, v)) for k, v in env.items()}
    ns = build_parser().parse_args(args)
    return load(ns.command, {k: v for k, v in vars(ns).items() if k != "command"}, env)


def mounted_secret(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The secret volume ``container`` sees ``path`` through (read-only)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount.get("readOnly") is True, mount
    secret = volumes[mount["name"]]["secret"]
    relative = path.removeprefix(mount["mountPath"] + "/")
    assert relative in {item["path"] for item in secret.get("items", [])} or not secret.get("items")
    return secret


def test_pod_template_relay_asks_the_relay(chart: Any, tmp_path: Path) -> None:
    (pod,) = load_examples(EXAMPLES / "kubernetes" / "pod_template_relay.yaml")
    assert pod["spec"]["containers"][0]["name"] == "base"
    assert pod["metadata"]["labels"]["tier"] == "airflow"  # what networkPolicy admits
    (init,) = pod["spec"]["initContainers"]
    args = init["args"]
    assert args[:3] == ["once", "--source", "relay"]
    url = args[args.index("--relay-url") + 1]
    assert url == relay_url(chart)
    token = args[args.index("--relay-token-file") + 1]
    assert mounted_secret(pod["spec"], init, token)["secretName"] == "dagsync-relay"
    token_file = tmp_path / "token"
    token_file.write_text("t0ken\n")
    env = {e["name"]: e["value"] for e in init["env"]}
    assert "DAGSYNC_REPO" not in env and "DAGSYNC_SOURCE" not in env
    config = accepted_by_dagsync(args, env, {token: token_file})
    assert config.source == "relay"
    assert str(config.root) == "/git"


def bundle_init_kwargs() -> set[str]:
    """The keyword arguments DagsyncDagBundle.__init__ takes, read from its source (importing
    it needs Airflow)."""
    import ast

    tree = ast.parse((REPO / "dagsync" / "airflow_bundle.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DagsyncDagBundle"]
    (init,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    return {a.arg for a in init.args.kwonlyargs}


def test_airflow_chart_values_bundle(chart: Any, tmp_path: Path) -> None:
    path = EXAMPLES / "airflow-chart" / "values-bundle.yaml"
    (values,) = load_examples(path)
    assert values["dags"]["gitSync"]["enabled"] is False
    assert values["dags"]["persistence"]["enabled"] is False
    processor = values["dagProcessor"]
    (bundle,) = processor["dagBundleConfigList"]
    assert bundle["classpath"] == "dagsync.airflow.DagsyncDagBundle"
    module, _, attr = bundle["classpath"].rpartition(".")
    import importlib

    assert attr in importlib.import_module(module).__all__
    kwargs = bundle["kwargs"]
    assert set(kwargs) <= bundle_init_kwargs() | {"refresh_interval"}
    assert kwargs["relay_url"] == relay_url(chart)

    # The commented JSON form for older charts says the same.
    (line,) = [ln for ln in path.read_text().splitlines() if "dag_bundle_config_list:" in ln]
    assert json.loads(line.split(":", 1)[1].strip().strip("'")) == [bundle]

    # The sidecar is a container Kubernetes accepts, and a dagsync run that starts.
    (sidecar,) = processor["extraInitContainers"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dag-processor"},
        "spec": {
            "initContainers": [sidecar],
            "containers": [
                {
                    "name": "dag-processor",
                    "image": "apache/airflow:3.1.8",
                    "volumeMounts": processor["extraVolumeMounts"] + values["volumeMounts"],
                }
            ],
            "volumes": processor["extraVolumes"] + values["volumes"],
        },
    }
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    token_file = tmp_path / "token"
    token_file.write_text("t0ken\n")
    config = accepted_by_dagsync(
        sidecar["args"], env, {env["DAGSYNC_RELAY_TOKEN_FILE"]: token_file}
    )
    assert config.source == "relay"
    assert env["DAGSYNC_RELAY_URL"] == kwargs["relay_url"]
    mounted_secret(pod["spec"], sidecar, env["DAGSYNC_RELAY_TOKEN_FILE"])

    # The processor reads the sidecar's link: the bundle's root is the sidecar's volume.
    (root_mount,) = [m for m in processor["extraVolumeMounts"] if m["mountPath"] == kwargs["root"]]
    (sidecar_root,) = [m for m in sidecar["volumeMounts"] if m["mountPath"] == env["DAGSYNC_ROOT"]]
    assert root_mount["name"] == sidecar_root["name"]
    assert env["DAGSYNC_LINK"] == kwargs["link"]
    # Every Airflow container (workers too) reads the token where the bundle looks for it.
    airflow = pod["spec"]["containers"][0]
    secret = mounted_secret(pod["spec"], airflow, kwargs["relay_token_file"])
    assert secret["secretName"] == "dagsync-relay"


def test_fleet_doc_lists_every_bundle_kwarg_and_its_picture_exists() -> None:
    doc = (REPO / "docs" / "fleet.md").read_text()
    rows = {line.split("|")[1].strip(" `") for line in doc.splitlines() if line.startswith("| `")}
    assert bundle_init_kwargs() <= rows
    assert "](fleet.png)" in doc
    assert (REPO / "docs" / "fleet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "digraph" in (REPO / "docs" / "fleet.dot").read_text()
