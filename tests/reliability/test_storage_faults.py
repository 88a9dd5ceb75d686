"""Storage faults, injected on the wire by the S3 fault proxy in front of moto (boto3 is never patched),
and on the local store with real files."""
from __future__ import annotations

import io
import os
import threading
import time

import pytest

from resources.storage import (ArtifactConflictError, InvalidKeyError, LocalArtifactStore, S3ArtifactStore,
                               S3RequestError, SourceReadError, SourceWriteError)

try:
    from s3_server import REGION, client, create_bucket
except ImportError:  # pragma: no cover
    from tests.s3_server import REGION, client, create_bucket
try:
    from reliability.conftest import s3_bucket, tree_hashes
except ImportError:  # pragma: no cover
    from tests.reliability.conftest import s3_bucket, tree_hashes

MiB = 1024 * 1024
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


def proxied_store(proxy, bucket: str, **kw) -> S3ArtifactStore:
    return S3ArtifactStore(bucket=bucket, endpoint_url=proxy.url, region_name=REGION, **kw)


def open_uploads(endpoint: str, bucket: str) -> list:
    return client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])


@pytest.mark.fault("storage.s3_500")
def test_s3_500_is_survived_by_retries(fault, fault_proxy, s3_endpoint):
    bucket = create_bucket(s3_endpoint)
    store = proxied_store(fault_proxy, bucket)
    data = os.urandom(4096)
    fault.sources(data)
    fault.watch(s3_bucket(s3_endpoint, bucket))
    fault_proxy.add(method="PUT", action="status", status=500, code="InternalError", times=2)
    store.write_bytes("models/m/eval_v0.json", data)
    injected = [e for e in fault_proxy.log if e[2].startswith("500")]
    assert len(injected) == 2, fault_proxy.log
    assert client(s3_endpoint).get_object(Bucket=bucket, Key="models/m/eval_v0.json")["Body"].read() == data
    fault.observed("survived", f"{len(injected)} x 500 then success")


@pytest.mark.fault("storage.s3_slowdown")
def test_s3_slowdown_throttling_is_survived_with_backoff(fault, fault_proxy, s3_endpoint):
    bucket = create_bucket(s3_endpoint)
    seed = S3ArtifactStore(bucket=bucket, endpoint_url=s3_endpoint, region_name=REGION)
    seed.write_bytes("frames/ops/v1/manifest.parquet", b"P" * 1000)
    fault.sources(s3_bucket(s3_endpoint, bucket, "frames/ops/v1/manifest.parquet"))
    fault.watch(s3_bucket(s3_endpoint, bucket))
    store = proxied_store(fault_proxy, bucket)
    fault_proxy.add(action="status", status=503, code="SlowDown", message="Please reduce your request rate.",
                    times=2)
    started = time.monotonic()
    assert store.read_bytes("frames/ops/v1/manifest.parquet") == b"P" * 1000
    store.write_bytes("frames/ops/v1/out.bin", b"x")
    assert len([e for e in fault_proxy.log if "SlowDown" in e[2]]) == 2
    assert time.monotonic() - started < 30
    fault.observed("survived", "2 x 503 SlowDown then success")


@pytest.mark.fault("storage.get_cut_midbody")
def test_download_cut_mid_body_is_retried_and_complete(fault, fault_proxy, s3_endpoint, tmp_path):
    bucket = create_bucket(s3_endpoint)
    data = os.urandom(256 * 1024)
    S3ArtifactStore(bucket=bucket, endpoint_url=s3_endpoint, region_name=REGION).write_bytes("models/m/m.onnx", data)
    fault.sources(s3_bucket(s3_endpoint, bucket))
    store = proxied_store(fault_proxy, bucket)
    fault_proxy.add(method="GET", path=r"/models/m/m\.onnx", action="cut_response", times=1)
    target = store.download_file("models/m/m.onnx", tmp_path / "m.onnx")
    assert target.read_bytes() == data
    assert [e[2] for e in fault_proxy.log].count("cut_response") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left
    fault.observed("survived", "GET cut at half the body, retried")


