"""The DAG file parses cleanly, wires the registered stages in order and imports nothing
heavy."""

import json
import subprocess
import sys
from pathlib import Path

from vrec.stages import NAMES, STAGES

DAGS = Path(__file__).resolve().parent.parent / "dags"
ORDER = ["wait_for_events", *NAMES]


def test_dagbag_imports_without_errors_and_wires_stages_in_order():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags.get("vrec_nightly")
    assert dag is not None and dag.catchup is False and dag.max_active_runs == 1
    for up, down in zip(ORDER, ORDER[1:]):
        assert down in dag.get_task(up).downstream_task_ids, (up, down)
    assert set(dag.task_ids) == set(ORDER)  # the registry's stages and the sensor, nothing else
    spark_tasks = {t.task_id for t in dag.tasks if type(t).__name__ == "SparkSubmitOperator"}
    assert spark_tasks == {s.name for s in STAGES if s.engine == "spark"}
    assert dag.get_task("wait_for_events").task_type == "LandingSensor"
    assert type(dag.timetable).__name__ == "NightlyTimetable"
    # every task gets its day from the one mapping (tests/test_schedule.py renders it)
    ds = dag.get_task("wait_for_events").ds
    assert "vrec_ds(" in ds and dag.user_defined_macros["vrec_ds"].__module__ == "vrec.airflow.schedule"
    from vrec.config import load_settings

    spark = load_settings(str(DAGS.parent / "vrec.yaml")).spark
    for name in spark_tasks:  # one generic job: jobs/stage.py <stage> --ds <ds>
        task = dag.get_task(name)
        assert task.application.endswith("jobs/stage.py")
        # the config's Spark settings reach spark-submit (driver memory is fixed at JVM
        # start), each stage's own over the common ones
        spark_conf = {**spark.conf, **spark.stage_conf.get(name, {})}
        assert {k: task.conf[k] for k in spark_conf} == spark_conf
        assert spark_conf["spark.driver.memory"]
        assert task.application_args[:3] == [name, "--ds", ds]
    assert dag.get_task("candidates").conf["spark.driver.memory"] == "3g"
    assert dag.get_task("build_recs").conf["spark.driver.memory"] == spark.conf[
        "spark.driver.memory"] == "4g"
    for s in STAGES:
        if s.engine == "local":
            assert list(dag.get_task(s.name).op_args) == [s.name, ds, "{{ run_id }}"]
        else:  # the run id and the retune param travel with every stage
            assert dag.get_task(s.name).application_args[-4:] == [
                "--run-id", "{{ run_id }}", "--retune", "{{ params.retune | lower }}"]
    # failures: retries with back-off, a time limit per stage, the failure hook
    from vrec.airflow.callbacks import on_failure
    from vrec.config import OrchestrationSettings

    orch = OrchestrationSettings()
    for s in STAGES:
        t = dag.get_task(s.name)
        assert t.retries == orch.retries > 0 and t.retry_exponential_backoff
        assert t.execution_timeout.total_seconds() == orch.timeout_minutes(s.name) * 60
        assert on_failure in (t.on_failure_callback if isinstance(t.on_failure_callback, list)
                              else [t.on_failure_callback])
    assert dag.get_task("wait_for_events").retries == 0  # its timeout is its verdict
    # the operator's override of the quality gate is a DAG param, off by default
    assert dag.params["override_quality_gate"] is False
    assert dag.params["override_reason"] == ""
    assert dag.params["retune"] is False  # a rerun takes the tunings its day used


def test_dag_file_imports_no_heavy_modules():
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(DAGS / 'vrec_nightly.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "heavy = ['torch', 'pyspark', 'great_expectations', 'implicit', 'duckdb', 'pandas', 'vrec.core', 'vrec.executor', 'vrec.io.warehouse']\n"
        "print(json.dumps([h for h in heavy if h in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_jobs_reject_bad_arguments():
    job = DAGS.parent / "jobs" / "stage.py"
    out = subprocess.run([sys.executable, str(job), "train_cf", "--ds", "20261120"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "YYYY-MM-DD" in out.stderr
    out = subprocess.run([sys.executable, str(job), "score_users", "--ds", "2026-11-20"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown stage 'score_users'" in out.stderr
    out = subprocess.run([sys.executable, str(job), "train_cf", "--ds", "2026-11-20",
                          "--retune", "maybe"], capture_output=True, text=True)
    assert out.returncode == 2 and "--retune takes true or false" in out.stderr


def test_the_dag_asks_the_registry_what_is_special_about_a_stage(monkeypatch):
    """The salt goes to the stages the registry says need it, the Assets to the one that
    publishes: no stage name is spelled in the DAG file."""
    import importlib.util

    from vrec.stages import STAGES

    text = (DAGS / "vrec_nightly.py").read_text()
    assert not [s.name for s in STAGES if f'"{s.name}"' in text]
    monkeypatch.setenv("VREC_SALT_CONN_ID", "vrec_salt")
    spec = importlib.util.spec_from_file_location("dag_with_salt", DAGS / "vrec_nightly.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dag = mod.vrec_nightly() if callable(getattr(mod, "vrec_nightly", None)) else mod.dag
    for s in STAGES:
        t = dag.get_task(s.name)
        salted = ("VREC_USER_SALT" in (t.env_vars or {})) if s.engine == "spark" \
            else bool((t.op_kwargs.get("env") or {}).get("VREC_USER_SALT"))
        assert salted == s.needs_salt, s.name
        assert bool(t.outlets) == s.publishes, s.name


def test_a_stage_run_out_of_order_says_what_to_run_first(tmp_path):
    """The runner checks the stage contract before starting Spark: one line, exit 1."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{raw_root: {tmp_path / 'raw'}, warehouse_root: {tmp_path / 'wh'}}}\n")
    out = subprocess.run([sys.executable, str(DAGS.parent / "jobs" / "stage.py"), "build_recs",
                          "--ds", "2026-11-20", "--config", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "needs build_interactions to have succeeded for that ds first" in out.stderr
    assert "Traceback" not in out.stderr and "SparkContext" not in out.stderr
