"""The DAG file parses cleanly, wires the stages in order and imports nothing heavy."""

import json
import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parent.parent / "dags"
ORDER = ["wait_for_events", "validate_inputs", "build_interactions", "embed_items", "train_cf", "score_users",
         "build_recs", "evaluate", "validate_outputs", "publish", "report"]


def test_dagbag_imports_without_errors_and_wires_stages_in_order():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags.get("vrec_nightly")
    assert dag is not None and dag.catchup is False and dag.max_active_runs == 1
    for up, down in zip(ORDER, ORDER[1:]):
        assert down in dag.get_task(up).downstream_task_ids, (up, down)
    spark_tasks = {t.task_id for t in dag.tasks if type(t).__name__ == "SparkSubmitOperator"}
    assert spark_tasks == set(ORDER[1:9])
    assert dag.get_task("wait_for_events").task_type == "LandingSensor"
    assert type(dag.timetable).__name__ == "NightlyTimetable"
    bi = dag.get_task("build_interactions")
    assert bi.application.endswith("jobs/build_interactions.py")
    # every task gets its day from the one mapping (tests/test_schedule.py renders it)
    ds = dag.get_task("wait_for_events").ds
    assert "vrec_ds(" in ds and dag.user_defined_macros["vrec_ds"].__module__ == "vrec.airflow.schedule"
    assert all(dag.get_task(t).application_args[:2] == ["--ds", ds] for t in ORDER[1:9])
    assert dag.get_task("publish").op_kwargs == {"day": ds} == dag.get_task("report").op_kwargs
    # the operator's override of the quality gate is a DAG param, off by default
    assert dag.params["override_quality_gate"] is False
    assert dag.params["override_reason"] == ""


def test_dag_file_imports_no_heavy_modules():
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(DAGS / 'vrec_nightly.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "heavy = ['torch', 'pyspark', 'great_expectations', 'implicit', 'duckdb', 'vrec.pipeline']\n"
        "print(json.dumps([h for h in heavy if h in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_jobs_reject_bad_arguments():
    job = DAGS.parent / "jobs" / "train_cf.py"
    out = subprocess.run([sys.executable, str(job), "--ds", "20261120"], capture_output=True, text=True)
    assert out.returncode == 2 and "YYYY-MM-DD" in out.stderr
