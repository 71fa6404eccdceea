"""The deployment settings: docker-compose.yml carries the settings of the cluster that
``make test-cluster`` starts (vrec.airflow.cluster.service_env), takes every secret from
.env (no default passwords), binds its UIs to localhost, and its init service writes the
admin user. Docker is not run here (no engine on these machines); the cluster test runs
the same components and settings without it."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from vrec.airflow.cluster import SECRET_NAMES, generate_secrets, service_env

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
TEXT = (REPO / "docker-compose.yml").read_text()


def test_compose_sets_every_shared_setting_of_the_tested_cluster():
    env = COMPOSE["x-vrec"]["environment"]
    keys = service_env(generate_secrets(), db_url="x", api_url="http://x", spark_master="x",
                       passwords_file="/p").keys()
    assert sorted(set(keys) - set(env)) == []
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # every Airflow service and the init service get them (YAML anchors resolved)
    for name in ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer"):
        svc_env = COMPOSE["services"][name]["environment"]
        assert set(keys) <= set(svc_env), name


def test_compose_takes_every_secret_from_env_and_has_no_default_password():
    env = COMPOSE["x-vrec"]["environment"]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                "AIRFLOW__CORE__FERNET_KEY"):
        assert re.fullmatch(r"\$\{VREC_[A-Z_]+:\?[^}]+\}", env[key]), key
    assert "${POSTGRES_PASSWORD:?" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert COMPOSE["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?")
    assert "airflow:airflow@" not in TEXT and "POSTGRES_PASSWORD: airflow" not in TEXT
    # every variable the file reads is one the generator writes
    used = set(re.findall(r"\$\{([A-Z_]+)", TEXT))
    assert used == set(SECRET_NAMES)


def test_compose_publishes_its_uis_on_localhost_only():
    ports = [p for svc in COMPOSE["services"].values() for p in svc.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports


def test_the_init_service_migrates_and_writes_the_admin_user(tmp_path):
    cmd = " ".join(COMPOSE["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in cmd and "vrec.airflow.cluster admin" in cmd
    # the command it runs, with the password from the environment
    target = tmp_path / "auth" / "passwords.json"
    env = {**os.environ, "VREC_ADMIN_PASSWORD": "pw-from-dotenv"}
    subprocess.run([sys.executable, "-m", "vrec.airflow.cluster", "admin", str(target)], env=env,
                   check=True, capture_output=True)
    assert json.loads(target.read_text()) == {"admin": "pw-from-dotenv"}
    assert target.stat().st_mode & 0o077 == 0
    env.pop("VREC_ADMIN_PASSWORD")
    r = subprocess.run([sys.executable, "-m", "vrec.airflow.cluster", "admin", str(target)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "VREC_ADMIN_PASSWORD" in r.stderr


def test_the_secrets_generator_writes_a_usable_env_file():
    out = subprocess.run([sys.executable, "-m", "vrec.airflow.cluster", "secrets"], check=True,
                         capture_output=True, text=True).stdout
    pairs = dict(line.split("=", 1) for line in out.splitlines())
    assert sorted(pairs) == sorted(SECRET_NAMES)
    assert all(len(v) >= 24 for v in pairs.values())
    assert len(base64.urlsafe_b64decode(pairs["VREC_FERNET_KEY"])) == 32  # a valid Fernet key
    from cryptography.fernet import Fernet

    Fernet(pairs["VREC_FERNET_KEY"].encode())
    again = subprocess.run([sys.executable, "-m", "vrec.airflow.cluster", "secrets"], check=True,
                           capture_output=True, text=True).stdout
    assert again != out  # fresh every time
