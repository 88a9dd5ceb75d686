"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the loopback moto S3 server.

The code under test talks to the proxy as if it were S3 (``S3ArtifactStore(endpoint_url=proxy.url)``);
boto3 is never patched. Each request is matched against the rules in order; the first rule that matches
and still has a budget (``times``) acts, everything else is forwarded unchanged with ``http.client``.

Actions
    ``status``        answer with an S3 XML error (e.g. 500 InternalError, 503 SlowDown, 403 AccessDenied)
    ``cut_request``   read half of the request body, then drop the connection without an answer
    ``cut_response``  forward, send the headers and half of the body, then drop the connection

    with S3FaultProxy(moto_endpoint) as proxy:
        proxy.add(method="PUT", query="partNumber=", action="cut_request")
        proxy.add(method="PUT", header=("x-amz-server-side-encryption", "aws:kms"), action="status",
                  status=403, code="AccessDenied", message="... KMS.AccessDeniedException ...")
"""
from __future__ import annotations

import http.client
import http.server
import re
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
        "expect", "content-length"}


@dataclass
class Rule:
    method: str | None = None          # "PUT", "GET", ... (None: any)
    path: str | None = None            # regex searched in the path+query
    query: str | None = None           # substring of the query string ("partNumber=", "uploads")
    header: tuple[str, str] | None = None  # (name, value) the request must carry
    action: str = "status"
    status: int = 500
    code: str = "InternalError"
    message: str = "We encountered an internal error. Please try again."
    times: int | None = None           # None: every matching request
    hits: int = field(default=0)

    def matches(self, method: str, target: str, headers) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and method != self.method:
            return False
        query = urlsplit(target).query
        if self.path and not re.search(self.path, target):
            return False
        if self.query and self.query not in query:
            return False
        if self.header and (headers.get(self.header[0]) or "").lower() != self.header[1].lower():
            return False
        return True


class S3FaultProxy:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str]] = []  # (method, target, what happened)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- rules
    def add(self, **kw) -> Rule:
        rule = Rule(**kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def _pick(self, method: str, target: str, headers) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, target, headers):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, method: str, target: str, what: str) -> None:
        with self._lock:
            self.log.append((method, target, what))

    # ---- lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "S3FaultProxy":
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # so 'Expect: 100-continue' is answered at once

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, cut: bool = False) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                if self.command != "HEAD":
                    self.wfile.write(body[: len(body) // 2] if cut else body)
                    self.wfile.flush()
                if cut:
                    self._drop()

            def _handle(self) -> None:
                method, target = self.command, self.path
                rule = proxy._pick(method, target, self.headers)
                if rule is not None and rule.action == "cut_request":
                    length = int(self.headers.get("Content-Length") or 0)
                    if length:
                        self.rfile.read(max(1, length // 2))
                    proxy._record(method, target, "cut_request")
                    self._drop()
                    return
                body = self._body()
                if rule is not None and rule.action == "status":
                    proxy._record(method, target, f"{rule.status} {rule.code}")
                    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{rule.code}</Code>'
                           f"<Message>{rule.message}</Message><RequestId>LBZFFAULT</RequestId></Error>").encode()
                    self._send(rule.status, [("Content-Type", "application/xml")], xml)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    upstream.request(method, target, body=body, headers={**headers, "Content-Length": str(len(body))})
                    response = upstream.getresponse()
                    data = response.read()
                    out_headers = response.getheaders()
                    status = response.status
                finally:
                    upstream.close()
                cut = rule is not None and rule.action == "cut_response"
                proxy._record(method, target, "cut_response" if cut else f"forwarded {status}")
                self._send(status, out_headers, data, cut=cut)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "S3FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
