"""The embedded Airflow: environment for an Airflow home inside the repo (SQLite), used
by ``make demo``, ``make airflow`` and the end-to-end test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_HOME = REPO / ".airflow"
API_PORT = 8089  # off 8080 (common) and 8793 (the scheduler's log server)


def airflow_env(home: str | Path = DEFAULT_HOME, *, config: str | Path | None = None,
                spark_master: str = "local[*]", port: int = API_PORT,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for running Airflow on vrec's DAGs with a local home."""
    home = Path(home).resolve()
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__API__PORT": str(port),
        # without this, tasks under `airflow standalone` on a non-default port die queued
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({
            "conn_type": "spark", "host": spark_master,
            "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}),
        "PYSPARK_PYTHON": sys.executable,
        "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
        "GX_ANALYTICS_ENABLED": "false",
        "OPENBLAS_NUM_THREADS": env.get("OPENBLAS_NUM_THREADS", ""),
    })
    if not env["OPENBLAS_NUM_THREADS"]:
        del env["OPENBLAS_NUM_THREADS"]
    if config is not None:
        env["VREC_CONFIG"] = str(Path(config).resolve())
    return env


def airflow_bin() -> str:
    """The venv's ``airflow`` executable."""
    return str(Path(sys.executable).parent / "airflow")


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the SQLite metadata database (idempotent)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def dags_test(ds: str, env: dict[str, str], *, log_path: Path,
              on_line: Callable[[str], None] | None = None, conf: dict | None = None) -> int:
    """Run ``airflow dags test vrec_nightly <ds>``; stream lines to ``on_line`` and a log.
    ``conf`` (e.g. ``{"override_quality_gate": true}``) overrides the DAG's params.

    Returns the exit code; a run whose tasks failed exits non-zero.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [airflow_bin(), "dags", "test", "vrec_nightly", ds]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    failed = False
    with open(log_path, "w") as log, subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if "state=failed" in line or "Marking task as FAILED" in line:
                failed = True
            if on_line:
                on_line(line.rstrip("\n"))
        rc = proc.wait()
    return rc if rc else (1 if failed else 0)


def main(argv: list[str] | None = None) -> int:
    """``python -m vrec.airflow.env standalone|env``: start ``airflow standalone`` on the
    embedded home (what ``make airflow`` runs), or print the environment to export."""
    args = sys.argv[1:] if argv is None else argv
    env = airflow_env(DEFAULT_HOME, config=REPO / "vrec.yaml")
    if args[:1] == ["env"]:
        keys = [k for k in env if k.startswith(("AIRFLOW", "VREC", "PYSPARK"))] + ["PATH"]
        for k in sorted(keys):
            print(f"export {k}='{env[k]}'")
        return 0
    migrate(env)
    print(f"[airflow] home {env['AIRFLOW_HOME']}; UI http://localhost:{API_PORT}; user admin, "
          f"password in {env['AIRFLOW_HOME']}/simple_auth_manager_passwords.json.generated",
          flush=True)
    print(f"[airflow] once unpaused, vrec_nightly runs daily at {env.get('VREC_RUN_AT', '02:00')} "
          "UTC for the previous UTC day (VREC_RUN_AT); backfills run exactly the days picked",
          flush=True)
    return subprocess.call([airflow_bin(), "standalone"], env=env)


if __name__ == "__main__":
    sys.exit(main())
