"""Engine builders, against a real OpenSSH server on 127.0.0.1.

What is real: sshd (OpenSSH, started by the test as the current user on a free loopback port),
paramiko's transport with host-key checking, key authentication, SFTP uploads/downloads, the remote
shell commands (mkdir, mv, ln, cp, sha256sum, hostname, dpkg-query), exit statuses, retries, and all
the file handling, version probing and error paths of the builder.

What is stood in: the Jetson's ``trtexec`` is a shell script (``STANDIN_TRTEXEC`` below) that prints
TensorRT-style version lines and writes a deterministic "engine" (a header plus the sha256 of the ONNX
bytes and the precision) to ``--saveEngine``, failing when the ONNX holds a marker; and the device's
``/etc/nv_tegra_release``, ``/etc/nv_jetpack_release``, ``/usr/local/cuda/version.json`` and
``/proc/device-tree/model`` are files under a fake root (builder field ``probe_root``), so nothing is
written to the real /etc. There is no GPU and no TensorRT here.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import time
from pathlib import Path

import pytest

from pipeline.errors import missing_parts
from pipeline.hashing import sha256_file
from resources.engine import (
    DEFAULT_UNAVAILABLE_REASON,
    EngineBuilder,
    EngineBuildError,
    EngineBuildResult,
    EngineCompatibilityError,
    JetsonSSHEngineBuilder,
    LocalTensorRTEngineBuilder,
    UnavailableEngineBuilder,
    check_engine_compatible,
    parse_cuda_version,
    parse_l4t_release,
    parse_trt_version,
)

try:  # tests/ as a package or as a plain rootdir-relative directory
    from tests.ssh_server import free_port, keygen, known_hosts_line, openssh_server, sshd_missing_reason
except ImportError:  # pragma: no cover - depends on how pytest was started
    from ssh_server import free_port, keygen, known_hosts_line, openssh_server, sshd_missing_reason

FAIL_MARKER = b"LBZF_STANDIN_TRTEXEC_FAIL"
SLEEP_MARKER = b"LBZF_STANDIN_TRTEXEC_SLEEP"
ENGINE_HEADER = "LBZF-STANDIN-TRT-ENGINE v1"

# Stand-in for /usr/src/tensorrt/bin/trtexec (TensorRT 8.6.2 as on JetPack 6 / L4T 36 ... here 35.4.1).
STANDIN_TRTEXEC = r"""#!/bin/sh
# STAND-IN for NVIDIA trtexec (tests only): no TensorRT, no GPU.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # $0 $*"
onnx=""; engine=""; calib=""; precision="fp32"
for arg in "$@"; do
  case "$arg" in
    --onnx=*) onnx="${arg#--onnx=}" ;;
    --saveEngine=*) engine="${arg#--saveEngine=}" ;;
    --calib=*) calib="${arg#--calib=}" ;;
    --int8) precision="int8" ;;
    --fp16) [ "$precision" = "int8" ] || precision="fp16" ;;
  esac
done
if [ -z "$onnx" ]; then echo "=== Model Options ==="; echo "  --onnx=<file>"; exit 0; fi
echo "[I] TensorRT version: 8.6.2"
if [ ! -f "$onnx" ]; then echo "[E] Could not open file $onnx"; echo "&&&& FAILED TensorRT.trtexec"; exit 1; fi
if grep -q LBZF_STANDIN_TRTEXEC_SLEEP "$onnx"; then sleep 30; fi
if grep -q LBZF_STANDIN_TRTEXEC_FAIL "$onnx"; then
  echo "[E] [TRT] ModelImporter.cpp:771: ERROR: stand-in: unsupported operator LbzfBogusOp"
  echo "[E] Failed to parse onnx file"
  echo "&&&& FAILED TensorRT.trtexec [TensorRT v8602] # $0 $*"
  exit 1
