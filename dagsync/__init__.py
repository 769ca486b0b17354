"""dagsync: keep Airflow DAG folders in sync, published atomically."""

__version__ = "0.1.0"
