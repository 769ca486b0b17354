"""Runs inside the Airflow virtualenv: drives DAG bundles the way Airflow's own code does.

One JSON request per stdin line, one JSON answer per stdout line. Bundles come only from
``DagBundlesManager().get_bundle(name, version)`` (configured by
``AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST``); DAGs are loaded as the task runner loads
them (``BundleDagBag`` with the bundle's path on ``sys.path``). Requests:

    {"op": "get", "key": K, "name": N, "version": V}   -> class, path, refresh_interval, ...
    {"op": "current" | "refresh" | "initialize" | "dagbag", "key": K}
    {"op": "lock" | "unlock", "key": K}                  Airflow's BundleVersionLock
    {"op": "cleanup", "min_versions": N, "age_seconds": S}  Airflow's stale-version clean-up

Not a test module: tests/test_airflow_bundle.py starts it with the Airflow interpreter.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

# Airflow reads its configuration at import, before the first request.
from airflow.dag_processing.bundles import base as bundles_base
from airflow.dag_processing.bundles.base import BundleVersionLock
from airflow.dag_processing.bundles.manager import DagBundlesManager

bundles: dict[str, Any] = {}
locks: dict[str, BundleVersionLock] = {}


def describe_version(value: Any) -> dict[str, Any]:
    if value is None or isinstance(value, str):
        return {"version": value, "version_type": type(value).__name__}
    return {"version": value.version, "version_type": type(value).__name__}


def load_dags(bundle: Any) -> dict[str, Any]:
    """As the task runner of this Airflow version does: ``BundleDagBag`` (its module moved in
    3.2 and took ``bundle_name``), or on 3.0 a DagBag with the bundle path on sys.path."""
    try:
        from airflow.dag_processing.dagbag import BundleDagBag  # 3.2+

        extra: dict[str, Any] = {"bundle_name": bundle.name}
    except ImportError:
        try:
            from airflow.models.dagbag import BundleDagBag  # 3.1
        except ImportError:  # 3.0
            from airflow.models.dagbag import DagBag as BundleDagBag

            sys.path.append(str(bundle.path))
        extra = {}
    bag = BundleDagBag(
        dag_folder=bundle.path,
        safe_mode=False,
        load_op_links=False,
        bundle_path=bundle.path,
        **extra,
    )
    return {
        "dag_ids": sorted(bag.dags),
        "filelocs": sorted(str(d.fileloc) for d in bag.dags.values()),
        "owners": {dag_id: d.owner for dag_id, d in bag.dags.items()},
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    }


def handle(req: dict[str, Any]) -> dict[str, Any]:
    op, key = req["op"], req.get("key", "")
    if op == "get":
        bundle = DagBundlesManager().get_bundle(req["name"], req.get("version"))
        bundles[key] = bundle
        return {
            "class": f"{type(bundle).__module__}.{type(bundle).__qualname__}",
            "supports_versioning": bundle.supports_versioning,
            "refresh_interval": bundle.refresh_interval,
            "path": str(bundle.path),
            "airflow_has_bundle_version": hasattr(bundles_base, "BundleVersion"),
        }
    if op == "cleanup":
        from airflow.configuration import conf
        from airflow.dag_processing.bundles.base import BundleUsageTrackingManager

        conf.set("dag_processor", "stale_bundle_cleanup_min_versions", str(req["min_versions"]))
        conf.set("dag_processor", "stale_bundle_cleanup_age_threshold", str(req["age_seconds"]))
        BundleUsageTrackingManager().remove_stale_bundle_versions()
        return {}
    bundle = bundles[key]
    if op == "current":
        return describe_version(bundle.get_current_version())
    if op == "refresh":
        bundle.refresh()
        return describe_version(bundle.get_current_version())
    if op == "initialize":
        bundle.initialize()
        return {"path": str(bundle.path), "is_initialized": bundle.is_initialized}
    if op == "dagbag":
        return load_dags(bundle)
    if op == "lock":
        locks[key] = BundleVersionLock(bundle_name=bundle.name, bundle_version=bundle.version)
        locks[key].acquire()
        return {}
    if op == "unlock":
        locks.pop(key).release()
        return {}
    raise ValueError(f"unknown op {op!r}")


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything Airflow prints stays off the answer channel
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"ok": True, **handle(json.loads(line))}
        except Exception as exc:
            answer = {
                "ok": False,
                "error": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "message": str(exc),
                "traceback": traceback.format_exc()[-3000:],
            }
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
