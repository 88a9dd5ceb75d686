"""The production instance config (deploy/dagster.prod.yaml) against a real PostgreSQL server.

A throwaway PostgreSQL (tests/pg_server.py) on loopback that only accepts TLS; DAGSTER_HOME holding
deploy/dagster.prod.yaml as it ships (plus only `endpoint_url` for compute logs, pointed at the loopback
moto S3 server with a moto KMS key); the DAGSTER_PG_* variables set as in production. A tiny asset job is submitted with
`dagster job launch` (so it goes through the QueuedRunCoordinator and waits QUEUED), `dagster-daemon run`
dequeues and launches it, and the run, its events, the daemon heartbeats and the materialization are
then read back from PostgreSQL with psycopg2, and the step's stdout from the SSE-KMS-encrypted bucket.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

try:
    from tests.pg_server import postgres_missing_reason, postgres_server
    from tests.s3_server import client, create_bucket
except ImportError:  # pragma: no cover - depends on how pytest was started
    from pg_server import postgres_missing_reason, postgres_server
    from s3_server import client, create_bucket

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

PROBE_DEFS = '''
import dagster as dg


@dg.asset
def pg_probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    print("pg-probe stdout line for the compute log manager")
    context.log.info("pg-probe event log line")
    return dg.MaterializeResult(metadata={"answer": 42})


pg_probe_job = dg.define_asset_job("pg_probe_job", selection=[pg_probe])
defs = dg.Definitions(assets=[pg_probe], jobs=[pg_probe_job])
'''


@pytest.fixture(scope="module")
def pg():
    reason = postgres_missing_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server(require_tls=True) as server:  # connections without TLS are rejected
        yield server


def _env(dagster_home: Path, pg, bucket: str, kms_key_arn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "LBZF_"))}
    env.update({
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_DB": pg.dbname,
        "DAGSTER_PG_USERNAME": pg.user, "DAGSTER_PG_PASSWORD": "not-checked-by-trust-auth",
        # TLS as in production (the test server has a self-signed certificate; libpq verifies it)
        "DAGSTER_PG_SSLMODE": "require", "PGSSLMODE": "require", "PGSSLROOTCERT": str(pg.root_cert),
        "LBZF_S3_BUCKET": bucket, "LBZF_S3_KMS_KEY_ID": kms_key_arn,
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _query(pg, sql: str, params: tuple = ()) -> list[tuple]:
    conn = pg.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        conn.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def _daemon(workdir: Path, env: dict[str, str], log: Path):
    """`dagster-daemon run` in its own process group; at the end it and the code server it started stop."""
    with open(log, "wb") as handle:
        proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-f", "probe_defs.py"], cwd=workdir, env=env,
                                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the daemon's gRPC code server, if it outlived it
            if not _group_alive(proc.pid):
                break
            os.killpg(proc.pid, sig)
            deadline = time.monotonic() + 10
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)


@pytest.fixture(scope="module")
def queued_run(pg, s3_endpoint, tmp_path_factory):
    """One run of pg_probe_job submitted to the queue and carried out by dagster-daemon."""
    workdir = tmp_path_factory.mktemp("pg_instance")
    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir()
    config = yaml.safe_load((REPO / "deploy" / "dagster.prod.yaml").read_text())
    config["compute_logs"]["config"]["endpoint_url"] = s3_endpoint  # the only change: where S3 is
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (workdir / "probe_defs.py").write_text(PROBE_DEFS)
    bucket = create_bucket(s3_endpoint)
    kms_key_arn = client(s3_endpoint, "kms").create_key(Description="lbzf compute logs")["KeyMetadata"]["Arn"]
    env = _env(dagster_home, pg, bucket, kms_key_arn)

    launch = subprocess.run([str(BIN / "dagster"), "job", "launch", "-f", "probe_defs.py", "-j", "pg_probe_job"],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    rows = _query(pg, "SELECT run_id, status FROM runs WHERE pipeline_name = %s", ("pg_probe_job",))
    assert len(rows) == 1, rows
    run_id, status_before_daemon = rows[0]

    daemon_log = workdir / "daemon.log"
    status = status_before_daemon
    with _daemon(workdir, env, daemon_log) as daemon:
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline and status not in TERMINAL:
            assert daemon.poll() is None, f"dagster-daemon exited:\n{daemon_log.read_text(errors='replace')}"
            time.sleep(0.5)
            status = _query(pg, "SELECT status FROM runs WHERE run_id = %s", (run_id,))[0][0]
    assert status == "SUCCESS", \
        f"run {run_id} is {status}\n--- daemon log ---\n{daemon_log.read_text(errors='replace')}"
    return {"run_id": run_id, "status_before_daemon": status_before_daemon, "home": dagster_home, "env": env,
            "bucket": bucket, "endpoint": s3_endpoint,
            "sse_key": config["compute_logs"]["config"].get("upload_extra_args", {}).get("SSEKMSKeyId")}


def test_launch_only_queues_the_run(queued_run):
    # QueuedRunCoordinator: `dagster job launch` stores the run and leaves it for the daemon.
    assert queued_run["status_before_daemon"] == "QUEUED"


def test_run_and_its_events_are_stored_in_postgres(pg, queued_run):
    run_id = queued_run["run_id"]
    ((status, job_name, body),) = _query(pg, "SELECT status, pipeline_name, run_body FROM runs WHERE run_id = %s",
                                         (run_id,))
    assert (status, job_name) == ("SUCCESS", "pg_probe_job")
    assert json.loads(body)["run_id"] == run_id

    import dagster as dg

    events = _query(pg, "SELECT id, dagster_event_type, event FROM event_logs WHERE run_id = %s ORDER BY id",
                    (run_id,))
    order = [kind for _, kind, _ in events if kind]
    kinds = {name: dg.DagsterEventType[name].value for name in (
        "RUN_ENQUEUED", "RUN_STARTING", "RUN_START", "STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS",
        "RUN_SUCCESS")}  # stored under their serialized names (RUN_ENQUEUED is PIPELINE_ENQUEUED)
    for name, kind in kinds.items():
        assert kind in order, (name, order)
    # the queue came first: enqueued by the CLI, then launched by the daemon, then executed
    assert order.index(kinds["RUN_ENQUEUED"]) < order.index(kinds["RUN_STARTING"]) \
        < order.index(kinds["RUN_START"]) < order.index(kinds["RUN_SUCCESS"])
    assert any("pg-probe event log line" in event for _, _, event in events)

    assets = {key for (key,) in _query(pg, "SELECT asset_key FROM asset_keys")}
    assert '["pg_probe"]' in assets
    heartbeats = {kind for (kind,) in _query(pg, "SELECT daemon_type FROM daemon_heartbeats")}
    assert {"QUEUED_RUN_COORDINATOR", "SCHEDULER", "SENSOR"} <= heartbeats


def test_dagster_reached_postgres_over_tls(pg, queued_run):
    """The server rejects connections without TLS, so everything Dagster stored came over TLS."""
    import psycopg2

    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        pg.connect(sslmode="disable")
    ((stored,),) = _query(pg, "SELECT count(*) FROM event_logs WHERE run_id = %s", (queued_run["run_id"],))
    assert stored > 5


def test_instance_reads_the_same_run_back_through_dagster(queued_run, monkeypatch):
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    for key, value in queued_run["env"].items():
        if key.startswith(("DAGSTER_PG_", "LBZF_S3_")):
            monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(queued_run["home"])) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        run = instance.get_run_by_id(queued_run["run_id"])
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(dg.AssetKey("pg_probe"))
        assert event is not None and event.run_id == queued_run["run_id"]
        assert event.asset_materialization.metadata["answer"].value == 42
    # nothing fell back to the SQLite defaults under DAGSTER_HOME
    assert not list(queued_run["home"].rglob("*.db"))


def test_step_output_is_in_s3_encrypted_with_kms(queued_run):
    s3 = client(queued_run["endpoint"])
    listing = s3.list_objects_v2(Bucket=queued_run["bucket"], Prefix="dagster/compute-logs/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert keys, "no compute logs were uploaded (see the run's ENGINE_EVENT errors in event_logs)"
    sse_key = queued_run["sse_key"]
    if isinstance(sse_key, dict) and "env" in sse_key:  # what the config names, as the run worker sees it
        sse_key = queued_run["env"][sse_key["env"]]
    found = False
    for key in keys:
        head = s3.head_object(Bucket=queued_run["bucket"], Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        if sse_key:
            assert head["SSEKMSKeyId"].rsplit("/", 1)[-1] == sse_key.rsplit("/", 1)[-1], (key, head["SSEKMSKeyId"])
        body = s3.get_object(Bucket=queued_run["bucket"], Key=key)["Body"].read()
        found = found or b"pg-probe stdout line for the compute log manager" in body
    assert found, keys
