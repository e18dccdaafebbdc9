"""Reading the Firestore collection: pages, the watermark query, counts, and the read meter.

Only mapped fields are fetched (a field mask), so fields such as a password
hash never leave Firestore. Pages are cursor-based (``start_after``), never
``offset``: skipped documents are billed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .conditions import INEQUALITY_OPS
from .config import Config
from .errors import SourceError
from .firestore_compat import stream_documents
from .turns import Turns
from .watermark import Watermark

if TYPE_CHECKING:
    from google.cloud.firestore import Client
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.query import Query

log = logging.getLogger(__name__)

# Only the constructor reads FIRESTORE_EMULATOR_HOST; guard the swap.
_ENV_LOCK = threading.Lock()


@dataclass(frozen=True)
class SourceDoc:
    id: str
    data: dict[str, Any]
    update_time: datetime | None
    read_time: datetime | None = None
    exists: bool = True


class ReadMeter:
    """Billable Firestore reads: one per document returned, one per empty query, count() per 1,000 entries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.reads += n

    def documents(self, returned: int) -> None:
        self.add(returned if returned else 1)


def _transient_errors() -> tuple[type[BaseException], ...]:
    from google.api_core import exceptions as gexc

    return (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.InternalServerError,
        gexc.Aborted,
        gexc.ResourceExhausted,
        gexc.Unknown,
    )


@contextmanager
def _emulator_env(host: str) -> Iterator[None]:
    if not host:
        yield
        return
    with _ENV_LOCK:
        before = os.environ.get("FIRESTORE_EMULATOR_HOST")
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
            else:
                os.environ["FIRESTORE_EMULATOR_HOST"] = before


def make_client(config: Config) -> Client:
    """A Firestore client for [source]; the emulator when emulator_host is set."""
    from google.auth import exceptions as auth_exc
    from google.cloud import firestore

    s = config.source
    credentials = None
    try:
        if s.credentials and not s.emulator_host:
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(os.path.expanduser(s.credentials))
        with _emulator_env(s.emulator_host):
            return firestore.Client(project=s.project, database=s.database, credentials=credentials)
    except auth_exc.DefaultCredentialsError:
        raise SourceError(
            "no Google credentials found for Firestore",
            "set [source] credentials to a service-account JSON file, GOOGLE_APPLICATION_CREDENTIALS, "
            "or [source] emulator_host for the emulator",
        ) from None
    except (ValueError, OSError) as exc:
        raise SourceError(f"cannot use [source] credentials: {exc}") from None