@pytest.mark.fault("storage.upload_part_cut")
def test_connection_cut_mid_upload_leaves_nothing_and_aborts(fault, fault_proxy, s3_endpoint):
    bucket = create_bucket(s3_endpoint)
    final = "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt"
    old = b"previous complete model"
    S3ArtifactStore(bucket=bucket, endpoint_url=s3_endpoint, region_name=REGION).write_bytes(final, old)
    store = proxied_store(fault_proxy, bucket, multipart_threshold_mb=5)
    fault_proxy.add(method="PUT", query="partNumber=", action="cut_request")  # every UploadPart, every retry
    payload = os.urandom(6 * MiB)
    fault.sources(payload)
    fault.watch(s3_bucket(s3_endpoint, bucket))
    with fault.rejects(S3RequestError, f"s3://{bucket}/{final}", "Remedy:", "nothing partial was left") as seen:
        store.upload_fileobj(io.BytesIO(payload), final, size_hint=len(payload))
    assert seen["error"].operation == "multipart upload" and seen["error"].code, vars(seen["error"])
    cuts = [e for e in fault_proxy.log if e[2] == "cut_request"]
    assert cuts, fault_proxy.log
    assert any(e[0] == "DELETE" and "uploadId=" in e[1] for e in fault_proxy.log), "multipart upload not aborted"
    assert open_uploads(s3_endpoint, bucket) == []
    assert client(s3_endpoint).get_object(Bucket=bucket, Key=final)["Body"].read() == old  # old object intact
    fault.partial(len(open_uploads(s3_endpoint, bucket)))


