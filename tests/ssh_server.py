"""A real OpenSSH server on loopback, for tests and demos; no pytest needed.

    with openssh_server(workdir) as server:
        client_key, known_hosts = server.client_key, server.known_hosts
        ... connect to 127.0.0.1:server.port as server.user ...

It runs ``/usr/sbin/sshd -D -e -f <cfg>`` as the current user on a free port of 127.0.0.1, with
its own host key (ed25519, generated into ``workdir``), public-key auth only against an
``authorized_keys`` file in ``workdir`` that holds a freshly generated client key, and sftp via
``internal-sftp``. Nothing outside ``workdir`` is touched, except that when run as root sshd needs its
privilege-separation directory ``/run/sshd`` (created here when missing, as the ssh package would).

Needs the ``openssh-server`` and ``openssh-client`` (``ssh-keygen``) packages.
Run ``python tests/ssh_server.py`` to keep one up by hand.
"""
from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

try:  # tests/ as a package or as a plain rootdir-relative directory
    from tests.helpers import free_port
except ImportError:  # pragma: no cover - depends on how pytest was started
    from helpers import free_port

SSHD = os.environ.get("LBZF_TEST_SSHD", "/usr/sbin/sshd")


def sshd_missing_reason() -> str | None:
    """Why a test server cannot be started here, or None."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not found: install openssh-server (apt-get install -y openssh-server openssh-client)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen not found: install openssh-client"
    return None


def keygen(path: Path, comment: str = "lbzf-test") -> Path:
    """A fresh ed25519 key pair at ``path`` / ``path.pub`` (no passphrase)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path


def known_hosts_line(host: str, port: int, pub_key_path: Path) -> str:
    """A known_hosts entry for ``host:port`` with the public key in ``pub_key_path``."""
    key_type, key_b64 = pub_key_path.read_text().split()[:2]
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {key_type} {key_b64}\n"


@dataclasses.dataclass
class SSHServer:
    host: str
    port: int
    user: str
    workdir: Path
    host_key: Path  # private; .pub next to it
    client_key: Path  # private; authorised in authorized_keys
    known_hosts: Path  # holds the right host key for [host]:port
    process: subprocess.Popen

    def log(self) -> str:
        path = self.workdir / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _wait_for_banner(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with status {proc.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                if sock.recv(64).startswith(b"SSH-"):
                    return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port} within {timeout}s:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def openssh_server(workdir: Path) -> Iterator[SSHServer]:
    """Start sshd on 127.0.0.1 (free port) as the current user; stop it on exit."""
    reason = sshd_missing_reason()
    if reason:
        raise RuntimeError(reason)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = keygen(workdir / "ssh_host_ed25519_key", "lbzf-test-host")
    client_key = keygen(workdir / "client_ed25519", "lbzf-test-client")
    authorized = workdir / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o600)
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    port = free_port()
    cfg = workdir / "sshd_config"
    cfg.write_text(
        "\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "UseDNS no",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ])
    )
    log = workdir / "sshd.log"
    with open(log, "wb") as log_handle:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log_handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        _wait_for_banner(port, proc, log)
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(known_hosts_line("127.0.0.1", port, Path(f"{host_key}.pub")))
        yield SSHServer(host="127.0.0.1", port=port, user=getpass.getuser(), workdir=workdir, host_key=host_key,
                        client_key=client_key, known_hosts=known_hosts, process=proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


if __name__ == "__main__":  # pragma: no cover - manual use
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lbzf-sshd-") as tmp, openssh_server(Path(tmp)) as server:
        print(f"ssh -p {server.port} -i {server.client_key} -o UserKnownHostsFile={server.known_hosts} "
              f"{server.user}@{server.host}")
        print("Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()
