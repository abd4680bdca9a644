"""The HTTP endpoint that serves an exporter: its own port, optional TLS and basic auth.

Each ``[exporters.NAME]`` table is one endpoint. Its own keys (:class:`EndpointSettings`):
``listen`` (``HOST:PORT``, default ``127.0.0.1:9445``), ``path`` (default ``/metrics``),
``tls_cert`` and ``tls_key`` (HTTPS when both are given), ``basic_auth_user`` and
``basic_auth_password_file`` (a file holding the password; both or neither). The other
keys go to the exporter. Every GET of ``path`` renders the collector's live view at that
moment, in a thread of the endpoint's own, never on the collector's event loop.
"""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gpuwarden.collector.outputs.exporter import Exporter, LiveView

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    type: str = ""  # registry name; default: the instance name
    listen: str = "127.0.0.1:9445"
    path: str = "/metrics"
    tls_cert: str = ""
    tls_key: str = ""
    basic_auth_user: str = ""
    basic_auth_password_file: str = ""

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen: {self.listen!r} is not HOST:PORT")
        if not self.path.startswith("/"):
            raise ValueError(f"path: {self.path!r} must start with /")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key: give both or neither")
        if bool(self.basic_auth_user) != bool(self.basic_auth_password_file):
            raise ValueError("basic_auth_user and basic_auth_password_file: give both or neither")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ExporterEndpoint:
    """Serves one exporter over HTTP(S) until :meth:`stop`."""

    def __init__(self, name: str, exporter: Exporter, settings: EndpointSettings) -> None:
        self.name = name
        self.exporter = exporter
        self.settings = settings
        self._credentials: bytes | None = None
        if settings.basic_auth_user:
            password = Path(settings.basic_auth_password_file).read_text().strip()
            if not password:
                raise ValueError(
                    f"basic_auth_password_file: {settings.basic_auth_password_file} is empty"
                )
            token = f"{settings.basic_auth_user}:{password}".encode()
            self._credentials = b"Basic " + base64.b64encode(token)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.scrapes = 0

    def start(self, view: Callable[[], LiveView]) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10.0  # seconds a client may take to send its request

            def do_GET(self) -> None:
                endpoint._handle(self, view)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s: " + format, endpoint.name, *args)

        server = ThreadingHTTPServer(self.settings.host_port, Handler)
        server.daemon_threads = True
        if self.settings.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
            # the handshake happens in the request's thread, not in the accept loop, so a
            # client that connects and stays silent cannot stop the endpoint
            server.socket = ctx.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"exporter-{self.name}", daemon=True
        )
        self._thread.start()
        log.info(
            "exporter %s serving %s on %s port %d%s",
            self.name,
            self.settings.path,
            self.settings.host_port[0],
            self.port,
            " (TLS)" if self.settings.tls_cert else "",
        )

    def _handle(self, req: BaseHTTPRequestHandler, view: Callable[[], LiveView]) -> None:
        if req.path.split("?", 1)[0] != self.settings.path:
            self._reply(req, 404, b"not found\n", "text/plain")
            return
        if self._credentials is not None:
            given = (req.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(given, self._credentials):
                req.send_response(401)
                req.send_header("WWW-Authenticate", 'Basic realm="gpuwarden"')
                req.send_header("Content-Length", "0")
                req.end_headers()
                return
        try:
            body = self.exporter.render(view())
        except Exception:
            log.exception("exporter %s: render failed", self.name)
            self._reply(req, 500, b"render failed\n", "text/plain")
            return
        self.scrapes += 1
        self._reply(req, 200, body, self.exporter.content_type)

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
