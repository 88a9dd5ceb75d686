"""Secrets never reach error messages, logs or Dagster event logs.

Recognisable canary values are put where secrets live (AWS_SECRET_ACCESS_KEY, DAGSTER_PG_PASSWORD, a
Jetson private key and its passphrase); then the storage and deployment layers are made to fail and every
exception string (with its chain and notes), every log record (DEBUG included) and every event of the
failing materialization is searched for them.
"""
from __future__ import annotations

import logging
import subprocess
import traceback
from pathlib import Path

import dagster as dg
import pytest

from resources.engine import EngineBuildError, JetsonSSHEngineBuilder
from resources.storage import S3ArtifactStore, S3RequestError, StorageError

try:
    from reliability.conftest import s3_bucket
except ImportError:  # pragma: no cover
    from tests.reliability.conftest import s3_bucket
try:
    from s3_server import REGION, create_bucket
    from ssh_server import openssh_server, sshd_missing_reason
except ImportError:  # pragma: no cover
    from tests.s3_server import REGION, create_bucket
    from tests.ssh_server import openssh_server, sshd_missing_reason

AWS_CANARY = "LBZFCANARYawsSecretQ7x9Zr2Lm4Np6Vb8Kd0Hs3Jf5Tg1"
PG_CANARY = "LBZFCANARY-pg-password-Zq81Wm"
SSH_CANARY = "LBZFCANARY-jetson-passphrase-Rt55"
CANARIES = (AWS_CANARY, PG_CANARY, SSH_CANARY)


