"""The production shape for real on this machine: a Spark standalone master with two workers and
a Spark Connect server, Dagster on Postgres with a real daemon, an MLflow tracking server on
Postgres, each a process started by pipelines/services.py and bound to 127.0.0.1.

The same generated crawl runs through the data assets on `local[2]` (the reference), on Spark
Connect, and on the standalone cluster (Dagster runs the schedule's run requests from its Postgres
queue, logging to the MLflow server); all three must keep the same documents with the same text.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines import services, spark_services
from pipelines.io import read_documents
from pipelines.samplecrawl import generate_crawl
from service_probes import command_lines_holding

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CRAWL = "CC-MAIN-2099-01"
LOOPBACK_DRIVER = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                   "spark.ui.enabled": "false"}


# ------------------------------------------------------------------------------------------
# services, started once for the module and stopped (all of them, checked) at its end

@pytest.fixture(scope="module")
def started():
    """Every service the module starts; stopped at the end (a test may stop them earlier)."""
    running: list[services.Service] = []
    yield running
    for svc in reversed(running):
        svc.stop()


@pytest.fixture(scope="module")
def cluster(started):
    svc = spark_services.start_spark_cluster(workers=2, cores=1, memory="1g", auth_secret=secrets.token_hex(16))
    started.append(svc)
    return svc


@pytest.fixture(scope="module")
def connect(started):
    svc = spark_services.start_spark_connect(master="local[2]")
    started.append(svc)
    return svc


@pytest.fixture(scope="module")
def postgres(started):
    try:
        svc = services.start_postgres(install=True)
    except services.ServiceError as e:
        if "not installed" in str(e):
            pytest.skip(f"{e} (the fixture installs it when it runs as root on Debian)")
        raise
    started.append(svc)
    return svc


@pytest.fixture(scope="module")
def mlflow_server(started, postgres, tmp_path_factory):
    svc = services.start_mlflow_server(postgres, tmp_path_factory.mktemp("mlflow") / "artifacts")
    started.append(svc)
    return svc


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    return generate_crawl(tmp_path_factory.mktemp("crawl") / "source", pages=80, seed=16, crawl=CRAWL, files=2)


# ------------------------------------------------------------------------------------------
# the data assets, materialized in-process against a given Spark resource

def _materialize_data(root: Path, source: Path, spark) -> dict[str, str]:
    """Every data asset of the crawl (manifest, both batches, dedup + PII); returns the clean
    documents as {id: sha256(text)}."""
    import dagster as dg

    from assets.data import data_assets
    from assets.lineage import MLflowTracker
    from assets.partitions import warc_batches
    from assets.resources import CrawlSource, DataConfigResource, LakeResource

    (root / "dagster_home").mkdir(parents=True)
    instance = dg.DagsterInstance.local_temp(str(root / "dagster_home"), overrides={"telemetry": {"enabled": False}})
    resources = {"lake": LakeResource(root=str(root / "lake")), "spark": spark,
                 "source": CrawlSource(crawl=CRAWL, base_url=str(source)), "data_config": DataConfigResource(),
                 "mlflow_tracker": MLflowTracker(tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                                                 artifact_root=str(root / "mlartifacts"))}
    runs = [dg.materialize(data_assets, selection=["crawl_manifest"], instance=instance, resources=resources)]
    for key in instance.get_dynamic_partitions(warc_batches.name):
        runs.append(dg.materialize(data_assets, selection=["warc_files", "extracted_text", "filtered_text"],
                                   partition_key=key, instance=instance, resources=resources))
    runs.append(dg.materialize(data_assets, selection=["deduped_text", "clean_text"], instance=instance,
                               resources=resources))
    assert all(r.success for r in runs)
    return _clean_digests(root / "lake")


def _clean_digests(lake: Path) -> dict[str, str]:
    docs = read_documents([lake / "crawls" / CRAWL / "clean"])
    return {d.id: hashlib.sha256(d.text.encode()).hexdigest() for d in docs}


@pytest.fixture(scope="module")
def reference(crawl, tmp_path_factory):
    """The embedded default: local[2]."""
    from assets.resources import SparkResource
    digests = _materialize_data(tmp_path_factory.mktemp("local"), _source(crawl), SparkResource(master="local[2]"))
    assert len(digests) > 10
    return digests


def _source(crawl) -> Path:
    return Path(crawl.manifest_path).parent


# ------------------------------------------------------------------------------------------
# Spark: what executors get, and the same documents on every master

def test_cluster_executors_run_the_drivers_code_with_shipped_model_and_blocklists(cluster, monkeypatch):
    """Executors of a real standalone cluster import `pipelines` from the zip the driver shipped
    (not from the checkout), run the project's interpreter, and find the LID model and block lists
    through SparkFiles. Before the fix they ran `python3` from PATH and failed to import pyarrow."""
    import sys

    import pyarrow as pa

    from pipelines.config import load_config
    from pipelines.spark.session import build_spark_session
    from pipelines.spark.ship import config_for_executors, resolve_shipped

    monkeypatch.setenv("SPARK_AUTH_SECRET", cluster.env["SPARK_AUTH_SECRET"])  # the cluster authenticates
    # A zip planted where the previous version cached the shipped code (a predictable name in the
    # shared /tmp, hashed from public source): executors must never import it.
    planted = _planted_code_zip()
    spark = build_spark_session(cluster.url, app_name="crawl2chat-ship-test", conf=LOOPBACK_DRIVER)
    try:
        # the driver's JVM is up and authenticated to the cluster: its secret is on no command line
        assert command_lines_holding([cluster.env["SPARK_AUTH_SECRET"]]) == []
        cfg = config_for_executors(spark, load_config())

        def probe(batches):
            import os

            import pipelines
            from pipelines.lid import load_model, predict
            from pipelines.url_filter import URLFilter
            resolved = resolve_shipped(cfg)
            model = resolved["language"]["model_path"]
            url_filter = URLFilter(**resolved["url_filter"])  # reads the lists now
            for _ in batches:
                yield pa.RecordBatch.from_pylist([{
                    "python": sys.executable, "pipelines": pipelines.__file__, "cwd": os.getcwd(),
                    "planted": os.environ.get("CRAWL2CHAT_PLANTED", ""),
                    "model": model, "language": predict(load_model(model), "The weather is mild and the river is calm today.")[0][0],
                    "blocklists": str(url_filter.blocklist_dir),
                    "blocked": url_filter.check("https://pornhub.com/") or ""}])

        rows = spark.range(0, 2, 1, 2).mapInArrow(
            probe, "python string, pipelines string, cwd string, planted string, model string, language string, "
            "blocklists string, blocked string").collect()
    finally:
        spark.stop()
        planted.unlink()
    assert len({r.cwd for r in rows}) == 2  # two executors, one per worker, each in its own work dir
    for r in rows:
        assert r.python == sys.executable
        assert ".zip/pipelines/" in r.pipelines and not r.pipelines.startswith(str(ROOT))
        assert planted.name not in r.pipelines and r.planted == ""
        assert r.model.startswith(r.cwd) and r.language == "en"  # the shipped lid.176 copy loads and predicts
        assert r.blocklists.startswith(r.cwd) and r.blocked == "domain"  # adult/domains of the shipped lists


def _planted_code_zip() -> Path:
    """A zip whose `pipelines` marks the executor that imports it, planted under the name the
    previous ship.py looked for in /tmp (tests/test_spark_ship.py checks the name rule)."""
    import zipfile

    from pipelines.spark import ship
    files = sorted(p for p in ship._PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(ship._PACKAGE)).encode() + b"\0" + p.read_bytes())
    planted = Path(tempfile.gettempdir()) / f"crawl2chat-code-{digest.hexdigest()[:16]}.zip"
    with zipfile.ZipFile(planted, "w") as z:
        for p in files:
            if p != ship._PACKAGE / "__init__.py":
                z.write(p, str(Path("pipelines") / p.relative_to(ship._PACKAGE)))
        z.writestr("pipelines/__init__.py", "import os\nos.environ['CRAWL2CHAT_PLANTED'] = 'imported'\n")
    return planted


def test_spark_connect_keeps_the_same_documents_as_local(reference, connect, crawl, tmp_path, monkeypatch):
    from assets.resources import SparkResource
    monkeypatch.setenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", connect.env["SPARK_CONNECT_AUTHENTICATE_TOKEN"])
    try:
        digests = _materialize_data(tmp_path, _source(crawl), SparkResource(remote=connect.url))
    finally:
        # PySpark marks the whole process as a Connect client (os.environ, never undone): a later
        # classic session here (tests/test_spark.py) or a child process (the Dagster daemon)
        # would then refuse to start without a remote URL.
        for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE"):
            os.environ.pop(var, None)
    assert digests == reference



# ------------------------------------------------------------------------------------------
# Dagster on Postgres: the nightly schedule's runs, queued, admitted one at a time, on the cluster

def _wait_runs(instance, run_ids, daemon, timeout: float) -> set[tuple]:
    """Poll the runs' statuses until all have finished; returns every combination seen."""
    import dagster as dg
    done = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    seen, deadline = set(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = tuple(instance.get_run_by_id(r).status for r in run_ids)
        seen.add(statuses)
        if all(s in done for s in statuses):
            return seen
        assert daemon.procs[0].poll() is None, f"the daemon died:\n{daemon.log_tail()}"
        time.sleep(1.0)
    pytest.fail(f"runs not finished after {timeout:.0f} s ({statuses}); daemon log:\n{daemon.log_tail()}")


def _failures(instance, run_ids) -> str:
    """The errors of failed steps and runs, from the runs' event logs."""
    out = []
    for run_id in run_ids:
        for e in instance.all_logs(run_id):
            if e.is_dagster_event and e.dagster_event.is_failure:
                error = getattr(e.dagster_event.event_specific_data, "error", None)
                out.append(f"{run_id} {e.step_key}: {error.to_string() if error else e.message}")
    return "\n".join(out)[-6000:]


@pytest.mark.timeout(1800)
@pytest.mark.extended   # ~5 min of two cluster runs in turn; its parts run in make test: the queue and daemon
# (test_ui, on SQLite), the cluster (test_cluster_executors...), Postgres (the MLflow server tests)
def test_dagster_on_postgres_queues_the_nightly_runs_and_runs_them_on_the_cluster(
        postgres, mlflow_server, cluster, crawl, reference, started, tmp_path, monkeypatch):
    import dagster as dg
    from mlflow import MlflowClient

    from assets.automation import nightly_crawl
    from assets.resources import CrawlSource, LakeResource

    home, lake = tmp_path / "dagster_home", tmp_path / "lake"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.postgres.yaml", home / "dagster.yaml")  # exactly the shipped file
    shutil.copy(ROOT / "dagster_home" / "workspace.yaml", home / "workspace.yaml")
    env = {"DAGSTER_HOME": str(home), **{k: v for k, v in postgres.env.items() if k.startswith("DAGSTER_POSTGRES_")},
           **cluster.env, **mlflow_server.env, "CRAWL2CHAT_LAKE": str(lake), "CRAWL2CHAT_CRAWL": CRAWL,
           "CRAWL2CHAT_CRAWL_SOURCE": str(_source(crawl))}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 8
    assert [(t["key"], t["limit"]) for t in queue.tag_concurrency_limits] == [("crawl2chat/gpu", 1)]

    # The nightly schedule's tick: it registers the batches in Postgres and requests a run for each.
    with dg.build_schedule_context(instance=instance, resources={
            "source": CrawlSource(crawl=CRAWL, base_url=str(_source(crawl))), "lake": LakeResource(root=str(lake))}) as ctx:
        requests = nightly_crawl(ctx)
    keys = [r.partition_key for r in requests]
    assert keys == [f"{CRAWL}/00000-00000", f"{CRAWL}/00001-00001"]
    assert sorted(instance.get_dynamic_partitions("warc_batches")) == keys

    # Submitted to the queue with the tag the GPU limit counts: both wait until a daemon admits them.
    for r in requests:
        tags = {**r.tags, "dagster/partition": r.partition_key, "crawl2chat/gpu": "1"}
        launch = subprocess.run([str(services.BIN / "dagster"), "job", "launch", "-w", str(home / "workspace.yaml"),
                                 "-j", "data_pipeline", "--tags", json.dumps(tags)],
                                capture_output=True, text=True, timeout=300)
        assert launch.returncode == 0, launch.stderr[-3000:]
    runs = sorted(instance.get_runs(filters=dg.RunsFilter(job_name="data_pipeline")), key=lambda r: r.tags["dagster/partition"])
    assert [r.tags["dagster/partition"] for r in runs] == keys
    assert all(r.status == dg.DagsterRunStatus.QUEUED for r in runs)

    log = tmp_path / "daemon.log"
    daemon = services.Service("dagster-daemon", "", [services.spawn(
        "dagster-daemon", [str(services.BIN / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")], log,
        env, cwd=home)], [log])
    started.append(daemon)
    seen = _wait_runs(instance, [r.run_id for r in runs], daemon, timeout=1500)
    daemon.info["listening"] = services.listening_addresses(daemon)
    daemon.stop()

    statuses = {r.run_id: instance.get_run_by_id(r.run_id).status for r in runs}
    assert all(s == dg.DagsterRunStatus.SUCCESS for s in statuses.values()), \
        f"{statuses}\n{_failures(instance, statuses)}\ndaemon log:\n{daemon.log_tail()}"
    # the tag limit held: one ran while the other waited, and their run times never overlapped
    started_ = dg.DagsterRunStatus.STARTED
    assert any(started_ in combo and dg.DagsterRunStatus.QUEUED in combo for combo in seen), seen
    assert not any(combo.count(started_) == 2 for combo in seen), seen
    first, second = sorted(instance.get_run_records(filters=dg.RunsFilter(run_ids=[r.run_id for r in runs])),
                           key=lambda rec: rec.start_time)
    assert first.end_time <= second.start_time

    # visible through the instance API (events and materializations read back from Postgres)
    for r in runs:
        events = instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        assert {e.dagster_event.asset_key.to_user_string() for e in events} == {
            "warc_files", "extracted_text", "filtered_text", "deduped_text", "clean_text"}
    assert instance.get_latest_materialization_event(dg.AssetKey("clean_text")).run_id == second.dagster_run.run_id

    # both runs were applications of the standalone cluster, and they kept what local[2] kept
    with urllib.request.urlopen(cluster.info["web_ui"] + "/json/", timeout=10) as resp:
        apps = json.load(resp)["completedapps"]
    assert len([a for a in apps if a["name"] == "crawl2chat"]) >= 2
    assert _clean_digests(lake) == reference

    # the MLflow runs of each materialization went through the tracking server, artifacts included
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("crawl2chat/data")
    mruns = client.search_runs([exp.experiment_id], f"tags.`dagster.run_id` = '{second.dagster_run.run_id}'")
    assert {m.data.tags["dagster.asset_key"] for m in mruns} == {
        "warc_files", "extracted_text", "filtered_text", "deduped_text", "clean_text"}
    clean_run = next(m for m in mruns if m.data.tags["dagster.asset_key"] == "clean_text")
    assert clean_run.info.artifact_uri.startswith("mlflow-artifacts:/")
    reported = [f.path for f in client.list_artifacts(clean_run.info.run_id, "report")]
    assert reported and all((Path(mlflow_server.info["artifacts"]) / exp.experiment_id / clean_run.info.run_id /
                             "artifacts" / p).exists() for p in reported)


# ------------------------------------------------------------------------------------------
# MLflow through the tracking server

def test_mlflow_server_keeps_runs_metrics_artifacts_and_models_across_a_kill_9(
        mlflow_server, postgres, started, tmp_path, monkeypatch):
    """The trainer's Tracker logs through the server as it does to SQLite; a model version is
    registered over HTTP; the server is SIGKILLed and restarted on the same port: all of it is
    still there, read back through the server."""
    from mlflow import MlflowClient

    from training.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tracker = Tracker(True, tmp_path / "run", "crawl2chat-pretrain", run_name="tiny", params={"steps": 5})
    for step in range(1, 6):
        tracker.log_metrics({"train/loss": 5.0 / step, "lr": 1e-3}, step, flush=step == 5)
    tracker.log_text("step 5: the quick brown fox", "samples/step_00005.txt")
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"vocab_size": 4096}))
    (export / "model.safetensors").write_bytes(secrets.token_bytes(4096))
    for f in sorted(export.iterdir()):
        tracker.log_artifact(f, "model")
    tracker.finish()

    name = "crawl2chat-base-http-test"
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(tracker.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # stored by the server, not by us
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "candidate", mv.version)

    def read_back(client: MlflowClient) -> dict:
        run = client.get_run(tracker.run_id)
        fetched = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / f"dl-{time.monotonic_ns()}")))
        version = client.get_model_version_by_alias(name, "candidate")
        return {"status": run.info.status, "params": run.data.params,
                "loss": [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")],
                "files": sorted(str(p.relative_to(fetched)) for p in fetched.rglob("*") if p.is_file()),
                "sample": (fetched / "samples" / "step_00005.txt").read_text(),
                "weights": hashlib.sha256((fetched / "model" / "model.safetensors").read_bytes()).hexdigest(),
                "version": (version.version, version.run_id, version.source)}

    before = read_back(client)
    assert before["status"] == "FINISHED" and before["params"]["pretrain.steps"] == "5"
    assert before["loss"] == [(s, 5.0 / s) for s in range(1, 6)]
    assert before["files"] == ["model/config.json", "model/model.safetensors", "samples/step_00005.txt"]
    assert before["weights"] == hashlib.sha256((export / "model.safetensors").read_bytes()).hexdigest()

    port = mlflow_server.info["port"]
    mlflow_server.kill()
    assert not mlflow_server.members()
    restarted = services.start_mlflow_server(postgres, mlflow_server.info["artifacts"], port=port)
    started.append(restarted)
    assert read_back(MlflowClient(restarted.url)) == before


def test_mlflow_basic_auth_admits_the_user_and_refuses_a_wrong_password(postgres, started, tmp_path, monkeypatch):
    import requests
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    admin, password = "admin", secrets.token_urlsafe(12)
    svc = services.start_mlflow_server(postgres, tmp_path / "artifacts", auth=(admin, password), log_dir=tmp_path)
    started.append(svc)
    api = f"{svc.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert requests.get(api, auth=(admin, password), timeout=30).status_code == 200
    assert requests.get(api, auth=(admin, "not-" + password), timeout=30).status_code == 401
    assert requests.get(api, timeout=30).status_code == 401

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(svc.url)
    exp = client.create_experiment("crawl2chat/auth-check")
    assert client.get_experiment(exp).name == "crawl2chat/auth-check"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-" + password)
    with pytest.raises(MlflowException, match="401|nauthorized"):
        MlflowClient(svc.url).get_experiment(exp)
    svc.stop()


# ------------------------------------------------------------------------------------------
# loopback only, no secret on a command line, nothing left behind

def test_services_listen_only_on_loopback_and_keep_secrets_off_command_lines(
        started, cluster, connect, postgres, mlflow_server):
    live = [svc for svc in started if svc.members()]
    assert {"spark-cluster", "spark-connect", "postgres", "mlflow"} <= {svc.name for svc in live}
    listening = {svc.name: services.listening_addresses(svc) for svc in live}
    listening.update({svc.name: svc.info["listening"] for svc in started if "listening" in svc.info})
    for name, addresses in listening.items():
        # the daemon's code server talks over a unix socket: it may listen on no port at all
        assert addresses or name == "dagster-daemon", name
        assert all(services.is_loopback(ip) for ip, _ in addresses), (name, addresses)
    hidden = [postgres.info["password"], cluster.env["SPARK_AUTH_SECRET"],
              connect.env["SPARK_CONNECT_AUTHENTICATE_TOKEN"]]
    assert command_lines_holding(hidden) == []


def test_stopping_every_service_leaves_no_process_behind(started):
    assert started
    for svc in reversed(started):
        svc.stop()
    assert services.strays() == []


# A client of Spark Connect in a process of its own (PySpark marks a process that used Connect as
# a Connect client for good): prints RAN <n> if its Python UDF ran, else REFUSED <error>.
