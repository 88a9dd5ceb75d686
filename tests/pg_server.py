"""A throwaway PostgreSQL server on loopback, for tests and demos; no pytest needed.

    with postgres_server() as pg:
        psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, dbname=pg.dbname)

It uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``;
``LBZF_TEST_PG_BINDIR`` overrides): ``initdb`` makes a fresh cluster in a temporary directory (trust
authentication, loopback only), ``pg_ctl start`` runs it on a free port of 127.0.0.1 with Unix sockets
off and TLS on (a throwaway self-signed certificate for 127.0.0.1, so clients can use any ``sslmode``
up to ``verify-full`` with ``root_cert``), a database ``dagster`` is created, and on exit the server
is stopped (``pg_ctl stop -m fast``) and the directory removed. PostgreSQL refuses to run as root, so
when this runs as root the server runs as the ``postgres`` system user (created by the Debian
package) and the directory is theirs.

Run ``python tests/pg_server.py`` to keep one up by hand.
"""
from __future__ import annotations

import contextlib
import dataclasses
import getpass
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

try:  # tests/ as a package or as a plain rootdir-relative directory
    from tests.helpers import free_port
except ImportError:  # pragma: no cover - depends on how pytest was started
    from helpers import free_port

SERVER_USER_WHEN_ROOT = "postgres"
SUPERUSER = "dagster"  # the cluster's superuser role (initdb --username)
DBNAME = "dagster"


def find_bindir() -> Path | None:
    """The newest PostgreSQL server bin directory here (holding initdb, pg_ctl and postgres), or None."""
    override = os.environ.get("LBZF_TEST_PG_BINDIR")
    candidates = [override] if override else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version_key(p), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        path = Path(candidate)
        tools = [path / tool for tool in ("initdb", "pg_ctl", "postgres")]
        if all(tool.is_file() and os.access(tool, os.X_OK) for tool in tools):
            return path
    return None


def _version_key(path: str) -> tuple:
    name = Path(path).parent.name
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def postgres_missing_reason() -> str | None:
    """Why a test server cannot be started here, or None."""
    if find_bindir() is None:
        return ("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install Debian's postgresql "
                "package (scripts/setup.sh does, as root) or set LBZF_TEST_PG_BINDIR")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        except KeyError:
            return f"running as root and there is no '{SERVER_USER_WHEN_ROOT}' user to run the server as"
    try:
        import psycopg2  # noqa: F401  (comes with dagster-postgres)
    except ImportError:  # pragma: no cover - dagster-postgres always brings it
        return "psycopg2 is not installed"
    return None


@dataclasses.dataclass
class PostgresServer:
    host: str
    port: int
    user: str  # superuser role; trust auth on loopback, so any password is accepted
    dbname: str
    workdir: Path  # holds data/ and postgres.log
    bindir: Path
    root_cert: Path  # the server's self-signed certificate (PGSSLROOTCERT for sslmode=verify-full)

    def connect(self, dbname: str | None = None, sslmode: str = "verify-full"):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=dbname or self.dbname,
                                connect_timeout=5, sslmode=sslmode, sslrootcert=str(self.root_cert))

    def log(self) -> str:
        path = self.workdir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _runner() -> dict:
    """subprocess keyword arguments that run a tool as the server's user (root: the postgres user)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": entry.pw_dir, "USER": entry.pw_name,
           "LOGNAME": entry.pw_name, "LC_ALL": "C"}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


def _run(cmd: list[str], workdir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, **_runner())
    if result.returncode != 0:
        log = workdir / "postgres.log"
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                           + (log.read_text(errors="replace") if log.exists() else ""))
    return result


def _write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost, valid for a day; (cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)  # postgres refuses a key others can read
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        for path in (cert_path, key_path):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return cert_path, key_path


def _wait_until_accepting(host: str, port: int, timeout: float = 30.0) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            psycopg2.connect(host=host, port=port, user=SUPERUSER, dbname="postgres", connect_timeout=2,
                             sslmode="require").close()
            return
        except psycopg2.OperationalError as error:  # starting up
            last = error
            time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL did not accept connections on {host}:{port} within {timeout}s: {last}")


@contextlib.contextmanager
def postgres_server(workdir: Path | None = None, require_tls: bool = False) -> Iterator[PostgresServer]:
    """initdb + pg_ctl start on 127.0.0.1:<free port>; yields the server; stops it and cleans up on exit.

    ``require_tls``: loopback connections without TLS are rejected (pg_hba ``hostnossl ... reject``), so
    anything that works against the server proves its client used TLS.

    ``workdir`` must be reachable by the server's user; by default a fresh directory under the system
    temp dir is made (pytest's tmp_path is private to root, so it would not be when running as root).
    """
    reason = postgres_missing_reason()
    if reason:
        raise RuntimeError(reason)
    bindir = find_bindir()
    assert bindir is not None
    made_here = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="lbzf-pg-")) if workdir is None else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    data = workdir / "data"
    log = workdir / "postgres.log"
    port = free_port()
    started = False
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "--username", SUPERUSER, "--auth", "trust",
              "--encoding", "UTF8", "--locale", "C", "--no-sync"], workdir)
        hba = data / "pg_hba.conf"
        hba.write_text("# lbzf test server: loopback TCP only, trust\n"
                       + ("hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n" if require_tls
                          else "host all all 127.0.0.1/32 trust\n"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
            os.chown(hba, entry.pw_uid, entry.pw_gid)
        cert, key = _write_certificate(workdir)
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off -c max_connections=100 "
                   f"-c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}")
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
             workdir, timeout=90)
        started = True
        _wait_until_accepting("127.0.0.1", port)
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres", sslmode="require")
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {DBNAME}")
        finally:
            conn.close()
        yield PostgresServer(host="127.0.0.1", port=port, user=SUPERUSER, dbname=DBNAME, workdir=workdir,
                             bindir=bindir, root_cert=cert)
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], workdir,
                     timeout=60)
        if made_here:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover - manual use
    with postgres_server() as server:
        print(f"psql -h {server.host} -p {server.port} -U {server.user} {server.dbname}   "
              f"(running as {SERVER_USER_WHEN_ROOT if os.geteuid() == 0 else getpass.getuser()}); Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
