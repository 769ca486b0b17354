"""Airflow 3 DAG bundle over a dagsync root: ``dagsync.airflow.DagsyncDagBundle``.

Importing this module (or ``dagsync``) never imports Airflow: the class is built from
``dagsync.airflow_bundle`` on first use, which is when Airflow's ``DagBundlesManager`` resolves
the ``classpath`` of ``[dag_processor] dag_bundle_config_list``::

    [{"name": "dags", "classpath": "dagsync.airflow.DagsyncDagBundle",
      "kwargs": {"root": "/opt/airflow/dags", "link": "repo",
                 "relay_url": "http://dagsync.airflow.svc:9797"}}]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagsync.airflow_bundle import DagsyncDagBundle as DagsyncDagBundle

__all__ = ["DagsyncDagBundle"]


def __getattr__(name: str) -> Any:
    if name == "DagsyncDagBundle":
        try:
            from dagsync.airflow_bundle import DagsyncDagBundle
        except ImportError as exc:
            if exc.name is not None and exc.name.split(".")[0] == "airflow":
                raise ImportError(
                    "dagsync.airflow.DagsyncDagBundle needs Apache Airflow 3 "
                    "(pip install 'dagsync[airflow]')",
                    name=exc.name,
                ) from exc
            raise
        return DagsyncDagBundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