fi
{
  echo "LBZF-STANDIN-TRT-ENGINE v1"
  echo "onnx_sha256=$(sha256sum "$onnx" | cut -d' ' -f1)"
  echo "precision=$precision"
  if [ -n "$calib" ]; then echo "calib_sha256=$(sha256sum "$calib" | cut -d' ' -f1)"; fi
} > "$engine"
echo "[I] Engine built in 1.0 sec."
echo "&&&& PASSED TensorRT.trtexec [TensorRT v8602] # $0 $*"
"""

pytestmark = pytest.mark.integration

_SKIP = sshd_missing_reason()
needs_sshd = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


def assert_parts(error: BaseException, file: str, field: str, value: object) -> None:
    """The error is the project's structured error with these file/field/value (and a remedy)."""
    assert missing_parts(error) == [], (missing_parts(error), str(error))
    assert (error.file, error.field, error.value) == (file, field, value)


def expected_engine(onnx: Path, precision: str, calib: Path | None = None) -> bytes:
    text = f"{ENGINE_HEADER}\nonnx_sha256={sha256_file(onnx)}\nprecision={precision}\n"
    if calib is not None:
        text += f"calib_sha256={sha256_file(calib)}\n"
    return text.encode()


def make_onnx(path: Path, doc: str = "lbzf test model") -> Path:
    """A tiny valid ONNX model (Relu); ``doc`` lands in the file's bytes, so markers can be planted."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["images"], ["output0"])
    graph = helper.make_graph([node], "lbzf_tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=doc)
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if _SKIP:
        pytest.skip(_SKIP)
    with openssh_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    """The stood-in device files and trtexec (see module docstring)."""
    root = tmp_path_factory.mktemp("jetson_root")
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text(
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n")
    (root / "etc/nv_jetpack_release").write_text("5.1.2-b104\n")
    (root / "usr/local/cuda").mkdir(parents=True)
    (root / "usr/local/cuda/version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "11.4.19"}}))
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    trtexec = root / "usr/src/tensorrt/bin/trtexec"
    trtexec.parent.mkdir(parents=True)
    trtexec.write_text(STANDIN_TRTEXEC)
    trtexec.chmod(0o755)
    return root


@pytest.fixture
def make_builder(sshd, fake_root, tmp_path):
    def _make(**overrides) -> JetsonSSHEngineBuilder:
        fields = dict(host=sshd.host, port=sshd.port, user=sshd.user, key_path=str(sshd.client_key),
                      known_hosts_path=str(sshd.known_hosts), remote_dir=str(tmp_path / "device" / "lbzf" / "engines"),
                      trtexec_path=str(fake_root / "usr/src/tensorrt/bin/trtexec"), probe_root=str(fake_root),
                      connect_timeout_s=5, command_timeout_s=60, retries=2, retry_backoff_s=0.01)
        fields.update(overrides)
        return JetsonSSHEngineBuilder(**fields)

    return _make


@pytest.fixture
def builder(make_builder) -> JetsonSSHEngineBuilder:
    return make_builder()


@pytest.fixture
def onnx_model(tmp_path) -> Path:
    return make_onnx(tmp_path / "yolov8n_person.onnx")


# --------------------------------------------------------------------------- build over SSH


@needs_sshd
def test_build_success_fetches_verified_engine_and_records_versions(builder, onnx_model, tmp_path):
    out_dir = tmp_path / "out"
    result = builder.build(onnx_model, out_dir, engine_name="yolov8n_person")

    assert result.status == "built" and result.built
    assert result.engine_path == out_dir / "yolov8n_person.engine"
    assert result.engine_path.read_bytes() == expected_engine(onnx_model, "fp16")
    assert result.engine_sha256 == sha256_file(result.engine_path)
    assert result.onnx_sha256 == sha256_file(onnx_model)
    assert result.precision == "fp16"
    assert result.versions == {
        "tensorrt": "8.6.2", "l4t": "35.4.1", "jetpack": "5.1.2-b104", "cuda": "11.4.19",
        "device": "NVIDIA Jetson Orin Nano Developer Kit", "hostname": socket.gethostname(),
    }
    assert "PASSED TensorRT.trtexec" in result.log_tail
    assert result.build_seconds > 0

    # Sidecar with versions and hashes; no temporaries left on either side.
    meta = json.loads((out_dir / "yolov8n_person.engine.json").read_text())
    assert result.metadata_path == out_dir / "yolov8n_person.engine.json"
    assert meta["engine_sha256"] == result.engine_sha256 and meta["onnx_sha256"] == result.onnx_sha256
    assert meta["versions"] == result.versions and meta["precision"] == "fp16" and meta["builder"] == "jetson-ssh"
    assert "--fp16" in meta["trtexec_command"] and "--memPoolSize=workspace:2048" in meta["trtexec_command"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["yolov8n_person.engine", "yolov8n_person.engine.json"]
    remote = Path(builder.effective_remote_dir)
    assert sorted(p.name for p in remote.iterdir()) == ["yolov8n_person.engine", "yolov8n_person.onnx"]
    assert (remote / "yolov8n_person.onnx").read_bytes() == onnx_model.read_bytes()

    md = result.to_metadata()
    json.dumps(md)  # plain
    assert md["status"] == "built" and md["engine_path"] == str(result.engine_path)


@needs_sshd
def test_trtexec_failure_raises_with_log_tail(builder, tmp_path):
    bad = make_onnx(tmp_path / "bad.onnx", doc=FAIL_MARKER.decode())
    out_dir = tmp_path / "out"
    with pytest.raises(EngineBuildError) as err:
        builder.build(bad, out_dir, engine_name="bad")
    exc = err.value
    assert builder.host in str(exc) and "exit status 1" in str(exc) and "Remedy:" in str(exc)
    assert "unsupported operator LbzfBogusOp" in exc.log_tail
    assert "FAILED TensorRT.trtexec" in str(exc)  # the tail is part of the message
    assert_parts(exc, str(bad), "trtexec exit status", 1)
    assert not list(out_dir.glob("*"))  # no engine, no temporaries
    assert not list(Path(builder.effective_remote_dir).glob("*.tmp"))
    failed = exc.to_result(precision="fp16")
    assert failed.status == "failed" and "exit status 1" in failed.reason and failed.log_tail


@needs_sshd
def test_trtexec_timeout_is_an_error(make_builder, tmp_path):
    slow = make_onnx(tmp_path / "slow.onnx", doc=SLEEP_MARKER.decode())
    started = time.monotonic()
    with pytest.raises(EngineBuildError, match="timed out"):
        make_builder(command_timeout_s=1).build(slow, tmp_path / "out", engine_name="slow")
    assert time.monotonic() - started < 15


@needs_sshd
def test_int8_refused_without_calibration_cache(builder, onnx_model, tmp_path):
    with pytest.raises(EngineBuildError, match="calibration cache"):
        builder.build(onnx_model, tmp_path / "out", engine_name="m", precision="int8")
    with pytest.raises(EngineBuildError, match="does not exist") as err:
        builder.build(onnx_model, tmp_path / "out", engine_name="m", precision="int8",
                      int8_calib_cache=tmp_path / "missing.cache")
    missing = str(tmp_path / "missing.cache")
    assert_parts(err.value, missing, "int8_calib_cache", missing)
    assert not Path(builder.effective_remote_dir).exists()  # refused before connecting: nothing transferred


@needs_sshd
def test_int8_with_calibration_cache_uploads_it(builder, onnx_model, tmp_path):
    calib = tmp_path / "calib.cache"
    calib.write_bytes(b"TRT-8602-EntropyCalibration2\nimages: 3c010a14\n")
    result = builder.build(onnx_model, tmp_path / "out", engine_name="m8", precision="int8", int8_calib_cache=calib)
    assert result.precision == "int8"
    assert result.engine_path.read_bytes() == expected_engine(onnx_model, "int8", calib)
    meta = json.loads(result.metadata_path.read_text())
    assert "--int8" in meta["trtexec_command"] and "--calib=" in meta["trtexec_command"]


@needs_sshd
def test_unreachable_host_fails_clearly_after_retries(make_builder, onnx_model, tmp_path, monkeypatch):
    calls = []
    original = JetsonSSHEngineBuilder._connect_once
    monkeypatch.setattr(JetsonSSHEngineBuilder, "_connect_once", lambda self: calls.append(1) or original(self))
    closed = free_port()  # nothing listens there
    b = make_builder(port=closed, retries=3, connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(EngineBuildError) as err:
        b.build(onnx_model, tmp_path / "out", engine_name="m")
    assert time.monotonic() - started < 10
    assert len(calls) == 3
    msg = str(err.value)
    assert f"127.0.0.1:{closed}" in msg and "after 3 attempt(s)" in msg and "Remedy:" in msg
    assert_parts(err.value, f"ssh://{b.user}@127.0.0.1:{closed}", "LBZF_JETSON_HOST", "127.0.0.1")
    ok, why = b.availability()
    assert not ok and "cannot reach" in why


@needs_sshd
def test_wrong_host_key_is_refused_without_retry_or_transfer(sshd, make_builder, onnx_model, tmp_path, monkeypatch):
    other = keygen(tmp_path / "impostor_key")
    known = tmp_path / "known_hosts_wrong"
    known.write_text(known_hosts_line(sshd.host, sshd.port, Path(f"{other}.pub")))
    calls = []
    original = JetsonSSHEngineBuilder._connect_once
    monkeypatch.setattr(JetsonSSHEngineBuilder, "_connect_once", lambda self: calls.append(1) or original(self))
    b = make_builder(known_hosts_path=str(known), retries=3)
    with pytest.raises(EngineBuildError) as err:
        b.build(onnx_model, tmp_path / "out", engine_name="m")
    msg = str(err.value)
    assert "does not match" in msg and f"{sshd.host}:{sshd.port}" in msg and "ssh-keygen -R" in msg
    assert len(calls) == 1  # a host-key error is not retried
    assert_parts(err.value, str(known), f"[{sshd.host}]:{sshd.port}", err.value.value)
    assert err.value.value in msg  # the fingerprint the server offered
    assert not Path(b.effective_remote_dir).exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@needs_sshd
def test_unknown_host_is_refused(sshd, make_builder, onnx_model, tmp_path):
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    b = make_builder(known_hosts_path=str(empty))
    with pytest.raises(EngineBuildError, match="is not in") as err:
        b.build(onnx_model, tmp_path / "out", engine_name="m")
    assert "ssh-keyscan" in str(err.value)
    assert_parts(err.value, str(empty), f"[{sshd.host}]:{sshd.port}", err.value.value)
    assert not Path(b.effective_remote_dir).exists()
    missing = make_builder(known_hosts_path=str(tmp_path / "nope"))
    ok, why = missing.availability()
    assert not ok and "known_hosts" in why


@needs_sshd
def test_wrong_client_key_is_an_auth_error(make_builder, onnx_model, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(EngineBuildError, match="authentication") as err:
        make_builder(key_path=str(stranger)).build(onnx_model, tmp_path / "out", engine_name="m")
    assert_parts(err.value, str(stranger), "LBZF_JETSON_KEY_PATH", str(stranger))
    with pytest.raises(EngineBuildError, match="does not exist") as err:  # refused before connecting
        make_builder(key_path=str(tmp_path / "no_key")).build(onnx_model, tmp_path / "out", engine_name="m")
    assert_parts(err.value, str(tmp_path / "no_key"), "LBZF_JETSON_KEY_PATH", str(tmp_path / "no_key"))


@needs_sshd
def test_version_probe_tolerates_missing_files(make_builder, tmp_path):
    empty_root = tmp_path / "bare_root"
    empty_root.mkdir()
    versions = make_builder(probe_root=str(empty_root)).probe_versions()
    assert versions["tensorrt"] == "8.6.2"  # trtexec still answers
    assert versions["l4t"] == versions["jetpack"] == versions["cuda"] == versions["device"] == "unknown"
    assert versions["hostname"] == socket.gethostname()
    none = make_builder(probe_root=str(empty_root), trtexec_path=str(empty_root / "no-trtexec")).probe_versions()
    assert none["tensorrt"] == "unknown"
    ok, why = make_builder(trtexec_path=str(empty_root / "no-trtexec")).availability()
    assert not ok and "trtexec not found" in why
    ok, why = make_builder().availability()
    assert ok, why


# --------------------------------------------------------------------------- compatibility


def test_check_engine_compatible_refuses_version_mismatch():
    device = {"tensorrt": "8.6.2", "l4t": "35.4.1", "jetpack": "5.1.2-b104", "hostname": "jetson-01"}
    check_engine_compatible({"versions": dict(device)}, device)  # same: fine
    check_engine_compatible({"versions": dict(device, tensorrt="8.6.2.3")}, device)  # python-API spelling

    with pytest.raises(EngineCompatibilityError) as err:
        check_engine_compatible({"versions": dict(device, tensorrt="8.5.2")}, device)
    msg = str(err.value)
    assert "8.5.2" in msg and "8.6.2" in msg and "rebuild on that device" in msg and "jetson-01" in msg
    assert_parts(err.value, err.value.file, "versions.tensorrt", "8.5.2")

    with pytest.raises(EngineCompatibilityError, match=r"L4T differs: engine built on 35\.3\.1, device has 35\.4\.1"):
        check_engine_compatible(dict(device, l4t="35.3.1"), device)  # a bare versions dict works too
    with pytest.raises(EngineCompatibilityError, match="JetPack"):
        check_engine_compatible({"versions": dict(device, jetpack="5.1.1-b56")}, device)
    with pytest.raises(EngineCompatibilityError, match="cannot be verified"):
        check_engine_compatible({"versions": dict(device, tensorrt="unknown")}, device)
    with pytest.raises(EngineCompatibilityError, match="L4T"):  # built off-Jetson (no L4T) -> refused on a Jetson
        check_engine_compatible({"versions": {"tensorrt": "8.6.2", "l4t": "unknown", "jetpack": "5.1.2"}}, device)


def test_version_parsers():
    assert parse_l4t_release("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic") == "36.3.0"
    assert parse_l4t_release("") == "unknown"
    assert parse_trt_version("&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec") == "8.5.2"
    assert parse_trt_version("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec") == "10.3.0"
    assert parse_trt_version("[I] TensorRT version: 8.6.2\n") == "8.6.2"
    assert parse_cuda_version("Cuda compilation tools, release 11.4, V11.4.315\n") == "11.4.315"
    assert parse_cuda_version('{"cuda": {"version": "12.2.140"}}') == "12.2.140"
    assert parse_cuda_version("bash: nvcc: command not found") == "unknown"


# --------------------------------------------------------------------------- deploy


def _deploy_dir(b: JetsonSSHEngineBuilder, mode: str) -> Path:
    return Path(b.effective_remote_dir) / mode


@needs_sshd
def test_deploy_is_atomic_and_keeps_previous(builder, tmp_path, monkeypatch):
    a = builder.build(make_onnx(tmp_path / "a.onnx", "model A"), tmp_path / "a", engine_name="person")
    b = builder.build(make_onnx(tmp_path / "b.onnx", "model B"), tmp_path / "b", engine_name="person")
    assert a.engine_sha256 != b.engine_sha256
    prod = _deploy_dir(builder, "production")

    first = builder.deploy_engine(a.engine_path, mode="production")
    assert first.changed and first.previous_path is None and first.remote_path == str(prod / "person.engine")
    assert (prod / "person.engine").read_bytes() == a.engine_path.read_bytes()
    assert json.loads((prod / "person.engine.json").read_text())["engine_sha256"] == a.engine_sha256

    second = builder.deploy_engine(b.engine_path, mode="production")
    assert second.changed and second.previous_sha256 == a.engine_sha256
    assert sha256_file(prod / "person.engine") == b.engine_sha256
    assert sha256_file(prod / "person.engine.previous") == a.engine_sha256
    assert json.loads((prod / "person.engine.json.previous").read_text())["engine_sha256"] == a.engine_sha256
    meta = json.loads((prod / "person.engine.json").read_text())
    assert meta["engine_sha256"] == b.engine_sha256 and meta["deploy_mode"] == "production"

    again = builder.deploy_engine(b.engine_path, mode="production")  # same engine: nothing moves
    assert not again.changed and sha256_file(prod / "person.engine.previous") == a.engine_sha256

    # A damaged upload (truncated in transit) is caught by the remote sha256sum; production stays as it was.
    def truncated_put(self, sftp, local, remote):
        data = Path(local).read_bytes()
        with sftp.open(remote, "wb") as handle:
            handle.write(data[: len(data) // 2] if str(local).endswith(".engine") else data)

    monkeypatch.setattr(JetsonSSHEngineBuilder, "_put_file", truncated_put)
    before = sorted(p.name for p in prod.iterdir())
    with pytest.raises(EngineBuildError, match="damaged") as err:
        builder.deploy_engine(a.engine_path, mode="production")  # roll forward to A again: damaged
    assert "left unchanged" in str(err.value)
    assert err.value.file.startswith(f"{builder.user}@") and err.value.file.endswith(".tmp")
    assert_parts(err.value, err.value.file, "sha256", err.value.value)
    assert sha256_file(prod / "person.engine") == b.engine_sha256
    assert sha256_file(prod / "person.engine.previous") == a.engine_sha256
    assert sorted(p.name for p in prod.iterdir()) == before  # temporaries removed
    monkeypatch.undo()

    shadow = builder.deploy_engine(a.engine_path, mode="shadow")
    assert shadow.remote_path == str(_deploy_dir(builder, "shadow") / "person.engine")
    assert sha256_file(_deploy_dir(builder, "shadow") / "person.engine") == a.engine_sha256
    assert sha256_file(prod / "person.engine") == b.engine_sha256


@needs_sshd
def test_deploy_refuses_incompatible_or_mismatched_engine(builder, onnx_model, tmp_path):
    built = builder.build(onnx_model, tmp_path / "out", engine_name="person")
    meta = json.loads(built.metadata_path.read_text())
    other = tmp_path / "other" / "person.engine"
    other.parent.mkdir()
    other.write_bytes(built.engine_path.read_bytes())
    (other.parent / "person.engine.json").write_text(json.dumps(dict(meta, versions=dict(meta["versions"], tensorrt="8.5.2"))))
    with pytest.raises(EngineCompatibilityError, match="rebuild on that device") as err:
        builder.deploy_engine(other, mode="production")
    assert not _deploy_dir(builder, "production").exists()
    assert_parts(err.value, str(other.parent / "person.engine.json"), "versions.tensorrt", "8.5.2")

    built.engine_path.write_bytes(b"tampered")
    with pytest.raises(EngineBuildError, match="is not the engine described") as err:
        builder.deploy_engine(built.engine_path, mode="production")
    assert_parts(err.value, str(built.metadata_path), "engine_sha256", meta["engine_sha256"])
    with pytest.raises(EngineBuildError, match="deploy mode") as err:
        builder.deploy_engine(built.engine_path, mode="staging")
    assert_parts(err.value, str(built.engine_path), "mode", "staging")


# --------------------------------------------------------------------------- no builder here


def test_unavailable_builder_never_builds(onnx_model, tmp_path):
    ub = UnavailableEngineBuilder()
    ok, why = ub.availability()
    assert not ok and "LBZF_JETSON_HOST" in why and "tensorrt" in why
    result = ub.build(onnx_model, tmp_path / "out", engine_name="m")
    assert isinstance(result, EngineBuildResult)
    assert result.status == "unavailable" and result.reason == DEFAULT_UNAVAILABLE_REASON
    assert result.engine_path is None and result.onnx_sha256 == sha256_file(onnx_model)
    assert json.loads(json.dumps(result.to_metadata()))["status"] == "unavailable"
    assert not (tmp_path / "out").exists()
    assert UnavailableEngineBuilder(reason="custom").availability() == (False, "custom")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed on this host")
def test_local_tensorrt_unavailable_here(onnx_model, tmp_path):
    lb = LocalTensorRTEngineBuilder()
    ok, why = lb.availability()
    assert not ok and "TensorRT" in why
    result = lb.build(onnx_model, tmp_path / "out", engine_name="m")
    assert result.status == "unavailable" and result.reason == why
    with pytest.raises(EngineBuildError, match="calibration cache"):
        lb.build(onnx_model, tmp_path / "out", engine_name="m", precision="int8")


def test_builders_are_dagster_resources(tmp_path):
    import dagster as dg

    @dg.asset
    def probe(engine_builder: EngineBuilder) -> dict:
        return {"ok": engine_builder.availability()[0]}

    result = dg.materialize([probe], resources={"engine_builder": UnavailableEngineBuilder()})
    assert result.success and result.output_for_node("probe") == {"ok": False}
    with pytest.raises(TypeError, match="abstract"):
        EngineBuilder()


def test_deploy_is_part_of_every_builder(tmp_path):
    """Every builder answers `deploy_support`; only the Jetson deploys, the others refuse with the reason."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    for builder in (UnavailableEngineBuilder(), LocalTensorRTEngineBuilder()):
        ok, why = builder.deploy_support()
        assert not ok and type(builder).__name__ in why and "LBZF_JETSON_HOST" in why
        with pytest.raises(EngineBuildError, match=r"cannot deploy m\.engine \(shadow\)") as err:
            builder.deploy_engine(engine, mode="shadow")
        assert why in str(err.value) and err.value.remedy
        assert_parts(err.value, str(engine), "engine_builder", type(builder).__name__)
    jetson = JetsonSSHEngineBuilder(host="jetson-01.lan", user="lbzf", known_hosts_path=str(tmp_path / "kh"),
                                    remote_dir="/data/engines")
    ok, where = jetson.deploy_support()
    assert ok and "lbzf@jetson-01.lan:22" in where and "/data/engines" in where


