"""How a notice reaches a person: a webhook POST (JSON, or Slack's shape) or an e-mail over SMTP.

One attempt per ``send``; the caller (core/notify.py) retries. Each failure is
a ``DeliveryError`` saying whether another attempt could pass. A receiver is
named by scheme and host only: a chat webhook's path is its credential.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

from . import __version__
from .config import Config, NotifyConfig, parse_smtp_url
from .safe import terminal_safe
from .times import iso, utcnow

TIMEOUT_S = 10.0  # one attempt: connect, send, answer
MAX_TEXT = 4000  # characters of a notice's text

CRITICAL, WARNING, INFO, OK = "critical", "warning", "info", "ok"


@dataclass(frozen=True)
class Notice:
    """One message to every receiver."""

    kind: str  # failing | unreachable | listener | lag | mass_delete_guard | leadership | takeover | rejects | recovered | test
    severity: str  # critical | warning | info | ok
    title: str
    text: str
    at: datetime
    condition: str | None = None  # the alert a "recovered" notice ends
    details: dict[str, Any] = field(default_factory=dict)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Bounded, with every control character shown escaped: a reason may quote a hostile document id."""
    text = terminal_safe(text, multiline=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DeliveryError(Exception):
    """One attempt failed; ``permanent``: another would fail the same way."""

    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message, self.permanent, self.retry_after = message, permanent, retry_after


class Receiver:
    name = "receiver"

    def send(self, notice: Notice, context: dict[str, Any]) -> str:
        """One attempt; returns what the receiver answered, or raises DeliveryError."""
        raise NotImplementedError


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None  # a POST is never re-sent elsewhere: the 3xx is reported as it is


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookReceiver(Receiver):
    def __init__(self, url: str, fmt: str = "json", timeout: float = TIMEOUT_S) -> None:
        self.url, self.format, self.timeout = url, fmt, timeout
        parts = urlsplit(url)
        self.name = f"webhook {parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    def body(self, notice: Notice, context: dict[str, Any]) -> bytes:
        if self.format == "slack":
            return json.dumps({"text": slack_text(notice, context)}).encode()
        return json.dumps(document(notice, context), ensure_ascii=False).encode()

    def send(self, notice: Notice, context: dict[str, Any]) -> str:
        request = urllib.request.Request(
            self.url,
            data=self.body(notice, context),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"empsync/{__version__}"},
        )
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read(4096)
                return f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            answer = clip(exc.read(512).decode("utf-8", "replace").strip(), 200)
            message = f"HTTP {exc.code}" + (f": {answer}" if answer else "")
            retry_after = _seconds(exc.headers.get("Retry-After"))
            # 408 and 429 say "later"; 5xx may pass; any other 4xx (and a redirect) will not.
            permanent = exc.code < 500 and exc.code not in (408, 429)
            raise DeliveryError(message, permanent=permanent, retry_after=retry_after) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise DeliveryError(f"TLS certificate not trusted: {reason.verify_message}", permanent=True) from None
            if isinstance(reason, TimeoutError):
                raise DeliveryError(f"no answer within {self.timeout:g} s") from None
            raise DeliveryError(f"cannot connect: {getattr(reason, 'strerror', None) or reason}") from None


