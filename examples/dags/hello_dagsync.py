"""An example DAG published by dagsync: `dagsync once --repo file://$PWD --subpath examples/dags`."""

from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

with DAG(dag_id="hello_dagsync", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    BashOperator(task_id="say_hello", bash_command="echo hello from dagsync")