@pytest.mark.fault("storage.kms_access_denied")
def test_kms_access_denied_is_an_error_without_unencrypted_fallback(fault, fault_proxy, s3_endpoint):
    bucket = create_bucket(s3_endpoint)
    store = proxied_store(fault_proxy, bucket, kms_key_id=KMS_KEY)
    fault_proxy.add(header=("x-amz-server-side-encryption", "aws:kms"), action="status", status=403,
                    code="AccessDenied", message="User: arn:aws:iam::123456789012:role/lbzf is not authorized to "
                    "perform: kms:GenerateDataKey (KMS.AccessDeniedException)")
    fault.sources(s3_bucket(s3_endpoint, bucket))
    with fault.rejects(S3RequestError, f"s3://{bucket}/reports/stage_a/stage_a_report.json", "AccessDenied",
                       "LBZF_S3_KMS_KEY_ID"):
        store.write_bytes("reports/stage_a/stage_a_report.json", b"{}")
    with fault.rejects(S3RequestError, f"s3://{bucket}/datasets/lbzf_person_v0/dataset_split_v0.csv",
                       "AccessDenied", "LBZF_S3_KMS_KEY_ID"):
        store.write_if_absent_or_same("datasets/lbzf_person_v0/dataset_split_v0.csv", b"a,b\n")
    puts = [e for e in fault_proxy.log if e[0] in ("PUT", "POST")]
    assert puts and all(e[2].startswith("403") for e in puts), f"a write got past the KMS check: {puts}"
    listed = client(s3_endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
    fault.partial(len(listed))
    assert listed == [], "an object was written (unencrypted fallback?)"


@pytest.mark.fault("storage.concurrent_versioned_writer")
def test_concurrent_writer_to_a_versioned_key_is_a_conflict(fault, s3_endpoint):
    bucket = create_bucket(s3_endpoint)
    key = "datasets/lbzf_person_v0/dataset_split_v0.csv"
    a = S3ArtifactStore(bucket=bucket, endpoint_url=s3_endpoint, region_name=REGION)
    b = S3ArtifactStore(bucket=bucket, endpoint_url=s3_endpoint, region_name=REGION)
    ours, theirs = b"frame_key,split\nf1,train\n", b"frame_key,split\nf1,test\n"
    fault.sources(ours, theirs)
    fault.watch(s3_bucket(s3_endpoint, bucket))
    barrier, results = threading.Barrier(2), {}

    def write(name, store, data):
        barrier.wait()
        try:
            results[name] = store.write_if_absent_or_same(key, data)
        except Exception as exc:  # noqa: BLE001
            results[name] = exc

    threads = [threading.Thread(target=write, args=("a", a, ours)),
               threading.Thread(target=write, args=("b", b, theirs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in results.items() if r is True]
    losers = [r for r in results.values() if isinstance(r, ArtifactConflictError)]
    assert len(winners) == 1 and len(losers) == 1, results
    stored = a.read_bytes(key)
    assert stored == (ours if winners == ["a"] else theirs)
    with fault.rejects(ArtifactConflictError, key, "sha256", "new version key"):
        raise losers[0]
    # the same writer repeating the same bytes is not a conflict (idempotent re-run)
    assert (a if winners == ["a"] else b).write_if_absent_or_same(key, stored) is False


class _BreaksHalfway(io.RawIOBase):
    def __init__(self, data: bytes):
        self.inner = io.BytesIO(data)
        self.limit = len(data) // 2

    def readable(self):
        return True

    def read(self, size=-1):
        if self.inner.tell() >= self.limit:
            raise ConnectionResetError("source stream cut")
        return self.inner.read(min(size if size > 0 else self.limit, self.limit - self.inner.tell()))


@pytest.mark.fault("storage.local_write_interrupted")
def test_local_write_interrupted_leaves_old_object_and_no_temp(fault, tmp_path):
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    key = "frames/ops/v1/manifest.parquet"
    store.write_bytes(key, b"old complete bytes")
    data = os.urandom(3 * MiB)
    fault.sources(data)
    with fault.rejects(SourceReadError, key, "source stream cut", "Remedy:") as seen:
        store.upload_fileobj(_BreaksHalfway(data), key)
    assert isinstance(seen["error"].__cause__, ConnectionResetError)  # the stream's own error, kept as the cause
    assert seen["error"].file == store.uri(key) and 0 < seen["error"].bytes_read <= len(data) // 2
    assert store.read_bytes(key) == b"old complete bytes"
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.name.startswith(".tmp-")]
    fault.partial(len(leftovers))
    assert leftovers == []


@pytest.mark.fault("storage.source_write")
def test_source_prefixes_are_read_only(fault, tmp_path):
    root = tmp_path / "store"
    LocalArtifactStore(root=str(root), allow_source_writes=True).write_bytes("raw/videos/a.mp4", b"video")
    before = tree_hashes(root)
    store = LocalArtifactStore(root=str(root))
    with fault.rejects(SourceWriteError, "raw/videos/a.mp4", "read-only"):
        store.write_bytes("raw/videos/a.mp4", b"overwritten")
    with pytest.raises(SourceWriteError):
        store.delete("raw/videos/a.mp4")
    fault.source(before, tree_hashes(root))
    assert tree_hashes(root) == before


@pytest.mark.fault("storage.key_traversal")
def test_key_traversal_is_refused(fault, tmp_path):
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    fault.sources(tmp_path)  # nothing is written anywhere
    with fault.rejects(InvalidKeyError, "'..' segment", "frames/../../etc/passwd"):
        store.write_bytes("frames/../../etc/passwd", b"x")
    assert not (tmp_path / "etc").exists() and not any((tmp_path).rglob("passwd"))


_WRITER = r"""
import io, sys, time
sys.path.insert(0, sys.argv[1])
from resources.storage import LocalArtifactStore, S3ArtifactStore

class Slow(io.RawIOBase):  # a source that keeps producing, slowly: the writer is killed mid-way
    def readable(self):
        return True
    def readinto(self, b):
        time.sleep(0.02)
        n = min(len(b), 256 * 1024)
        b[:n] = b"\x07" * n
        return n

kind, where, key = sys.argv[2], sys.argv[3], sys.argv[4]
if kind == "local":
    store = LocalArtifactStore(root=where)
else:
    endpoint, bucket = where.split("|")
    store = S3ArtifactStore(bucket=bucket, endpoint_url=endpoint, region_name="us-east-1", multipart_threshold_mb=5)
store.upload_fileobj(io.BufferedReader(Slow(), 1024 * 1024), key)
"""


def _kill_when(proc, ready, timeout=60.0):
    import signal
    import subprocess  # noqa: F401

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"writer ended before the kill: {proc.communicate()}")
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the writer never reached the point to kill it")


@pytest.mark.fault("storage.local_writer_killed")
def test_local_writer_killed_mid_write_leaves_no_partial_object(fault, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "store"
    key = "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.onnx"
    store = LocalArtifactStore(root=str(root))
    store.write_bytes(key, b"the previous complete model")
    fault.sources((store, key))
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, repo, "local", str(root), key],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    folder = root / "models" / "yolov8n_lbzf_v0"
    _kill_when(proc, lambda: any(p.name.startswith(".tmp-") and p.stat().st_size > 2 * MiB
                                 for p in folder.iterdir()))
    assert proc.returncode == -9
    assert store.read_bytes(key) == b"the previous complete model"  # old object intact
    listed = [i.key for i in store.list_keys("models/")]
    assert listed == [key], listed  # the orphaned temp file is not an object
    orphans = [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
    fault.partial(0 if listed == [key] else 1)
    # the daily housekeeping sweep leaves young temp files alone (a write may be in flight) and removes old ones
    assert store.sweep_incomplete(older_than_s=3600) == []
    swept = store.sweep_incomplete(older_than_s=0)
    assert sorted(Path(s).name for s in swept) == sorted(orphans) and len(orphans) >= 1
    assert [p.name for p in folder.iterdir()] == ["yolov8n_lbzf_v0.onnx"]
    assert store.read_bytes(key) == b"the previous complete model"
    fault.observed("survived", f"SIGKILL mid-write: old object intact, {len(orphans)} orphaned .tmp- file(s) "
                   "invisible to readers and listings, removed by store_housekeeping_job's sweep")


@pytest.mark.fault("storage.s3_writer_killed")
def test_s3_writer_killed_mid_multipart_leaves_no_object(fault, s3_endpoint):
    import subprocess
    import sys
    from pathlib import Path

    bucket = create_bucket(s3_endpoint)
    key = "models/yolov8n_lbzf_v0/yolov8n_lbzf_v0.pt"
    repo = str(Path(__file__).resolve().parents[2])
    fault.sources(s3_bucket(s3_endpoint, bucket))  # empty before, empty after
    fault.watch(s3_bucket(s3_endpoint, bucket))  # after the sweep: no open upload
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, repo, "s3", f"{s3_endpoint}|{bucket}", key],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    s3 = client(s3_endpoint)

    def parts_sent():
        uploads = open_uploads(s3_endpoint, bucket)
        return bool(uploads) and bool(s3.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"])
                                      .get("Parts"))
    _kill_when(proc, parts_sent)
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    fault.partial(len(listed))
    assert listed == [], "an object appeared at the final key"
    left_open = open_uploads(s3_endpoint, bucket)
    assert len(left_open) == 1  # a killed process cannot abort its own upload
    store = S3ArtifactStore(bucket=bucket, endpoint_url=s3_endpoint, region_name=REGION)
    initiated = left_open[0]["Initiated"]  # moto dates every upload 2010-11-10: test the age cut around that
    age = time.time() - initiated.timestamp()
    assert store.sweep_incomplete(older_than_s=age + 86400) == []  # younger than the cut: may be in flight
    assert store.sweep_incomplete(older_than_s=max(age - 86400, 0)) == [key]
    assert open_uploads(s3_endpoint, bucket) == [] and s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    fault.observed("survived", f"SIGKILL mid-multipart: nothing at the final key; {len(left_open)} multipart "
                   "upload left open by the killed process, aborted by store_housekeeping_job's sweep (and by the "
                   "bucket's AbortIncompleteMultipartUpload rule in production)")
