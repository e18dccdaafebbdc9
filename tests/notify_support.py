"""Real receivers for the notification tests: an HTTP server and an SMTP server on loopback.

Each records what reached it; the HTTP one answers as a test scripts it (a
status code, or "hang" until released), so a receiver that is down, slow or
failing is a real server doing that, not a stand-in for the client.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from .service_support import wait_for


class HttpReceiver:
    """POSTs recorded as (headers, JSON body); ``answers`` are used in turn, then 200."""

    def __init__(self, answers: list[int | str] | None = None) -> None:
        self.answers = list(answers or [])
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.hanging = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append((dict(self.headers), json.loads(body)))
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                if answer == "hang":
                    with receiver._lock:
                        receiver.hanging += 1
                    receiver.release.wait(60)
                    answer = 200
                try:
                    self.send_response(int(answer))
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[Any]:
        with self._lock:
            return [body for _, body in self.requests]

    def wait_bodies(self, count: int, timeout: float = 20) -> list[Any]:
        return wait_for(lambda: len(b := self.bodies()) >= count and b, timeout, f"{count} POST(s) at the receiver")

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpReceiver:
    """aiosmtpd on loopback: plain, STARTTLS (``tls``) or implicit TLS (``implicit``), with LOGIN/PLAIN."""

    def __init__(
        self, tmp: Path, *, tls: bool = False, implicit: bool = False, user: str = "", password: str = ""
    ) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        self.cert = tmp / "smtp-cert.pem"
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's name
                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                receiver.messages.append(message_from_bytes(envelope.original_content or envelope.content))
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
                user.encode(),
                password.encode(),
            )
            if ok:
                receiver.logins.append(user)
            return AuthResult(success=ok, handled=False)

        context = self._tls_context(tmp) if tls or implicit else None
        kwargs: dict[str, Any] = {"authenticator": authenticate} if user else {}
        if implicit:
            kwargs.update(ssl_context=context, auth_require_tls=False)
        elif tls:
            kwargs.update(tls_context=context)
        else:
            kwargs.update(auth_require_tls=False)  # lets a client offer a password in clear, to show ours will not
        self.port = closed_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def _tls_context(self, tmp: Path) -> ssl.SSLContext:
        """A self-signed certificate for 127.0.0.1, made now; clients trust it through SSL_CERT_FILE."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file = tmp / "smtp-key.pem"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key_file)
        return context

    def wait_messages(self, count: int, timeout: float = 20) -> list[Message]:
        return wait_for(lambda: len(self.messages) >= count and self.messages, timeout, f"{count} message(s) by SMTP")

    def close(self) -> None:
        self.controller.stop()