class EmailReceiver(Receiver):
    def __init__(self, notify: NotifyConfig, timeout: float = TIMEOUT_S) -> None:
        self.endpoint = parse_smtp_url(notify.smtp_url)
        self.password = notify.smtp_password
        self.sender, self.to = notify.email_from, notify.email_to
        self.timeout = timeout
        e = self.endpoint
        self.name = f"e-mail to {', '.join(self.to)} via {e.scheme}://{e.host}:{e.port}"

    def message(self, notice: Notice, context: dict[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[empsync] {notice.title}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid("empsync")
        msg.set_content(plain_text(notice, context))
        return msg

    def send(self, notice: Notice, context: dict[str, Any]) -> str:
        e = self.endpoint
        tls = ssl.create_default_context()
        try:
            if e.scheme == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(e.host, e.port, timeout=self.timeout, context=tls)
            else:
                client = smtplib.SMTP(e.host, e.port, timeout=self.timeout)
            with client:
                client.ehlo()
                if e.scheme == "smtp" and client.has_extn("starttls"):
                    client.starttls(context=tls)
                    client.ehlo()
                if e.user:
                    if not self.password:
                        raise DeliveryError(f"{e.user} needs a password: set EMPSYNC_SMTP_PASSWORD", permanent=True)
                    if e.scheme == "smtp" and not isinstance(client.sock, ssl.SSLSocket):
                        raise DeliveryError(
                            "the server offers no STARTTLS: the password is not sent in clear (use smtps://)",
                            permanent=True,
                        )
                    client.login(e.user, self.password)
                refused = client.send_message(self.message(notice, context))
            if refused:
                return f"accepted, but refused for {', '.join(sorted(refused))}"
            return "accepted"
        except DeliveryError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"login refused ({exc.smtp_code})", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(
                f"every recipient refused: {', '.join(sorted(exc.recipients))}", permanent=True
            ) from None
        except smtplib.SMTPResponseException as exc:
            answer = clip(
                exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error),
                200,
            )
            raise DeliveryError(f"SMTP {exc.smtp_code}: {answer}", permanent=500 <= exc.smtp_code < 600) from None
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(f"TLS certificate not trusted: {exc.verify_message}", permanent=True) from None
        except TimeoutError:
            raise DeliveryError(f"no answer within {self.timeout:g} s") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"cannot connect: {getattr(exc, 'strerror', None) or exc}") from None


def _seconds(text: str | None) -> float | None:
    try:
        return max(0.0, float(text)) if text else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def receivers_for(notify: NotifyConfig, timeout: float = TIMEOUT_S) -> list[Receiver]:
    out: list[Receiver] = [WebhookReceiver(url, notify.format, timeout) for url in notify.webhook_urls]
    if notify.smtp_url and notify.email_to:
        out.append(EmailReceiver(notify, timeout))
    return out


# -- what a notice looks like -------------------------------------------------------------


def context_of(config: Config, identity: str) -> dict[str, Any]:
    s = config.source
    return {"service": identity, "collection": f"{s.project}/{s.database}/{s.collection}", "table": config.target.table}


def document(notice: Notice, context: dict[str, Any]) -> dict[str, Any]:
    """The JSON document a webhook receives (format = "json")."""
    return {
        "source": "empsync",
        "version": __version__,
        "kind": notice.kind,
        "severity": notice.severity,
        "condition": notice.condition or (notice.kind if notice.kind not in ("recovered", "test") else None),
        "title": notice.title,
        "text": notice.text,
        "at": iso(notice.at),
        **context,
        "details": notice.details,
    }


_ICONS = {CRITICAL: ":red_circle:", WARNING: ":warning:", INFO: ":information_source:", OK: ":white_check_mark:"}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(notice: Notice, context: dict[str, Any]) -> str:
    """Slack's mrkdwn (Mattermost and Teams workflows read it too): & < > escaped, as Slack asks."""
    return (
        f"{_ICONS.get(notice.severity, '')} *empsync: {_slack_escape(notice.title)}*\n"
        f"{_slack_escape(notice.text)}\n"
        f"_{_slack_escape(context.get('collection', ''))} → {_slack_escape(context.get('table', ''))}"
        f" · {_slack_escape(context.get('service', ''))}_"
    )


def plain_text(notice: Notice, context: dict[str, Any]) -> str:
    return (
        f"{notice.title}\n\n{notice.text}\n\n"
        f"Collection: {context.get('collection')}\nTable: {context.get('table')}\n"
        f"Service: {context.get('service')}\nAt: {iso(notice.at)}\n\n-- empsync {__version__}\n"
    )


def probe_notice() -> Notice:
    return Notice(
        "test",
        INFO,
        "Test notification",
        "empsync notify --test: if you read this, this receiver works.",
        utcnow(),
    )
