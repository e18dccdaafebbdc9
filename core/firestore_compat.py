"""What empsync needs from google-cloud-firestore beyond its public API, in one place.

Each use of a private name lives here, so an upgrade of the client that
moves one fails ``tests/test_firestore_compat.py`` instead of quietly
slowing or breaking a read. The dependency is pinned below its next major
version in pyproject.toml for the same reason. Here: the fast read (below),
and for listen mode a watch that never reopens itself (``no_reopen``), a
query whose snapshots are not sorted (``unordered``), the gRPC channel whose
state tells a dead link (``grpc_channel``), and one log line for a stream's
end instead of a traceback (``quiet_stream_endings``).

The fast read
-------------

``Query.stream()`` turns every returned document into a ``DocumentSnapshot``
through proto-plus wrappers and a deep copy of its data: about 240 µs of
CPU per employee document, the most expensive part of a force run on a
two-core host (a 50,000-document read spent 12 s of CPU in the client
alone). ``stream_documents`` sends the same RunQuery request the client
builds (``Query._prep_stream``) through the client's own transport
(``Client._firestore_api``, with its retry and credentials) and decodes the
raw protobuf responses itself, into the values ``_helpers.decode_value``
would give. Maps that may be a vector or a BSON value (a key starting with
``__``) and references go through the client's own decoder, so nothing
rare is decoded differently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

# Consecutive stream breaks with no document in between before a read gives up.
MAX_FRUITLESS_RESUMES = 5


def stream_documents(query: Any, retry: Any, predicate: Any) -> Iterator[tuple[str, dict[str, Any], Any, Any]]:
    """(id, data, update_time, read_time) of each document of ``query``, from one resumable stream.

    A stream that breaks on an error ``predicate`` accepts (a deadline, an
    unavailable server) is opened again after the last document returned,
    as the client's own ``stream()`` does.
    """
    from google.api_core import exceptions as gexc

    client = query._client
    last: tuple[str, dict[str, Any]] | None = None
    fruitless = 0
    while True:
        current = query if last is None else query.start_after(_snapshot_at(query, *last))
        request, expected_prefix, kwargs = current._prep_stream(None, retry, None)
        responses = client._firestore_api.run_query(request=request, metadata=client._rpc_metadata, **kwargs)
        try:
            for response in responses:
                pb = response._pb
                if not pb.HasField("document"):
                    continue
                document = pb.document
                prefix, _, doc_id = document.name.rpartition("/")
                if prefix != expected_prefix:
                    raise ValueError(f"unexpected document name {document.name!r}")
                data = decode_fields(document.fields, client)
                fruitless = 0
                last = (doc_id, data)
                yield doc_id, data, _timestamp(document.update_time), _timestamp(pb.read_time)
            return
        except gexc.GoogleAPICallError as exc:
            fruitless += 1
            if not predicate(exc) or fruitless > MAX_FRUITLESS_RESUMES:
                raise
            log.debug("Firestore stream broke (%s); resuming after the last document", type(exc).__name__)


def _snapshot_at(query: Any, doc_id: str, data: dict[str, Any]) -> Any:
    """A snapshot of the last document read, for ``start_after``: its id and its ordered fields."""
    from google.cloud.firestore_v1.document import DocumentSnapshot

    reference = query._parent.document(doc_id)
    return DocumentSnapshot(reference, data, exists=True, read_time=None, create_time=None, update_time=None)


def _timestamp(pb: Any) -> Any:
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds

    return DatetimeWithNanoseconds.from_timestamp_pb(pb)


def decode_fields(fields: Any, client: Any) -> Any:
    """A raw protobuf map of Values as Python values, as ``_helpers.decode_dict`` gives them.

    A dict, or the value a map of the client's special ``__`` keys stands for (a vector, a BSON value).
    """
    if any(key.startswith("__") for key in fields):
        from google.cloud.firestore_v1 import _helpers

        return _helpers.decode_dict(fields, client)  # perhaps a vector or a BSON value
    return {key: decode_value(value, client) for key, value in fields.items()}


def decode_value(value: Any, client: Any) -> Any:
    kind = value.WhichOneof("value_type")
    if kind == "string_value":
        return value.string_value
    if kind == "integer_value":
        return value.integer_value
    if kind == "timestamp_value":
        return _timestamp(value.timestamp_value)
    if kind == "boolean_value":
        return value.boolean_value
    if kind == "double_value":
        return value.double_value
    if kind == "null_value":
        return None
    if kind == "map_value":
        return decode_fields(value.map_value.fields, client)
    if kind == "array_value":
        return [decode_value(v, client) for v in value.array_value.values]
    if kind == "bytes_value":
        return value.bytes_value
    from google.cloud.firestore_v1 import _helpers

    return _helpers.decode_value(value, client)  # references, geopoints and what comes next


# -- listen mode ---------------------------------------------------------------------------------


@contextmanager
def no_reopen() -> Iterator[None]:
    """Streams opened inside never reopen themselves: the watchdog re-subscribes, with backoff.

    google-api-core's resumable stream reopens at once on any retryable error,
    without backoff. While the server refuses connections each new call fails
    as it starts, its done callback runs inside ``open()`` and reopens again:
    thousands of threads a second, then a RecursionError in gRPC's own threads
    that wedged the client (a later poll never returned), and a stream closed
    meanwhile lived on without a target, a thread and a stream left per outage.
    The watch takes ``watch._should_recover`` when it is built, so refusing
    recovery here ends a broken stream instead; the listener sees it stopped.
    """
    from google.cloud.firestore_v1 import watch

    recover = watch._should_recover
    watch._should_recover = lambda _exc: False
    try:
        yield
    finally:
        watch._should_recover = recover


def unordered(query: Any) -> Any:
    """The query, its snapshots left unsorted by the watch.

    The client sorts every snapshot's documents, all of them, with the
    query's ``_comparator``, which builds protobuf messages on each
    comparison: a fifth of the client's CPU at 3,000 watched documents, and
    a sort of the whole collection per snapshot when the collection is
    watched. Nothing in empsync reads an order.
    """
    query._comparator = _same_place
    return query


def _same_place(_a: object, _b: object) -> int:
    return 0  # a stable sort keeps the client's own order, in one pass


def grpc_channel(client: Any) -> Any:
    """The client's gRPC channel (its connectivity tells a dead link the stream does not report)."""
    return client._firestore_api._transport.grpc_channel


def quiet_stream_endings(log_end: Callable[[Exception], None]) -> None:
    """A stream's end becomes ``log_end(error)`` instead of the traceback Python prints for it.

    The client ends a broken stream by re-raising its error on a thread of
    its own (``watch._RPC_ERROR_THREAD_NAME``), which nobody joins: the
    watchdog re-subscribes, so for the operator this is an expected event,
    not a crash. Other threads keep the usual hook.
    """
    from google.cloud.firestore_v1 import watch

    previous = threading.excepthook
    if getattr(previous, "empsync_quiet_streams", False):
        return
    name = watch._RPC_ERROR_THREAD_NAME

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = args.thread
        if thread is not None and thread.name == name and isinstance(args.exc_value, Exception):
            log_end(args.exc_value)
            return
        previous(args)

    hook.empsync_quiet_streams = True  # type: ignore[attr-defined]
    threading.excepthook = hook
