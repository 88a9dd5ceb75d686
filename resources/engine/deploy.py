"""Deploying an engine to the Jetson's ``shadow/`` or ``production/`` directory, atomically."""
from __future__ import annotations

import datetime as _dt
import json
import posixpath
import shlex
import tempfile
import uuid
from pathlib import Path

from pipeline.hashing import sha256_file
from resources.engine.builder import _engine_sidecar
from resources.engine.compatibility import check_engine_compatible
from resources.engine.results import DEPLOY_MODES, EngineBuildError, EngineDeployResult


class JetsonDeploy:
    """`deploy_engine` of `JetsonSSHEngineBuilder` (mixin: uses its SSH transport and `probe_versions`)."""

    def deploy_support(self) -> tuple[bool, str]:
        return True, f"the Jetson {self._where} (under {self.effective_remote_dir})"

    def deploy_engine(self, engine_path: Path, *, mode: str = "shadow", metadata_path: Path | None = None,
                      check_compat: bool = True) -> EngineDeployResult:
        """Push an engine and its sidecar to ``remote_dir/<mode>/`` on the Jetson, atomically.

        Refuses engines whose sidecar versions do not match the device (`check_engine_compatible`).
        Uploads under temporary names, verifies the remote sha256, keeps the current engine as
        ``<name>.previous`` (sidecar as ``<name>.json.previous``), then ``mv``s into place (rename(2):
        readers see the old or the new engine, never a partial one). On any failure before the ``mv``
        the deployed engine is untouched and the temporaries are removed. Deploying the engine that is
        already there changes nothing (``changed=False``).
        """
        engine_path = Path(engine_path)
        if mode not in DEPLOY_MODES:
            raise EngineBuildError(f"unknown deploy mode {mode!r}.", remedy=f"use one of {', '.join(DEPLOY_MODES)}.",
                                   file=engine_path, field="mode", value=mode)
        if not engine_path.is_file():
            raise EngineBuildError(f"engine {engine_path} does not exist.", remedy="build the engine first.",
                                   file=engine_path, field="engine_path", value=str(engine_path))
        metadata_path = Path(metadata_path) if metadata_path else _engine_sidecar(engine_path)
        if not metadata_path.is_file():
            raise EngineBuildError(f"engine metadata {metadata_path} does not exist; cannot tell which TensorRT "
                                   "built the engine.", remedy="deploy engines made by an EngineBuilder (they write "
                                   "the <engine>.json sidecar), or pass metadata_path.",
                                   file=metadata_path, field="metadata_path", value=str(metadata_path))
        meta = json.loads(metadata_path.read_text(encoding="utf-8"))
        local_sha = sha256_file(engine_path)
        if meta.get("engine_sha256") and meta["engine_sha256"] != local_sha:
            raise EngineBuildError(f"{engine_path} (sha256 {local_sha}) is not the engine described by {metadata_path} "
                                   f"(sha256 {meta['engine_sha256']}); refusing to deploy.",
                                   remedy="rebuild the engine, or restore the matching file.", host=self.host,
                                   file=metadata_path, field="engine_sha256", value=meta["engine_sha256"])
        name = engine_path.name
        q = shlex.quote
        dest_dir = posixpath.join(self.effective_remote_dir, mode)
        dest = posixpath.join(dest_dir, name)
        dest_meta = dest + ".json"
        token = uuid.uuid4().hex[:12]
        tmp_engine = posixpath.join(dest_dir, f".{name}.{token}.tmp")
        tmp_meta = posixpath.join(dest_dir, f".{name}.json.{token}.tmp")
        with self._session() as client:
            device_versions = self.probe_versions(client)
            if check_compat:
                check_engine_compatible(meta, device_versions, sidecar=metadata_path)
            deployed_meta = dict(meta, deployed_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                 deploy_mode=mode, deployed_to=self.host, device_versions=device_versions)
            sftp = client.open_sftp()
            try:
                self._sftp_makedirs(sftp, dest_dir)
                with tempfile.TemporaryDirectory(prefix="lbzf-deploy-") as tdir:
                    local_meta = Path(tdir) / "meta.json"
                    local_meta.write_text(json.dumps(deployed_meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
                    meta_sha = sha256_file(local_meta)
                    try:
                        self._put_file(sftp, engine_path, tmp_engine)
                        self._put_file(sftp, local_meta, tmp_meta)
                        digests = self._remote_sha256(client, tmp_engine, tmp_meta, optional=(dest,),
                                                      what=f"verifying the upload of {name}")
                        if digests[tmp_engine] != local_sha or digests[tmp_meta] != meta_sha:
                            bad, want = ((tmp_engine, local_sha) if digests[tmp_engine] != local_sha
                                         else (tmp_meta, meta_sha))
                            raise EngineBuildError(
                                f"upload of {name} to {self._where}:{dest_dir} is damaged ({posixpath.basename(bad)}: "
                                f"remote sha256 {digests[bad]}, local {want}); the deployed {mode} engine was left "
                                "unchanged.", remedy="retry the deploy; check free disk space on the device and "
                                "the network.", host=self.host, file=f"{self._where}:{bad}", field="sha256",
                                value=digests[bad])
                    except BaseException:
                        self._sftp_remove_quietly(sftp, tmp_engine, tmp_meta)
                        raise
                current_sha = digests.get(dest)
                if current_sha == local_sha:
                    self._sftp_remove_quietly(sftp, tmp_engine, tmp_meta)
                    return EngineDeployResult(mode=mode, host=self.host, remote_path=dest, engine_sha256=local_sha,
                                              changed=False, device_versions=device_versions)
                swap = (
                    "set -e; "
                    # keep the current engine (hard link: no copy, no window) and sidecar as .previous
                    f"if [ -f {q(dest)} ]; then ln -f -- {q(dest)} {q(dest + '.previous')} 2>/dev/null "
                    f"|| {{ cp -p -- {q(dest)} {q(dest + '.previous.tmp')} && "
                    f"mv -f -- {q(dest + '.previous.tmp')} {q(dest + '.previous')}; }}; fi; "
                    f"if [ -f {q(dest_meta)} ]; then cp -p -- {q(dest_meta)} {q(dest_meta + '.previous.tmp')} && "
                    f"mv -f -- {q(dest_meta + '.previous.tmp')} {q(dest_meta + '.previous')}; fi; "
                    f"mv -f -- {q(tmp_engine)} {q(dest)}; mv -f -- {q(tmp_meta)} {q(dest_meta)}"
                )
                try:
                    final_sha = self._remote_sha256(client, dest, before=f"sh -c {q(swap)}",
                                                    what=f"swapping in {name} ({mode})")[dest]
                except BaseException:
                    self._sftp_remove_quietly(sftp, tmp_engine, tmp_meta)
                    raise
            finally:
                sftp.close()
            if final_sha != local_sha:
                raise EngineBuildError(f"after the swap, {self._where}:{dest} has sha256 {final_sha}, expected "
                                       f"{local_sha}.", remedy=f"roll back on the device: mv {dest}.previous {dest}",
                                       host=self.host, file=f"{self._where}:{dest}", field="sha256", value=final_sha)
        return EngineDeployResult(mode=mode, host=self.host, remote_path=dest, engine_sha256=local_sha, changed=True,
                                  previous_path=(dest + ".previous") if current_sha else None,
                                  previous_sha256=current_sha, device_versions=device_versions)