class FirestoreSource:
    def __init__(
        self, config: Config, client: Client | None = None, meter: ReadMeter | None = None, turns: Turns | None = None
    ) -> None:
        from google.api_core.retry import Retry
        from google.cloud.firestore_v1.field_path import FieldPath

        self.config = config
        self.client = client or make_client(config)
        self.meter = meter or ReadMeter()
        self.turns = turns or Turns()
        self.where = source_label(config)
        s = config.source
        self.collection = self.client.collection(*s.collection.split("/"))
        paths = [FieldPath(*spec.parts).to_api_repr() for spec in config.fields]
        self.updated_path = FieldPath(*s.updated_field.split(".")).to_api_repr() if s.updated_field else ""
        # Read beside the mapped fields: the watermark's field, and what the conditions test.
        extra = [self.updated_path] if self.updated_path else []
        extra += [FieldPath(*c.parts).to_api_repr() for c in s.where]
        for path in extra:
            if path not in paths:
                paths.append(path)
        self.field_paths = paths
        self.conditions = s.where
        transient = _transient_errors()
        self.is_transient = lambda exc: isinstance(exc, transient)
        self.retry = Retry(
            predicate=self.is_transient,
            initial=0.25,
            maximum=8.0,
            multiplier=2.0,
            timeout=s.timeout,
        )

    # -- queries ---------------------------------------------------------------

    def base_query(self) -> Query:
        return self.collection.select(self.field_paths)

    def filtered_query(self) -> Query:
        """The mapped fields of the documents that meet ``[[source.where]]``: the others are never billed."""
        query = self.base_query()
        for condition in self.conditions:
            query = query.where(filter=condition.field_filter())
        return query

    def all_query(self) -> Query:
        if any(c.op in INEQUALITY_OPS for c in self.conditions):
            # Firestore orders by the inequality fields first: left implicit, so the query
            # needs no index beyond the ones it needs anyway, and a resumed stream follows it.
            return self.filtered_query()
        return self.filtered_query().order_by("__name__")

    def changed_query(self, since: Watermark | None) -> Query:
        """The documents changed since ``since``, whatever the conditions: one that stopped meeting
        them must be read, or it would never leave the table (``engine`` tests each one)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        # The filter keeps to timestamps: a string or number in the field sorts
        # apart and would otherwise be read again on every run.
        floor = since.ts if since is not None else datetime(1970, 1, 1, tzinfo=UTC)
        query = (
            self.base_query()
            .where(filter=FieldFilter(self.updated_path, ">=", floor))
            .order_by(self.updated_path)
            .order_by("__name__")
        )
        if since is not None and since.doc_id is not None:
            query = query.start_after([since.ts, since.doc_id])
        return query

    # -- reading ---------------------------------------------------------------

    def read(self, query: Query) -> Iterator[list[SourceDoc]]:
        """The query's documents from one stream, handed on ``page_size`` at a time.

        One RunQuery stream, not cursor pages: the emulator scans from the
        start of the collection again for every cursor (2,000-document pages
        took 2x a single stream at 50,000 documents), and even production
        Firestore, which seeks, pays a round trip per page. Memory stays
        bounded: gRPC's flow control holds the stream while the consumer is
        busy. A stream that breaks on a retryable error (a deadline, an
        unavailable server) resumes after the last document it returned, so a
        long read survives a server ending it. Decoding is
        ``firestore_compat``'s, a fifth of the client's cost per document.
        """
        page: list[SourceDoc] = []
        total = 0
        size = self.config.source.page_size
        give = self.turns.give
        with self.translate():
            for doc_id, data, update_time, read_time in stream_documents(query, self.retry, self.is_transient):
                give()
                page.append(SourceDoc(doc_id, data, update_time, read_time))
                if len(page) >= size:
                    total += len(page)
                    self.meter.add(len(page))
                    yield page
                    page = []
        total += len(page)
        self.meter.add(len(page) if total else 1)  # an empty result is billed one read
        if page:
            yield page

    def all_pages(self) -> Iterator[list[SourceDoc]]:
        return self.read(self.all_query())

    def changed_pages(self, since: Watermark | None) -> Iterator[list[SourceDoc]]:
        return self.read(self.changed_query(since))

    def count(self, timeout: float | None = None) -> int:
        timeout = timeout or self.config.source.timeout
        with self.translate():
            result = self.collection.count().get(retry=self.retry.with_timeout(timeout), timeout=timeout)
        n = int(result[0][0].value)
        self.meter.add(max(1, math.ceil(n / 1000)))
        return n

    def get(self, doc_ids: Sequence[str]) -> list[SourceDoc]:
        """Current versions of some documents (missing ones with exists=False)."""
        refs = [self.collection.document(i) for i in doc_ids]
        with self.translate():
            snaps = list(self.client.get_all(refs, field_paths=self.field_paths, retry=self.retry))
        self.meter.add(len(snaps))
        return [to_doc(s) for s in snaps]

    def updated_value(self, doc: SourceDoc) -> datetime | None:
        """The document's updated_field value if it is a timestamp."""
        if not self.updated_path:
            return None
        from .mapping import MISSING, lookup

        value = lookup(doc.data, tuple(self.config.source.updated_field.split(".")))
        return value if value is not MISSING and isinstance(value, datetime) else None

    @contextmanager
    def translate(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - every client error becomes one clear line
            error = describe_source_error(exc, self.where)
            if error is None:
                raise
            raise error from None

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a dead channel may raise; nothing to do
            pass


def source_label(config: Config) -> str:
    s = config.source
    place = f"emulator {s.emulator_host}" if s.emulator_host else "Firestore"
    return f"{place} (project {s.project}, collection {s.collection})"


def to_doc(snapshot: DocumentSnapshot[Any]) -> SourceDoc:  # of a sync or async reference
    """A snapshot (of a get or a listener) as a SourceDoc; query streams are read raw instead."""
    data = (snapshot.to_dict() or {}) if snapshot.exists else {}
    return SourceDoc(
        id=snapshot.id,
        data=data,
        update_time=snapshot.update_time,
        read_time=getattr(snapshot, "read_time", None),
        exists=snapshot.exists,
    )


def describe_source_error(exc: BaseException, where: str) -> SourceError | None:
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    detail = getattr(exc, "message", None) or str(exc)
    detail = detail.splitlines()[0][:200] if detail else type(exc).__name__
    if isinstance(exc, gexc.RetryError):
        cause = exc.cause
        detail = (getattr(cause, "message", None) or str(cause) or "timed out").splitlines()[0][:200]
        return SourceError(f"{where} unreachable: {detail}", "check the server or emulator is up; the next run retries")
    if isinstance(exc, (gexc.ServiceUnavailable, gexc.DeadlineExceeded)):
        return SourceError(f"{where} unreachable: {detail}", "check the server or emulator is up; the next run retries")
    if isinstance(exc, gexc.ResourceExhausted):
        return SourceError(f"{where} quota exhausted: {detail}", "empsync backs off; raise the quota or the interval")
    if isinstance(exc, gexc.PermissionDenied):
        return SourceError(f"{where}: permission denied: {detail}", "grant the service account roles/datastore.viewer")
    if isinstance(exc, (gexc.Unauthenticated, auth_exc.GoogleAuthError)):
        return SourceError(f"{where}: credentials rejected: {detail}", "check [source] credentials")
    if isinstance(exc, gexc.NotFound):
        return SourceError(f"{where}: not found: {detail}", "check [source] project and database")
    if isinstance(exc, gexc.FailedPrecondition) and "index" in (getattr(exc, "message", None) or str(exc)):
        return missing_index(exc, where)
    if isinstance(exc, gexc.GoogleAPICallError):
        return SourceError(f"{where}: {type(exc).__name__}: {detail}")
    return None


# Firestore's answer to a query that needs a composite index names a console link that creates it.
_INDEX_LINK = re.compile(r"https://console\.(?:firebase\.google|cloud\.google)\.com/\S+")


def missing_index(exc: BaseException, where: str) -> SourceError:
    """FAILED_PRECONDITION for a missing composite index: the link, and what to create, in words.

    Conditions on more than one field, or one with ``updated_field``, need a
    composite index in production Firestore (the emulator needs none).
    Firestore's message carries a link that opens the console with the index
    filled in; the link is printed whole, since it is the quickest way there.
    """
    text = getattr(exc, "message", None) or str(exc)
    found = _INDEX_LINK.search(text)
    link = found.group(0).rstrip(".,)") if found else None
    return SourceError(
        f"{where}: this query needs a composite index that does not exist yet",
        (f"create it from {link} " if link else "create it in the Firebase console (Firestore > Indexes) ")
        + "- the fields of [[source.where]] and [source] updated_field, ascending, on the collection "
        "- then run again; building an index takes a few minutes",
    )
