"""Airflow and Spark as separate services on one machine, without Docker: what
``make test-cluster`` starts, with the settings ``docker-compose.yml`` gives its containers.

* PostgreSQL (Debian's ``postgresql`` package) as Airflow's metadata database, on
  127.0.0.1 only, with a generated password;
* Airflow's API server, scheduler (LocalExecutor), DAG processor and triggerer as four
  processes sharing one JWT secret, API secret key and Fernet key (without the shared JWT
  secret, tasks fail with "Invalid auth token: Signature verification failed");
* a Spark standalone master and one worker from the pinned pyspark wheel (``spark-class``;
  the wheel has no ``sbin/start-master.sh``), bound to 127.0.0.1.

:func:`generate_secrets` makes the secrets; ``python -m vrec.airflow.cluster secrets >
.env`` writes them for docker compose, and :func:`service_env` is the one place that maps
them to Airflow settings (the compose file sets the same keys; a test checks that).
``python -m vrec.airflow.cluster up`` starts everything here until Ctrl-C.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from vrec.airflow.env import REPO, airflow_bin, airflow_env

SECRET_NAMES = ("VREC_JWT_SECRET", "VREC_API_SECRET_KEY", "VREC_FERNET_KEY",
                "POSTGRES_PASSWORD", "VREC_ADMIN_PASSWORD")
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


def generate_secrets() -> dict[str, str]:
    """Fresh random secrets: JWT secret, API secret key, Fernet key, the Postgres and the
    Airflow admin passwords."""
    return {
        "VREC_JWT_SECRET": secrets.token_urlsafe(48),
        "VREC_API_SECRET_KEY": secrets.token_urlsafe(32),
        "VREC_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "VREC_ADMIN_PASSWORD": secrets.token_urlsafe(18),
    }


def service_env(secret: dict[str, str], *, db_url: str, api_url: str, spark_master: str,
                passwords_file: str | Path) -> dict[str, str]:
    """The Airflow settings every service of a deployment shares (docker-compose.yml sets
    the same keys): the metadata database, the LocalExecutor, where tasks reach the
    execution API, the shared secrets, the admin user and the Spark master."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret["VREC_JWT_SECRET"],
        "AIRFLOW__API__SECRET_KEY": secret["VREC_API_SECRET_KEY"],
        "AIRFLOW__CORE__FERNET_KEY": secret["VREC_FERNET_KEY"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({
            "conn_type": "spark", "host": spark_master,
            "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}),
    }


def write_passwords_file(path: str | Path, admin_password: str) -> Path:
    """The simple auth manager's password file with the admin's password (what
    ``airflow-init`` writes in docker compose), readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"admin": admin_password}))
    path.chmod(0o600)
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, log: Path | None = None, every: float = 1.0):
    """Poll ``check()`` until it returns something truthy; fail with the log's tail."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            out = check()
        except (OSError, httpx.HTTPError, ValueError):
            out = None
        if out:
            return out
        time.sleep(every)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Service:
    """A started process group with its log."""

    name: str
    proc: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the process group, then SIGKILL what is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue


def start(name: str, cmd: list[str], env: dict[str, str], log: Path) -> Service:
    """Start ``cmd`` in its own process group, output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(REPO))
    return Service(name, proc, log)


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program (Debian keeps them in /usr/lib/postgresql/<v>/bin)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    if shutil.which(name):
        return shutil.which(name)
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed: `make postgres` installs "
                            "Debian's postgresql package")


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:``port`` with database and owner
    ``airflow``. Run as the ``postgres`` user when started by root (the server refuses
    root)."""

    password: str
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vrec-pg-")))

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the airflow database."""
        return f"postgresql+psycopg2://airflow:{self.password}@127.0.0.1:{self.port}/airflow"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd

    def start(self) -> None:
        """initdb, start the server, create the airflow database."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        pw = self.root / "pw"
        pw.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(pw, "postgres", "postgres")
        pw.chmod(0o600)
        data = self.root / "data"
        subprocess.run(self._as_owner([postgres_bin("initdb"), "-D", str(data), "-U", "airflow",
                                       "--auth=scram-sha-256", f"--pwfile={pw}", "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        pw.unlink()
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        subprocess.run(self._as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-o", opts,
                                       "-l", str(self.root / "server.log"), "-w", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="airflow",
                               password=self.password, dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE airflow")
        con.close()

    def stop(self) -> None:
        """Stop the server and remove its files."""
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(self._as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast",
                                           "-w", "stop"]), stdout=subprocess.DEVNULL)
        shutil.rmtree(self.root, ignore_errors=True)


def spark_class() -> str:
    """The pinned pyspark's ``spark-class`` launcher."""
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


@dataclass
class SparkStandalone:
    """A Spark standalone master and one worker bound to 127.0.0.1."""

    work: Path
    cores: int = 2
    memory: str = "4g"
    port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    services: list[Service] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        """Start the master, then the worker; wait until the master lists it alive."""
        env = {**env, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(self.work / "worker")}
        self.services.append(start("spark-master", [
            spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
            "--port", str(self.port), "--webui-port", str(self.ui_port)], env,
            self.work / "spark-master.log"))
        wait_for("the Spark master", lambda: _port_open(self.port), 120, self.services[0].log)
        self.services.append(start("spark-worker", [
            spark_class(), "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
            "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()),
            "--work-dir", str(self.work / "worker")], env, self.work / "spark-worker.log"))
        wait_for("a live Spark worker", lambda: self.workers() >= 1, 120, self.services[1].log)

    def workers(self) -> int:
        """Alive workers, from the master's JSON status page."""
        r = httpx.get(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5)
        return sum(w.get("state") == "ALIVE" for w in r.json().get("workers", []))

    def applications(self) -> list[dict]:
        """Finished and running applications the master has seen."""
        j = httpx.get(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5).json()
        return j.get("activeapps", []) + j.get("completedapps", [])

    def stop(self) -> None:
        for s in reversed(self.services):
            s.stop()


@dataclass
class LocalCluster:
    """Postgres + Spark standalone + Airflow's four services on one machine."""

    root: Path
    config: Path
    secret: dict[str, str] = field(default_factory=generate_secrets)
    api_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    postgres: Postgres | None = None
    spark: SparkStandalone | None = None
    services: list[Service] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://localhost:{self.api_port}"

    def start(self, *, on_step=print) -> LocalCluster:
        """Start everything; stop what started when one part fails."""
        try:
            self.postgres = Postgres(self.secret["POSTGRES_PASSWORD"])
            self.postgres.start()
            on_step(f"postgres up on 127.0.0.1:{self.postgres.port}")
            home = self.root / "airflow"
            base = airflow_env(home, config=self.config, port=self.api_port)
            self.spark = SparkStandalone(self.root / "spark")
            self.spark.start(base)
            on_step(f"spark master {self.spark.url} with one worker "
                    f"(UI http://127.0.0.1:{self.spark.ui_port})")
            pw_file = write_passwords_file(home / "passwords.json", self.secret["VREC_ADMIN_PASSWORD"])
            self.env = {**base, **service_env(
                self.secret, db_url=self.postgres.url, api_url=self.api_url,
                spark_master=self.spark.url, passwords_file=pw_file),
                "AIRFLOW__API__HOST": "127.0.0.1", **self.extra_env}
            r = subprocess.run([airflow_bin(), "db", "migrate"], env=self.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode:
                raise RuntimeError(f"airflow db migrate failed:\n{r.stderr[-3000:]}")
            on_step("airflow metadata database migrated (postgres)")
            for name in AIRFLOW_SERVICES:
                cmd = [airflow_bin(), name] + (["--port", str(self.api_port)]
                                               if name == "api-server" else [])
                self.services.append(start(name, cmd, self.env, self.root / f"{name}.log"))
            wait_for("the Airflow API server", lambda: httpx.get(
                f"{self.api_url}/api/v2/monitor/health", timeout=5).status_code == 200, 240,
                self.root / "api-server.log", every=2)
            on_step(f"airflow api-server, scheduler, dag-processor, triggerer up ({self.api_url})")
        except BaseException:
            self.stop()
            raise
        return self

    def token(self) -> str:
        """A REST API token for the admin user."""
        r = httpx.post(f"{self.api_url}/auth/token", json={
            "username": "admin", "password": self.secret["VREC_ADMIN_PASSWORD"]}, timeout=30)
        r.raise_for_status()
        return r.json()["access_token"]

    def stop(self) -> None:
        """Stop Airflow's services, Spark and Postgres (in that order)."""
        for s in reversed(self.services):
            s.stop()
        self.services.clear()
        if self.spark:
            self.spark.stop()
        if self.postgres:
            self.postgres.stop()

    def logs(self) -> dict[str, Path]:
        return {s.name: s.log for s in [*self.services, *(self.spark.services if self.spark else [])]}


def main(argv: list[str] | None = None) -> int:
    """``python -m vrec.airflow.cluster secrets``: print a fresh ``.env`` for docker compose;
    ``... admin FILE``: write the admin's password file from ``$VREC_ADMIN_PASSWORD`` (the
    compose init service); ``... up [--root DIR]``: start the local cluster on the repo's
    DAGs until Ctrl-C."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["secrets"]:
        for k, v in generate_secrets().items():
            print(f"{k}={v}")
        return 0
    if args[:1] == ["admin"] and len(args) == 2:
        if not os.environ.get("VREC_ADMIN_PASSWORD"):
            print("VREC_ADMIN_PASSWORD is not set (it comes from .env)", file=sys.stderr)
            return 2
        print(f"admin user written to {write_passwords_file(args[1], os.environ['VREC_ADMIN_PASSWORD'])}")
        return 0
    if args[:1] == ["up"]:
        root = Path(args[args.index("--root") + 1] if "--root" in args
                    else tempfile.mkdtemp(prefix="vrec-cluster-"))
        cluster = LocalCluster(root, REPO / "vrec.yaml").start(on_step=lambda m: print(f"[cluster] {m}"))
        print(f"[cluster] UI {cluster.api_url} (admin / {cluster.secret['VREC_ADMIN_PASSWORD']}); "
              f"logs in {root}; Ctrl-C stops everything", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            cluster.stop()
        return 0
    print("usage: python -m vrec.airflow.cluster secrets | admin FILE | up [--root DIR]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
