"""Building and running engines with ``trtexec`` on a Jetson over SSH (production)."""
from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shlex
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from pipeline.hashing import sha256_file
from resources.engine.builder import EngineBuilder, _check_build_inputs, _engine_sidecar, _log_tail, _sidecar_data, \
    _write_json_atomic
from resources.engine.deploy import JetsonDeploy
from resources.engine.results import UNKNOWN, VERSION_KEYS, EngineBuildError, EngineBuildResult, EngineRunResult
from resources.engine.ssh_transport import SSHTransport
from resources.engine.trtexec import _input_bytes, parse_trtexec_output, parse_trtexec_times, trtexec_run_args
from resources.engine.versions import parse_cuda_version, parse_jetpack_version, parse_l4t_release, parse_trt_version


class JetsonSSHEngineBuilder(SSHTransport, JetsonDeploy, EngineBuilder):
    """Builds with ``trtexec`` on a Jetson over SSH, and deploys engines to it.

    Host-key checking is always on (``known_hosts_path`` + a rejecting policy). Authentication uses
    ``key_path`` when set, otherwise the ssh-agent / default keys of the running user; there is no
    password field. ``probe_root`` prefixes the files read to probe versions (tests only).
    """

    host: str
    port: int = 22
    user: str
    key_path: str | None = None
    known_hosts_path: str
    remote_dir: str | None = Field(default=None, description="default /home/<user>/lbzf/engines")
    trtexec_path: str = "/usr/src/tensorrt/bin/trtexec"
    cuda_home: str = "/usr/local/cuda"
    connect_timeout_s: float = 15
    command_timeout_s: float = 1800
    retries: int = 3
    retry_backoff_s: float = 2.0
    probe_root: str = ""

    # ------------------------------------------------------------------ versions

    def probe_versions(self, client: Any | None = None) -> dict[str, str]:
        """TensorRT, CUDA, L4T, JetPack, device model and hostname of the Jetson; 'unknown' when missing.

        All probes run in one remote ``sh`` script (one round trip); each one's output and exit status
        are framed by marker lines, and a failing probe only leaves its value 'unknown'.
        """
        if client is None:
            with self._session() as session:
                return self.probe_versions(session)
        q = shlex.quote
        probes = {
            "l4t": f"cat {q(self._probe_path('/etc/nv_tegra_release'))}",
            "jetpack_dpkg": "dpkg-query -W -f='${Version}' nvidia-jetpack",
            "jetpack_file": f"cat {q(self._probe_path('/etc/nv_jetpack_release'))}",
            "trtexec": f"{q(self.trtexec_path)} --help",
            "nvcc": f"{q(self._probe_path(self.cuda_home + '/bin/nvcc'))} --version",
            "cuda_json": f"cat {q(self._probe_path(self.cuda_home + '/version.json'))}",
            "model": f"tr -d '\\000' < {q(self._probe_path('/proc/device-tree/model'))}",
            "hostname": "hostname",
        }
        marker = f"@@LBZF-PROBE-{uuid.uuid4().hex[:8]}"
        script = "".join(f"echo {marker} BEGIN {name}; ( {cmd} ) </dev/null 2>&1; rc=$?; echo; echo {marker} END {name} $rc; "
                         for name, cmd in probes.items())
        try:
            _, out = self._run(client, f"sh -c {q(script)}", timeout=min(120.0, self.command_timeout_s))
        except EngineBuildError:
            out = ""
        found: dict[str, tuple[int, str]] = {}
        pattern = re.compile(rf"^{re.escape(marker)} BEGIN (\w+)\n(.*?)\n{re.escape(marker)} END \1 (\d+)$",
                             re.S | re.M)
        for m in pattern.finditer(out):
            found[m.group(1)] = (int(m.group(3)), m.group(2).strip())

        def ok(name: str) -> str:
            rc, text = found.get(name, (1, ""))
            return text if rc == 0 else ""

        versions = dict.fromkeys(VERSION_KEYS, UNKNOWN)
        versions["l4t"] = parse_l4t_release(ok("l4t"))
        versions["jetpack"] = parse_jetpack_version(ok("jetpack_dpkg") or ok("jetpack_file"))
        versions["tensorrt"] = parse_trt_version(found.get("trtexec", (1, ""))[1])  # --help may exit non-zero
        cuda = parse_cuda_version(ok("nvcc"))
        versions["cuda"] = cuda if cuda != UNKNOWN else parse_cuda_version(ok("cuda_json"))
        versions["device"] = ok("model").replace("\x00", "") or UNKNOWN
        versions["hostname"] = ok("hostname") or UNKNOWN
        return versions

    # ------------------------------------------------------------------ interface

    def availability(self) -> tuple[bool, str]:
        problem = self._config_problem()
        if problem:
            return False, problem
        try:
            with self._session() as client:
                rc, _ = self._run(client, f"test -x {shlex.quote(self.trtexec_path)}", timeout=30)
        except EngineBuildError as exc:
            return False, str(exc)
        if rc != 0:
            return False, (f"trtexec not found/executable at {self.trtexec_path} on {self._where}; install "
                           "JetPack's TensorRT (nvidia-jetpack) or set trtexec_path")
        return True, f"Jetson {self._where} reachable, trtexec at {self.trtexec_path}"

    def build(self, onnx_path: Path, out_dir: Path, *, engine_name: str, precision: str = "fp16",
              int8_calib_cache: Path | None = None, workspace_mb: int = 2048) -> EngineBuildResult:
        onnx_path, out_dir = Path(onnx_path), Path(out_dir)
        _check_build_inputs(onnx_path, precision, int8_calib_cache, engine_name, out_dir)
        onnx_sha = sha256_file(onnx_path)
        calib_sha = sha256_file(int8_calib_cache) if precision == "int8" and int8_calib_cache else ""
        out_dir.mkdir(parents=True, exist_ok=True)
        rdir = self.effective_remote_dir
        r_onnx = posixpath.join(rdir, f"{engine_name}.onnx")
        r_engine = posixpath.join(rdir, f"{engine_name}.engine")
        r_engine_tmp = r_engine + ".tmp"
        r_calib = posixpath.join(rdir, f"{engine_name}.calib.cache")
        q = shlex.quote
        started = time.monotonic()
        with self._session() as client:
            versions = self.probe_versions(client)
            sftp = client.open_sftp()
            try:
                self._sftp_makedirs(sftp, rdir)
                self._sftp_remove_quietly(sftp, r_engine_tmp, r_onnx + ".tmp", r_calib + ".tmp")
                # Upload under .tmp names, then rename into place and hash in one remote command.
                uploads = [(onnx_path, r_onnx, onnx_sha)]
                if precision == "int8":
                    assert int8_calib_cache is not None
                    uploads.append((Path(int8_calib_cache), r_calib, calib_sha))
                for local, remote, _ in uploads:
                    self._put_file(sftp, local, remote + ".tmp")
                moves = " && ".join(f"mv -f -- {q(remote + '.tmp')} {q(remote)}" for _, remote, _ in uploads)
                digests = self._remote_sha256(client, *(remote for _, remote, _ in uploads), before=moves,
                                              what="placing the uploaded ONNX")
                for local, remote, sha in uploads:
                    if digests[remote] != sha:
                        raise EngineBuildError(f"{local.name} uploaded to {self._where}:{remote} is damaged (sha256 "
                                               f"{digests[remote]} != local {sha}).",
                                               remedy="retry; check free disk space on the device.", host=self.host,
                                               file=self._remote(remote), field="sha256", value=digests[remote])

                args = [self.trtexec_path, f"--onnx={r_onnx}", f"--saveEngine={r_engine_tmp}",
                        f"--memPoolSize=workspace:{int(workspace_mb)}"]
                if precision == "fp16":
                    args.append("--fp16")
                elif precision == "int8":
                    args += ["--int8", "--fp16", f"--calib={r_calib}"]  # fp16 lets unquantisable layers fall back
                command = " ".join(q(a) for a in args)
                limit = max(1, int(self.command_timeout_s))
                # coreutils `timeout` ends trtexec on the device too when the build overruns.
                wrapped = (f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 30 {limit} {command}; "
                           f"else exec {command}; fi")
                rc, log = self._run(client, wrapped, timeout=self.command_timeout_s + 60)
                if rc != 0:
                    self._sftp_remove_quietly(sftp, r_engine_tmp)
                    why = (f"timed out after {limit}s" if rc == 124 else f"failed (exit status {rc})")
                    raise EngineBuildError(
                        f"trtexec on {self._where} {why} building {engine_name} ({precision}) from {onnx_path.name}.",
                        remedy=("read the log tail; check the ONNX opset/shapes are supported by TensorRT "
                                f"{versions.get('tensorrt', UNKNOWN)} on the device, and free memory/disk there"
                                + (", or raise command_timeout_s." if rc == 124 else ".")),
                        host=self.host, log_tail=_log_tail(log), file=onnx_path,
                        field="command_timeout_s" if rc == 124 else "trtexec exit status",
                        value=limit if rc == 124 else rc)
                try:
                    size = sftp.stat(r_engine_tmp).st_size
                except OSError:
                    size = 0
                if not size:
                    raise EngineBuildError(f"trtexec on {self._where} exited 0 but wrote no engine at {r_engine_tmp}.",
                                           remedy="read the log tail; check free disk space on the device.",
                                           host=self.host, log_tail=_log_tail(log),
                                           file=self._remote(r_engine_tmp), field="size", value=size)
                remote_sha = self._remote_sha256(client, r_engine, before=f"mv -f -- {q(r_engine_tmp)} {q(r_engine)}",
                                                 what="placing the built engine")[r_engine]

                engine_path = out_dir / f"{engine_name}.engine"
                fd, local_tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{engine_name}.", suffix=".engine.part")
                os.close(fd)
                try:
                    self._get_file(sftp, r_engine, Path(local_tmp))
                    local_sha = sha256_file(local_tmp)
                    if local_sha != remote_sha:
                        raise EngineBuildError(
                            f"engine fetched from {self._where}:{r_engine} is damaged (local sha256 {local_sha} != "
                            f"remote {remote_sha}); nothing was written to {out_dir}.",
                            remedy="retry the build; check the network and local disk.", host=self.host,
                            file=self._remote(r_engine), field="sha256", value=local_sha)
                    os.replace(local_tmp, engine_path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(local_tmp)
                    raise
            finally:
                sftp.close()
        trt_seen = parse_trt_version(log)
        if trt_seen != UNKNOWN:
            versions["tensorrt"] = trt_seen
        result = EngineBuildResult(status="built", engine_path=engine_path, engine_sha256=local_sha,
                                   onnx_sha256=onnx_sha, precision=precision, versions=versions,
                                   build_seconds=time.monotonic() - started, log_tail=_log_tail(log))
        sidecar = _engine_sidecar(engine_path)
        extra = {"host": self.host, "remote_engine_path": r_engine, "trtexec_command": command}
        if calib_sha:
            extra["int8_calib_cache_sha256"] = calib_sha
        _write_json_atomic(sidecar, _sidecar_data(result, engine_name=engine_name, workspace_mb=workspace_mb,
                                                  builder="jetson-ssh", extra=extra))
        result.metadata_path = sidecar
        return result

    # ------------------------------------------------------------------ run (validation)

    def inference_support(self) -> tuple[bool, str]:
        problem = self._config_problem()
        if problem:
            return False, problem
        return True, f"trtexec --loadEngine on {self._where}"

    def run_engine(self, engine_path: Path, inputs: list[np.ndarray], *, input_name: str = "images",
                   output_name: str = "output0", iterations: int = 10) -> EngineRunResult:
        """Run ``engine_path`` on the Jetson once per input tensor with ``trtexec --loadEngine``.

        The engine (sha256 checked on the device) and the raw float32 inputs go to a private folder
        under ``remote_dir/validation/``, one remote shell command runs trtexec per input (exporting
        the output tensors and timings as JSON), the JSON comes back, and the folder is removed.
        """
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise EngineBuildError(f"engine {engine_path} does not exist.", remedy="build the engine first.",
                                   file=engine_path, field="engine_path", value=str(engine_path))
        if not inputs:
            raise EngineBuildError("no input tensors to run the engine on.", remedy="pass at least one frame.",
                                   file=engine_path, field="inputs", value=len(inputs))
        q = shlex.quote
        vdir = posixpath.join(self.effective_remote_dir, "validation", uuid.uuid4().hex[:12])
        r_engine = posixpath.join(vdir, engine_path.name)
        local_sha = sha256_file(engine_path)
        marker = f"@@LBZF-RUN-{uuid.uuid4().hex[:8]}"
        with self._session() as client:
            sftp = client.open_sftp()
            try:
                self._sftp_makedirs(sftp, vdir)
                self._put_file(sftp, engine_path, r_engine)
                remote_sha = self._remote_sha256(client, r_engine, what="placing the engine to validate")[r_engine]
                if remote_sha != local_sha:
                    raise EngineBuildError(f"engine uploaded to {self._where}:{r_engine} is damaged (sha256 "
                                           f"{remote_sha} != local {local_sha}).",
                                           remedy="retry; check free disk space on the device.", host=self.host,
                                           file=self._remote(r_engine), field="sha256", value=remote_sha)
                steps = []
                with tempfile.TemporaryDirectory(prefix="lbzf-run-") as tdir:
                    for i, tensor in enumerate(inputs):
                        local_in = Path(tdir) / f"in_{i:05d}.bin"
                        local_in.write_bytes(_input_bytes(tensor))
                        self._put_file(sftp, local_in, posixpath.join(vdir, local_in.name))
                        args = trtexec_run_args(self.trtexec_path, r_engine, input_name,
                                                posixpath.join(vdir, local_in.name),
                                                posixpath.join(vdir, f"out_{i:05d}.json"),
                                                posixpath.join(vdir, f"times_{i:05d}.json"), iterations)
                        log = posixpath.join(vdir, f"log_{i:05d}.txt")
                        steps.append(f"{' '.join(q(a) for a in args)} > {q(log)} 2>&1 || "
                                     f"{{ rc=$?; echo {marker} FAILED {i} $rc; tail -n 40 {q(log)}; exit $rc; }}")
                script = "; ".join(steps) + f"; echo {marker} DONE"
                limit = max(1, int(self.command_timeout_s))
                wrapped = (f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 30 {limit} sh -c {q(script)}; "
                           f"else exec sh -c {q(script)}; fi")
                rc, out = self._run(client, wrapped, timeout=self.command_timeout_s + 60)
                if rc != 0 or f"{marker} DONE" not in out:
                    why = f"timed out after {limit}s" if rc == 124 else f"failed (exit status {rc})"
                    raise EngineBuildError(f"running {engine_path.name} with trtexec on {self._where} {why}.",
                                           remedy="read the log tail; the engine must come from this device's TensorRT "
                                                  "and its input must be float32 [1, 3, imgsz, imgsz].",
                                           host=self.host, log_tail=_log_tail(out), file=engine_path,
                                           field="command_timeout_s" if rc == 124 else "trtexec exit status",
                                           value=limit if rc == 124 else rc)
                outputs, latencies = [], []
                for i in range(len(inputs)):
                    r_out = posixpath.join(vdir, f"out_{i:05d}.json")
                    with sftp.open(r_out, "r") as handle:
                        outputs.append(parse_trtexec_output(handle.read().decode("utf-8", "replace"), output_name,
                                                            source=self._remote(r_out)))
                    with sftp.open(posixpath.join(vdir, f"times_{i:05d}.json"), "r") as handle:
                        latencies.append(parse_trtexec_times(handle.read().decode("utf-8", "replace")))
            finally:
                with contextlib.suppress(Exception):
                    self._run(client, f"rm -rf -- {q(vdir)}", timeout=60)
                sftp.close()
        return EngineRunResult(outputs=outputs, latency_ms=latencies, host=self.host, log_tail=_log_tail(out))