def test_local_trtexec_build_with_standin(fake_root, onnx_model, tmp_path, monkeypatch):
    """The local ``trtexec`` path (subprocess, atomic write, sidecar), with the stand-in trtexec and the
    GPU/TensorRT availability check stood in (there is neither here)."""
    monkeypatch.setattr(LocalTensorRTEngineBuilder, "availability", lambda self: (True, "stood in"))
    monkeypatch.setattr(LocalTensorRTEngineBuilder, "_versions", lambda self: {"tensorrt": "unknown", "cuda": "12.4"})
    lb = LocalTensorRTEngineBuilder(use_trtexec=True, trtexec_path=str(fake_root / "usr/src/tensorrt/bin/trtexec"))
    out = tmp_path / "out"
    result = lb.build(onnx_model, out, engine_name="local")
    assert result.status == "built" and result.engine_path == out / "local.engine"
    assert result.engine_path.read_bytes() == expected_engine(onnx_model, "fp16")
    assert result.versions["tensorrt"] == "8.6.2"  # read from trtexec's log
    meta = json.loads((out / "local.engine.json").read_text())
    assert meta["engine_sha256"] == sha256_file(result.engine_path) and meta["builder"] == "local-trtexec"
    assert sorted(p.name for p in out.iterdir()) == ["local.engine", "local.engine.json"]

    bad = make_onnx(tmp_path / "bad.onnx", doc=FAIL_MARKER.decode())
    with pytest.raises(EngineBuildError, match="exit status 1") as err:
        lb.build(bad, out, engine_name="bad")
    assert "LbzfBogusOp" in err.value.log_tail
    assert_parts(err.value, str(bad), "trtexec exit status", 1)
    assert sorted(p.name for p in out.iterdir()) == ["local.engine", "local.engine.json"]  # no partial files
