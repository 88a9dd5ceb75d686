"""SSH transport to the Jetson: connection with host-key checking and retries, remote commands,
remote sha256, SFTP helpers. A mixin of `JetsonSSHEngineBuilder`, whose fields (host, port, user,
key_path, known_hosts_path, remote_dir, timeouts, retries, probe_root) it reads."""
from __future__ import annotations

import contextlib
import posixpath
import re
import shlex
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from resources.engine.builder import _log_tail
from resources.engine.results import UNKNOWN, EngineBuildError

_KEEP_OUTPUT_BYTES = 1 << 20  # keep at most the last MiB of a remote command's output


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: Any):
        self.hostname = hostname
        self.key = key
        super().__init__(hostname)


def _make_reject_policy():
    import paramiko

    class _RejectUnknown(paramiko.RejectPolicy):
        """paramiko's RejectPolicy, raising an error we can tell apart from transport failures."""

        def missing_host_key(self, client, hostname, key):
            raise _UnknownHostKey(hostname, key)

    return _RejectUnknown()


def _fingerprint(key: Any) -> str:
    with contextlib.suppress(Exception):
        return f"{key.get_name()} {key.fingerprint}"
    return UNKNOWN


class SSHTransport:
    """Connection, remote commands and file transfer over SSH (mixin; see the module docstring)."""

    # ------------------------------------------------------------------ config helpers

    @property
    def effective_remote_dir(self) -> str:
        return self.remote_dir or f"/home/{self.user}/lbzf/engines"

    @property
    def _where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def _probe_path(self, path: str) -> str:
        return (self.probe_root.rstrip("/") + path) if self.probe_root else path

    def _remote(self, path: str) -> str:
        """A remote path as the errors name it: ``user@host:port:/path``."""
        return f"{self._where}:{path}"

    def _config_error(self) -> EngineBuildError | None:
        """The refusal for a setting that makes connecting pointless (a missing known_hosts or key file)."""
        if not Path(self.known_hosts_path).expanduser().is_file():
            return EngineBuildError(
                f"known_hosts file {self.known_hosts_path} does not exist; host-key checking cannot be done.",
                remedy=(f"verify the Jetson's host key fingerprint out of band, then "
                        f"`ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts_path}`."),
                host=self.host, file=self.known_hosts_path, field="LBZF_JETSON_KNOWN_HOSTS",
                value=self.known_hosts_path)
        if self.key_path and not Path(self.key_path).expanduser().is_file():
            return EngineBuildError(
                f"SSH key {self.key_path} does not exist.",
                remedy=("set key_path (LBZF_JETSON_KEY_PATH) to the private key authorised on the Jetson, or unset "
                        "it to use the ssh-agent."),
                host=self.host, file=self.key_path, field="LBZF_JETSON_KEY_PATH", value=self.key_path)
        return None

    def _config_problem(self) -> str | None:
        error = self._config_error()
        return str(error) if error else None

    # ------------------------------------------------------------------ connection

    def _connect_once(self):
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(str(Path(self.known_hosts_path).expanduser()))
        client.set_missing_host_key_policy(_make_reject_policy())
        kwargs: dict[str, Any] = dict(hostname=self.host, port=self.port, username=self.user,
                                      timeout=self.connect_timeout_s, banner_timeout=self.connect_timeout_s,
                                      auth_timeout=self.connect_timeout_s)
        if self.key_path:
            kwargs.update(key_filename=str(Path(self.key_path).expanduser()), allow_agent=False, look_for_keys=False)
        else:
            kwargs.update(allow_agent=True, look_for_keys=True)
        try:
            client.connect(**kwargs)
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        return client

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        import paramiko

        error = self._config_error()
        if error:
            raise error
        attempts = max(1, int(self.retries))
        last: BaseException | None = None
        client = None
        for attempt in range(1, attempts + 1):
            try:
                client = self._connect_once()
                break
            except paramiko.BadHostKeyException as exc:
                raise EngineBuildError(
                    f"host key of {self.host}:{self.port} does not match {self.known_hosts_path} "
                    f"(server offered {_fingerprint(exc.key)}, expected {_fingerprint(exc.expected_key)}); "
                    "connection refused, nothing was transferred.",
                    remedy=("if the Jetson was reflashed, verify its new fingerprint out of band (on the device: "
                            "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then replace the entry "
                            f"(ssh-keygen -R '[{self.host}]:{self.port}' -f {self.known_hosts_path}); otherwise "
                            "treat it as a possible man-in-the-middle."), host=self.host,
                    file=self.known_hosts_path, field=f"[{self.host}]:{self.port}",
                    value=_fingerprint(exc.key)) from exc
            except _UnknownHostKey as exc:
                raise EngineBuildError(
                    f"host {self.host}:{self.port} is not in {self.known_hosts_path} (server offered "
                    f"{_fingerprint(exc.key)}); unknown hosts are refused, nothing was transferred.",
                    remedy=(f"verify the fingerprint on the device, then add it: ssh-keyscan -p {self.port} "
                            f"{self.host} >> {self.known_hosts_path}"), host=self.host,
                    file=self.known_hosts_path, field=f"[{self.host}]:{self.port}",
                    value=_fingerprint(exc.key)) from exc
            except (paramiko.AuthenticationException, paramiko.PasswordRequiredException) as exc:
                raise self._auth_error(exc) from exc
            except paramiko.SSHException as exc:
                if "authentication" in str(exc).lower():  # e.g. "No authentication methods available"
                    raise self._auth_error(exc) from exc
                last = exc  # transport trouble (banner timeout, reset): retry
                if attempt < attempts:
                    time.sleep(self.retry_backoff_s * (2 ** (attempt - 1)))
            except (OSError, EOFError) as exc:  # refused, unreachable, timed out, DNS: retry
                last = exc
                if attempt < attempts:
                    time.sleep(self.retry_backoff_s * (2 ** (attempt - 1)))
        if client is None:
            raise EngineBuildError(
                f"cannot reach Jetson {self._where} after {attempts} attempt(s): {type(last).__name__}: {last}.",
                remedy=("check the Jetson is powered and on the network, that sshd runs on it, and that "
                        "LBZF_JETSON_HOST / port are right (try: ssh -p "
                        f"{self.port} {self.user}@{self.host} true)."), host=self.host,
                file=f"ssh://{self.user}@{self.host}:{self.port}", field="LBZF_JETSON_HOST", value=self.host)
        try:
            yield client
        finally:
            client.close()

    def _auth_error(self, exc: BaseException) -> EngineBuildError:
        return EngineBuildError(
            f"authentication as {self._where} failed ({type(exc).__name__}: {exc}).",
            remedy=(f"authorise the public key of {self.key_path or 'your ssh-agent / ~/.ssh keys'} in "
                    f"~{self.user}/.ssh/authorized_keys on the Jetson, or fix key_path (LBZF_JETSON_KEY_PATH); "
                    "passphrase-protected keys must be loaded into ssh-agent."),
            host=self.host, file=self.key_path or "the ssh-agent / ~/.ssh keys (key_path not set)",
            field="LBZF_JETSON_KEY_PATH", value=self.key_path)

    def _run(self, client: Any, command: str, timeout: float | None = None) -> tuple[int, str]:
        """Run ``command`` on the device; (exit status, stdout+stderr). Raises on a timeout."""
        timeout = self.command_timeout_s if timeout is None else timeout
        transport = client.get_transport()
        chan = transport.open_session(timeout=self.connect_timeout_s)
        try:
            chan.set_combine_stderr(True)
            chan.settimeout(1.0)
            chan.exec_command(command)
            deadline = time.monotonic() + timeout
            buf = bytearray()
            while True:
                try:
                    data = chan.recv(65536)
                except socket.timeout:
                    data = None
                if data:
                    buf += data
                    if len(buf) > _KEEP_OUTPUT_BYTES:
                        del buf[:-_KEEP_OUTPUT_BYTES]
                elif data == b"":
                    break
                if time.monotonic() > deadline:
                    raise EngineBuildError(
                        f"command on {self._where} did not finish within {timeout:.0f}s: {command[:200]}",
                        remedy="raise command_timeout_s, or check the device is not overloaded.", host=self.host,
                        log_tail=_log_tail(buf.decode("utf-8", "replace")), file=f"ssh://{self._where}",
                        field="command_timeout_s", value=timeout)
            chan.settimeout(max(1.0, deadline - time.monotonic()))
            rc = chan.recv_exit_status()
            return rc, buf.decode("utf-8", "replace")
        finally:
            chan.close()

    def _run_ok(self, client: Any, command: str, what: str, timeout: float = 120) -> str:
        rc, out = self._run(client, command, timeout=min(timeout, self.command_timeout_s))
        if rc != 0:
            raise EngineBuildError(f"{what} failed on {self._where} (exit status {rc}).",
                                   remedy="read the log tail; check permissions and free disk space on the device.",
                                   host=self.host, log_tail=_log_tail(out), file=f"ssh://{self._where}",
                                   field="exit status", value=rc)
        return out

    def _remote_sha256(self, client: Any, *paths: str, before: str = "", optional: tuple[str, ...] = (),
                       what: str = "") -> dict[str, str]:
        """sha256 of remote ``paths`` (and of ``optional`` ones that exist), after running ``before``."""
        q = shlex.quote
        command = (f"{before} && " if before else "") + "sha256sum -- " + " ".join(q(p) for p in paths)
        for extra in optional:
            command += f" && if [ -f {q(extra)} ]; then sha256sum -- {q(extra)}; fi"
        out = self._run_ok(client, command, what or f"sha256sum of {', '.join(paths)}", timeout=600)
        digests: dict[str, str] = {}
        for line in out.splitlines():
            m = re.match(r"^\\?([0-9a-fA-F]{64}) [ *](.+)$", line.strip())
            if m:
                digests[m.group(2)] = m.group(1).lower()
        missing = [p for p in paths if p not in digests]
        if missing:
            raise EngineBuildError(f"unexpected sha256sum output on {self._where}.", host=self.host,
                                   remedy="check coreutils (sha256sum) on the device.", log_tail=_log_tail(out),
                                   file=self._remote(missing[0]), field="sha256", value=None)
        return digests

    def _sftp_makedirs(self, sftp: Any, path: str) -> None:
        missing: list[str] = []
        current = path
        while current not in ("", "/"):
            try:
                sftp.stat(current)
                break
            except OSError:
                missing.append(current)
                current = posixpath.dirname(current)
        for directory in reversed(missing):
            try:
                sftp.mkdir(directory)
            except OSError as exc:
                try:
                    sftp.stat(directory)
                except OSError:
                    raise EngineBuildError(f"cannot create {directory} on {self._where} ({exc}).",
                                           remedy=f"check remote_dir and that {self.user} may write there.",
                                           host=self.host, file=self._remote(directory),
                                           field="LBZF_JETSON_REMOTE_DIR", value=self.effective_remote_dir) from exc

    @staticmethod
    def _sftp_remove_quietly(sftp: Any, *paths: str) -> None:
        for path in paths:
            with contextlib.suppress(OSError):
                sftp.remove(path)

    def _put_file(self, sftp: Any, local: Path, remote: str) -> None:
        """Upload one file (a method of its own so tests can simulate a damaged transfer)."""
        sftp.put(str(local), remote, confirm=True)

    def _get_file(self, sftp: Any, remote: str, local: Path) -> None:
        sftp.get(remote, str(local))
