"""The vrec_nightly DAG run through Airflow (`airflow dags test`) on a tiny sample, then
the published tables read back through `vrec query` and plain DuckDB."""

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from vrec import columns as C
from vrec.airflow.env import airflow_env, dags_test, migrate
from vrec.data.frontend import simulate_front_end
from vrec.data.sample import generate_sample
from vrec.io import warehouse as W

from .conftest import TINY

pytestmark = pytest.mark.e2e


class _Hook:
    """A local HTTP endpoint standing in for the on-call webhook (a real server)."""

    def __init__(self):
        import http.server
        import threading

        self.posts = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((self.path, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]


@pytest.fixture(scope="module")
def dag_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    hook = _Hook()
    raw, wh = tmp / "raw", tmp / "wh"
    generate_sample(raw, TINY)
    cfg = tmp / "vrec.yaml"
    cfg.write_text(f"paths: {{raw_root: {raw}, image_root: {raw}, warehouse_root: {wh}}}\n"
                   "spark: {master: 'local[2]', quick_jit: true, conf: {spark.sql.shuffle.partitions: '2', "
                   "spark.ui.enabled: 'false', spark.driver.memory: 1g}}\n"
                   "cf: {factors: 16, iterations: 8}\nrecs: {k: 5, candidates: 20}\n"
                   "eval: {gate_min_users: 5}\n"
                   "landing: {wait_timeout_minutes: 0.1, poke_seconds: 2}\n"
                   "orchestration: {retries: 0, failure_webhook_conn_id: vrec_alerts}\n")
    env = airflow_env(tmp / "airflow", config=cfg, spark_master="local[2]")
    env["AIRFLOW_CONN_VREC_ALERTS"] = f"http://127.0.0.1:{hook.port}/hooks/vrec"
    migrate(env)
    days = [(TINY.end_date - dt.timedelta(days=1)).isoformat(), TINY.end_date.isoformat()]
    # the second day is triggered with the operator's override param, as from the UI
    confs = [None, {"override_quality_gate": True, "override_reason": "e2e override check"}]
    rcs, front_end = [], None
    for ds, c in zip(days, confs):
        rcs.append(dags_test(ds, env, log_path=tmp / f"{ds}.log", conf=c))
        if ds == days[0] and ds in W.published_ds(wh):  # the shop's front end shows the lists
            front_end = simulate_front_end(raw, wh, ds, seed=5)
    # a day whose events never land: the sensor waits (6 s here), then fails naming the path
    missing = (TINY.end_date + dt.timedelta(days=1)).isoformat()
    rc_missing = dags_test(missing, env, log_path=tmp / f"{missing}.log")
    hook.server.shutdown()
    return {"raw": raw, "wh": wh, "days": days, "rcs": rcs, "tmp": tmp, "cfg": cfg, "env": env,
            "missing": missing, "rc_missing": rc_missing, "posts": hook.posts,
            "front_end": front_end}


def test_dag_runs_succeed(dag_runs):
    logs = [(dag_runs["tmp"] / f"{d}.log").read_text()[-3000:] for d in dag_runs["days"]]
    assert dag_runs["rcs"] == [0, 0], logs
    assert W.published_ds(dag_runs["wh"]) == dag_runs["days"]
    assert W.latest_ds(dag_runs["wh"]) == dag_runs["days"][-1]


def test_long_stages_print_progress_lines_to_the_task_log(dag_runs):
    """Embedding counts images from the Spark tasks (an accumulator), tuning and the
    evaluation count grid points and model lists: done/total, elapsed<ETA, rate."""
    first = dag_runs["days"][0]
    log = (dag_runs["tmp"] / f"{first}.log").read_text()
    rec = W.stage_records(dag_runs["wh"], first)
    meter = r" \[\d\d:\d\d<[^,\]]+, +[^\]]+/s\]"
    emb = re.findall(rf"\[vrec\] {first} embed_items: embedded: (\d+)/(\d+) images{meter}", log)
    assert emb and emb[0][0] == "0", log[-3000:]
    assert emb[-1][0] == emb[-1][1] == str(rec["embed_items"]["embedded_new"])
    lists = re.findall(rf"\[vrec\] {first} evaluate: model lists: (\d+)/(\d+) lists{meter}", log)
    m = W.read_table(dag_runs["wh"], "eval_metrics", first)
    n_models = m.loc[m["slice"] == "all", "model"].nunique()  # six with text features
    assert lists and lists[-1][0] == lists[-1][1] == \
        str(n_models * len(rec["evaluate"]["evaluation"]["ks"]))
    if not rec["train_cf"]["blend"].get("skipped"):
        grid = re.findall(rf"\[vrec\] {first} train_cf: blend tuning: (\d+)/(\d+) grid points", log)
        done, total = map(int, grid[-1])
        assert len(rec["train_cf"]["blend"]["grid"]) <= done <= total


def test_a_day_that_never_lands_fails_waiting_and_publishes_nothing(dag_runs):
    missing, raw = dag_runs["missing"], dag_runs["raw"]
    log = (dag_runs["tmp"] / f"{missing}.log").read_text()
    assert dag_runs["rc_missing"] != 0
    assert f"waited 6 s for {raw}/events/ds={missing}/_SUCCESS" in log
    assert "[vrec] waiting for events" in log          # the trigger checked while it waited
    assert "jobs/validate_inputs.py" not in log          # no stage was submitted
    assert missing not in W.published_ds(dag_runs["wh"])
    assert W.latest_ds(dag_runs["wh"]) == dag_runs["days"][-1]


def test_a_failed_night_is_recorded_sent_to_the_webhook_and_shown_in_the_report(dag_runs):
    import json

    from vrec.config import load_settings
    from vrec.report import render_report

    missing, wh = dag_runs["missing"], dag_runs["wh"]
    failures = W.read_failures(wh)
    assert [(f["ds"], f["stage"]) for f in failures] == [(missing, "wait_for_events")]
    assert f"events/ds={missing}/_SUCCESS" in failures[0]["error"]
    assert failures[0]["run_id"] and failures[0]["try"] == 1
    assert [(path, json.loads(body)["ds"]) for path, body in dag_runs["posts"]] == [
        ("/hooks/vrec", missing)]
    from vrec.executor import RunLayout

    last = dag_runs["days"][-1]
    html = render_report(load_settings(dag_runs["cfg"]), last, RunLayout(wh, last).path)
    section = html.split("Failed nights")[1]
    assert f"<td>{missing}</td><td>wait_for_events</td>" in section


def test_published_recs_hold_the_contract(dag_runs):
    wh, raw, ds = dag_runs["wh"], dag_runs["raw"], dag_runs["days"][-1]
    recs = W.read_table(wh, "user_recs", ds)
    events = pd.concat(pd.read_parquet(raw / "events" / f"ds={d}")
                       for d in sorted(p.name[3:] for p in (raw / "events").iterdir()))
    catalog = pd.read_parquet(raw / "catalog" / f"ds={ds}")
    clean = events[events[C.USER_ID].notna() & events[C.ITEM_ID].isin(catalog[C.ITEM_ID])]
    # every user with (valid) events gets exactly K recommendations ranked 1..K
    assert set(recs[C.USER_ID]) == set(clean[C.USER_ID])
    ranks = recs.groupby(C.USER_ID)["rank"].apply(sorted)
    assert (ranks.apply(lambda r: r == [1, 2, 3, 4, 5])).all()
    # nothing the user already purchased; every item exists in the catalog
    bought = set(map(tuple, clean[clean[C.EVENT_TYPE] == "purchase"][[C.USER_ID, C.ITEM_ID]].values))
    assert bought and not bought & set(zip(recs[C.USER_ID], recs[C.ITEM_ID]))
    assert set(recs[C.ITEM_ID]) <= set(catalog[C.ITEM_ID])
    assert recs["model_version"].str.startswith("implicit-als-" + ds).all()
    # the sample's out-of-stock item is in no list, and the day before's lists were measured
    gone = catalog.loc[catalog[C.AVAILABLE] == False, C.ITEM_ID]  # noqa: E712 - nulls are available
    assert len(gone) and not recs[C.ITEM_ID].isin(gone).any()
    real = W.read_table(wh, "realised_metrics", ds)
    assert set(real[C.LIST_DS]) == {dag_runs["days"][0]}
    assert real.set_index(["slice", "metric"]).loc[("all", "impressions"), "value"] == \
        dag_runs["front_end"]["impressions"]


def test_vrec_query_and_plain_duckdb_read_the_tables(dag_runs):
    wh = dag_runs["wh"]
    vrec = str(Path(sys.executable).parent / "vrec")
    out = subprocess.run([vrec, "query", "--warehouse", str(wh), "--format", "csv",
                          "SELECT ds, count(*) AS n FROM user_recs_all GROUP BY ds ORDER BY ds"],
                         capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "ds,n" and [ln.split(",")[0] for ln in lines[1:]] == dag_runs["days"]
    latest = subprocess.run([vrec, "query", "--warehouse", str(wh), "--format", "csv",
                             "SELECT DISTINCT ds FROM user_recs"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert latest == ["ds", dag_runs["days"][-1]]
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{wh}/user_recs/*/*.parquet')").fetchall()[0][0]
    assert n == sum(int(ln.split(",")[1]) for ln in lines[1:])
    bad = subprocess.run([vrec, "query", "--warehouse", str(wh), "SELECT * FROM nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_vrec_status_shows_the_nights_and_exits_for_monitoring(dag_runs, tmp_path):
    """`vrec status` on the warehouse the DAG runs wrote: the failed newest night gives
    exit 1; without it the night is healthy (0) until the data is older than --max-age (3),
    and a realised drop in the latest manifest is exit 4."""
    import json

    wh, last, missing = dag_runs["wh"], dag_runs["days"][-1], dag_runs["missing"]
    vrec = str(Path(sys.executable).parent / "vrec")

    def status(warehouse, *args):
        return subprocess.run([vrec, "status", "--warehouse", str(warehouse), *args],
                              capture_output=True, text=True)

    out = status(wh, "--json")
    assert out.returncode == 1, out.stderr
    st = json.loads(out.stdout)
    assert st["verdict"] == "failed" and missing in st["problems"][0]
    assert st["latest"]["ds"] == last
    assert st["latest"]["version"] == W.manifest(wh, last)["version"]
    nights = {n["ds"]: n for n in st["nights"]}
    assert [n["ds"] for n in st["nights"]] == [missing, *reversed(dag_runs["days"])]
    assert nights[missing]["state"] == "failed"
    assert [f["stage"] for f in nights[missing]["failures"]] == ["wait_for_events"]
    records = W.stage_records(wh, last)
    assert nights[last]["state"] == "published"
    assert nights[last]["gate"]["status"] == records["publish"]["quality_gate"]["status"]
    assert "quality_gate" not in records  # the verdict is publish's, not a stage of its own
    assert {s: v["seconds"] for s, v in nights[last]["stages"].items()} == {
        s: r["seconds"] for s, r in records.items()}
    staged_q = W.staged_quarantine(wh, last)
    assert nights[last]["quarantine"] == staged_q.groupby("reason").size().to_dict()
    # which GX engine validated each suite: the tiny night's tables are all under the
    # row threshold, so pandas, as the stage records say
    engines = {**records["validate_inputs"]["validation_engines"],
               **records["validate_outputs"]["validation_engines"]}
    assert nights[last]["validation_engines"] == engines
    assert set(engines.values()) == {"pandas"} and len(engines) == 6
    text = status(wh)
    assert text.returncode == 1 and "verdict: FAILED" in text.stdout
    assert f"validated by ({last}): " in text.stdout and "raw_events pandas" in text.stdout
    assert f"{missing}  failed" in text.stdout and "wait_for_events" in text.stdout

    # the same warehouse without the failed night: healthy, then stale after --max-age
    healthy = tmp_path / "wh"
    shutil.copytree(wh, healthy, symlinks=True)
    shutil.rmtree(healthy / "_failures" / f"ds={missing}")
    end = dt.datetime.fromisoformat(last) + dt.timedelta(days=1)
    fresh = status(healthy, "--max-age", "36h", "--now", (end + dt.timedelta(hours=12)).isoformat())
    assert fresh.returncode == 0 and "verdict: OK" in fresh.stdout, fresh.stdout
    # the realised figures of the day before's lists, with the front end's impressions
    first = dag_runs["days"][0]
    assert f"realised: lists of {first} after 1 day(s):" in fresh.stdout
    assert f"of {dag_runs['front_end']['impressions']} impressions" in fresh.stdout
    # a realised drop is a warning with its own exit code (below failed and stale)
    manifest = healthy / "_current" / f"ds={last}" / "_manifest.json"
    m = json.loads(manifest.read_text())
    m["realised"]["warning"] = {"list_ds": first, "message": "realised NDCG fell (test)"}
    manifest.write_text(json.dumps(m))
    drop = status(healthy, "--json", "--now", (end + dt.timedelta(hours=12)).isoformat())
    assert drop.returncode == 4 and json.loads(drop.stdout)["verdict"] == "realised_drop"
    assert "realised NDCG fell (test)" in json.loads(drop.stdout)["problems"][0]
    stale = status(healthy, "--max-age", "36h", "--now", (end + dt.timedelta(hours=37)).isoformat())
    assert stale.returncode == 3 and "--max-age 36 h" in stale.stdout, stale.stdout
    bad = status(healthy, "--max-age", "soon")
    assert bad.returncode == 2 and "36h" in bad.stderr


def test_airflow_lists_the_dag(dag_runs):
    out = subprocess.run([str(Path(sys.executable).parent / "airflow"), "dags", "list"],
                         env=dag_runs["env"], capture_output=True, text=True, check=True)
    assert "vrec_nightly" in out.stdout


def test_run_summary_links_validation_results_and_data_docs(dag_runs):
    from vrec.demo import summarize
    from vrec.io.validation import docs_index

    wh, days = dag_runs["wh"], dag_runs["days"]
    text = summarize(wh, days)
    assert f"Validation for {days[-1]} (Data Docs: {docs_index(wh)})" in text
    for suite in ("raw_events", "raw_catalog", "user_recs", "user_lists", "item_similar",
                  "item_embeddings"):
        assert f"  {suite} " in text
    assert docs_index(wh).is_file() and W.manifest(wh, days[-1])["data_docs"] == str(docs_index(wh))
    # one list per reason, each shown for a user whose published list holds that reason;
    # a reason no list has (the tiny sample's blend may give the visual history no
    # weight) is said to be absent
    recs = W.read_table(wh, "user_recs", days[-1])
    present = set(recs["reason"])
    assert {C.REASON_COLLABORATIVE, C.REASON_NEW_ARRIVAL, C.REASON_TRENDING} <= present
    for reason in C.REASONS:
        m = re.search(rf"\[{reason}\] recommendations for (\S+):", text)
        if reason in present:
            assert m, f"no {reason} list in the summary:\n{text[-3000:]}"
            assert reason in set(recs.loc[recs[C.USER_ID] == m[1], "reason"])
        else:
            assert not m and f"[{reason}] no list has this reason on {days[-1]}" in text


def test_newcomers_of_the_last_day_are_cold_users_with_trending_lists(dag_runs):
    """The sample's newcomers (only low ratings on the last day: seen, no history) are
    published as cold users whose whole list is trending and avoids what they rated."""
    wh, raw, ds = dag_runs["wh"], dag_runs["raw"], dag_runs["days"][-1]
    ev = pd.read_parquet(raw / "events" / f"ds={ds}")
    rated = ev[ev[C.EVENT_TYPE] == "rating"]
    newcomers = set(rated[C.USER_ID])
    assert len(newcomers) == TINY.new_users
    prof = W.read_table(wh, "user_profile", ds).set_index(C.USER_ID)
    assert (prof.loc[sorted(newcomers), "segment"] == "cold").all()
    assert (prof.loc[sorted(newcomers), "history_items"] == 0).all()
    recs = W.read_table(wh, "user_recs", ds)
    mine = recs[recs[C.USER_ID].isin(newcomers)]
    assert set(mine[C.USER_ID]) == newcomers and (mine["reason"] == C.REASON_TRENDING).all()
    assert not set(zip(mine[C.USER_ID], mine[C.ITEM_ID])) & set(zip(rated[C.USER_ID],
                                                                   rated[C.ITEM_ID]))


ARTIFACTS = Path(os.environ.get("VREC_TEST_ARTIFACTS",
                                Path(__file__).resolve().parent.parent / "test-artifacts"))


def test_the_dag_evaluates_gates_and_passes_the_override_param(dag_runs):
    wh, (first, second) = dag_runs["wh"], dag_runs["days"]
    g1 = W.manifest(wh, first)["quality_gate"]
    assert g1["status"] == "first_run" and g1["override"] is False
    g2 = W.manifest(wh, second)["quality_gate"]
    assert g2["override"] is True and g2["reason"] == "e2e override check"
    assert g2["previous_ds"] == first and g2["status"] in {"passed", "overridden"}
    m = W.read_table(wh, "eval_metrics", second)
    from vrec.core.models import MODELS
    from vrec.executor import RunLayout

    # four days of data and a week-long window: no ranker can train, and the records say so
    ranker = RunLayout(wh, second).record("evaluate")["evaluation"]["ranker"]
    assert "training window" in ranker["skipped"] and ranker["chosen"] is None
    assert set(m["model"]) == set(MODELS) - {"ranker"}
    assert RunLayout(wh, second).record("build_recs")["ranked_by"] == "hybrid"
    log = (dag_runs["tmp"] / f"{second}.log").read_text()
    assert "quality gate" in log and "run report:" in log
    # the config's driver memory reaches spark-submit (a session setting would be too late)
    assert "--conf spark.driver.memory=1g" in log


def test_the_second_night_replays_the_first_for_its_holdout(dag_runs, spark):
    """The second night's evaluation takes the first night's staged model, and the
    replayed holdout (the first night's interactions and trending) has the pairs, labels
    and trending an aggregation of the second night's events before the cutoff gives
    (this sample lands no event late)."""
    import numpy as np

    from vrec.config import load_settings
    from vrec.executor import RunLayout
    from vrec.spark.windows import forward_window_at, replayed_window

    wh, (first, second) = dag_runs["wh"], dag_runs["days"]
    rec = RunLayout(wh, second).record("evaluate")["evaluation"]
    assert rec["cf_model"] == f"the model train_cf staged for {first}"
    assert RunLayout(wh, first).record("evaluate")["evaluation"]["cf_model"].startswith("refit")
    s = load_settings(dag_runs["cfg"], environ={})
    one, two = RunLayout(wh, first), RunLayout(wh, second)
    fresh = forward_window_at(spark, two.path("events"), s, first, second)
    replay = replayed_window(spark, two.path("events"), one.path("interactions"),
                             one.path("item_popularity"), s, first, second)
    key = ["user_id", "item_id"]
    a, b = (w.train.sort_values(key, ignore_index=True) for w in (fresh, replay))
    assert len(a) > 100 and a[key].equals(b[key])
    assert np.allclose(a["weight"], b["weight"]) and a["n_events"].equals(b["n_events"])
    assert (a["last_ts"] == b["last_ts"]).all()
    assert fresh.relevant == replay.relevant and fresh.trending == replay.trending


def test_run_report_renders_in_headless_chromium_with_its_images(dag_runs):
    """The report opens from disk in a real browser and every thumbnail decodes; the
    screenshot is kept in test-artifacts/ ($VREC_TEST_ARTIFACTS)."""
    from vrec.report import report_path

    ds = dag_runs["days"][-1]
    report = report_path(dag_runs["wh"], ds)
    assert report.is_file()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "no chromium on PATH: `make test` installs Debian's chromium package"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=10000"]
    dom = subprocess.run(flags + ["--dump-dom", report.as_uri()], capture_output=True,
                         text=True, timeout=180).stdout
    total = re.search(r'data-images-total="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, dom[-2000:]
    assert int(total[1]) > 10 and loaded[1] == total[1]
    assert "vrec run report" in dom and "Offline evaluation" in dom
    # trend plots readable: wide, round y ticks, dated x ticks, every point's value on hover
    trends = re.findall(r'<svg[^>]*width="(\d+)"[^>]*class="plot trend">(.*?)</svg>', dom, re.S)
    assert len(trends) == 4, dom[:3000]  # ndcg, recall, coverage; realised vs offline
    assert "How the published lists did" in dom
    first = dag_runs["days"][0]
    assert re.search(rf"<title>realised {first}: \d\.\d{{4}}</title>", trends[3][1]), trends[3][1][:2000]
    for width, svg in trends:
        assert int(width) >= 600
        assert svg.count('class="tick ytick"') >= 3 and svg.count('class="tick xtick"') >= 2
        assert re.search(r"<title>hybrid \d{4}-\d\d-\d\d: \d\.\d{4}</title>", svg), svg[:2000]
    # stage seconds as bars: one per stage the run recorded, labelled with its seconds
    stats = W.stage_records(dag_runs["wh"], ds)
    bars = re.findall(r'<g class="bar"><title>(\w+): ([\d.]+) s</title>', dom)
    # (the report's own record is written after it renders)
    assert {b[0] for b in bars} == set(stats) - {"report"}
    assert all(abs(float(v) - stats[k]["seconds"]) < 0.06 for k, v in bars)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"run_report_{ds}.png"
    shot.unlink(missing_ok=True)
    subprocess.run(flags + ["--window-size=1400,5000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=180, check=True)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1400, 5000)
        # not a blank page: the report's tables, plots and thumbnails make many colours
        assert len(im.convert("RGB").resize((350, 1250)).getcolors(1 << 20)) > 200