def everything(exc: BaseException) -> str:
    """The exception as any handler could show it: str, repr, full chained traceback, notes."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc)),
                      *getattr(exc, "__notes__", [])])


def leaked(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


@pytest.fixture
def canary_env(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_CANARY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)  # a token is sent as a header; not under test here
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PG_CANARY)


@pytest.mark.fault("secrets.aws_secret_in_errors")
def test_storage_errors_and_logs_hold_no_secret(fault, canary_env, fault_proxy, s3_endpoint, caplog):
    bucket = create_bucket(s3_endpoint)
    store = S3ArtifactStore(bucket=bucket, endpoint_url=fault_proxy.url, region_name=REGION,
                            kms_key_id="arn:aws:kms:us-east-1:123456789012:key/abc", multipart_threshold_mb=5)
    caplog.set_level(logging.DEBUG)
    fault_proxy.add(method="PUT", query="partNumber=", action="cut_request")
    fault_proxy.add(method="GET", action="status", status=403, code="AccessDenied", message="Access Denied")
    fault_proxy.add(method="PUT", action="status", status=403, code="AccessDenied",
                    message="not authorized to perform kms:GenerateDataKey (KMS.AccessDeniedException)")
    texts = []
    fault.sources(s3_bucket(s3_endpoint, bucket))
    fault.watch(s3_bucket(s3_endpoint, bucket))
    for key, action in (("reports/r.json", lambda: store.write_bytes("reports/r.json", b"{}")),
                        ("reports/r.json", lambda: store.read_bytes("reports/r.json")),
                        ("models/m/big.pt", lambda: store.write_bytes("models/m/big.pt", b"\0" * (6 * 1024 * 1024)))):
        with fault.rejects(S3RequestError, f"s3://{bucket}/{key}", "Remedy:") as seen:
            action()
        texts.append(everything(seen["error"]))
    logs = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert len(caplog.records) > 0
    assert leaked("\n".join(texts)) == [] and leaked(logs) == [], "a secret leaked"


@pytest.mark.fault("secrets.kms_and_event_log")
def test_failing_materialization_event_log_holds_no_secret(fault, canary_env, fault_proxy, s3_endpoint, caplog):
    from assets.footage import video_manifest
    from dagster._serdes import serialize_value

    bucket = create_bucket(s3_endpoint)
    store = S3ArtifactStore(bucket=bucket, endpoint_url=fault_proxy.url, region_name=REGION,
                            kms_key_id="arn:aws:kms:us-east-1:123456789012:key/abc")
    fault_proxy.add(action="status", status=403, code="AccessDenied",
                    message="not authorized to perform kms:Decrypt (KMS.AccessDeniedException)")
    caplog.set_level(logging.DEBUG)
    fault.sources(s3_bucket(s3_endpoint, bucket))
    with dg.instance_for_test() as instance:
        with fault.rejects(S3RequestError, f"s3://{bucket}/raw/videos/", "AccessDenied", "Remedy:"):
            dg.materialize([video_manifest], resources={"store": store}, instance=instance)
        (run,) = instance.get_runs()
        entries = instance.all_logs(run.run_id)
        failures = [e for e in entries if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"]
        assert failures, "the step did not fail"
        dump = "\n".join(serialize_value(e) for e in entries)
        assert "AccessDenied" in failures[0].dagster_event.step_failure_data.error.to_string()
        assert "AccessDenied" in dump
    logs = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert leaked(dump) == [] and leaked(logs) == []


@pytest.mark.fault("secrets.deployment_errors")
def test_jetson_key_and_passphrase_never_reach_errors(fault, canary_env, tmp_path, caplog):
    reason = sshd_missing_reason()
    if reason:
        pytest.skip(reason)
    key = tmp_path / "jetson_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", SSH_CANARY, "-C", "lbzf", "-f", str(key)],
                   check=True, capture_output=True)
    key_body = "".join(key.read_text().splitlines()[1:-1])[:40]  # a slice of the private key material
    caplog.set_level(logging.DEBUG)
    with openssh_server(tmp_path / "sshd") as server:
        # the passphrase-protected key is authorised, but the pipeline is never given the passphrase
        (server.workdir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        builder = JetsonSSHEngineBuilder(host=server.host, port=server.port, user=server.user, key_path=str(key),
                                         known_hosts_path=str(server.known_hosts), retries=1, connect_timeout_s=5)
        ok, why = builder.availability()
        assert not ok
        onnx = tmp_path / "m.onnx"
        onnx.write_bytes(b"not really onnx")
        fault.sources(onnx, key)
        with fault.rejects(EngineBuildError, server.host, "Remedy:") as seen:
            builder.build(onnx, tmp_path / "out", engine_name="yolov8n_lbzf_v0")
    error = seen["error"]  # names the key file and its setting, never the passphrase or the key's contents
    assert (error.file, error.field, error.value) == (str(key), "LBZF_JETSON_KEY_PATH", str(key))
    text = everything(error) + "\n" + why + "\n" + repr(vars(error))
    logs = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert leaked(text) == [] and leaked(logs) == []
    assert key_body not in text and key_body not in logs


@pytest.mark.fault("storage.s3_error_names_key")
def test_s3_errors_name_the_key_and_a_remedy(fault, canary_env, fault_proxy, s3_endpoint):
    """A denied or failing S3 call names the object (s3://bucket/key), S3's error code and what to do."""
    bucket = create_bucket(s3_endpoint)
    store = S3ArtifactStore(bucket=bucket, endpoint_url=fault_proxy.url, region_name=REGION,
                            kms_key_id="arn:aws:kms:us-east-1:123456789012:key/abc")
    fault_proxy.add(method="GET", action="status", status=403, code="AccessDenied", message="Access Denied")
    key = "reports/stage_a/stage_a_report.json"
    fault.sources(s3_bucket(s3_endpoint, bucket))
    with fault.rejects(StorageError, f"s3://{bucket}/{key}", "AccessDenied", "Remedy:", "IAM") as seen:
        store.read_bytes(key)
    assert isinstance(seen["error"], S3RequestError) and seen["error"].status == 403
    fault_proxy.add(method="PUT", action="status", status=403, code="KMS.DisabledException",
                    message="key disabled")
    with fault.rejects(StorageError, f"s3://{bucket}/models/m.json", "KMS.DisabledException",
                       "LBZF_S3_KMS_KEY_ID", "never falls back") as seen:
        store.write_bytes("models/m.json", b"{}")
    fault_proxy.add(method="GET", query="list-type=2", action="status", status=403, code="AccessDenied",
                    message="Access Denied")
    with fault.rejects(StorageError, f"s3://{bucket}/exports/", "ListObjectsV2", "Remedy:"):
        list(store.list_keys("exports/"))
    assert leaked(everything(seen["error"])) == []
