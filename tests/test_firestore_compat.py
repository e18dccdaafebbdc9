"""The fast reader decodes exactly as the client does, and the client still has what it relies on.

No server: a client made for the emulator does not connect until it is used,
and encoding and decoding values are pure.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from google.cloud.firestore_v1 import GeoPoint, _helpers
from google.cloud.firestore_v1.base_query import BaseQuery
from google.cloud.firestore_v1.vector import Vector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import config as cfg
from core.firestore_compat import decode_fields, decode_value
from core.source import make_client


@pytest.fixture(scope="module")
def client():
    config = cfg.from_dict({"source": {"project": "compat", "emulator_host": "127.0.0.1:9"}, "fields": {"name": {}}})
    made = make_client(config)
    yield made
    made.close()


moments = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=40),
    moments,
    st.builds(GeoPoint, st.floats(-90, 90), st.floats(-180, 180)),
)
keys = st.one_of(st.text(max_size=12), st.sampled_from(["__type__", "__name__", "value", "__int__", "a.b", ""]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def same(a, b) -> bool:
    """Equality that holds NaN equal to NaN and compares types, as the content hash would."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values)
def test_decoding_a_value_matches_the_client(client, value):
    pb = _helpers.encode_value(value)._pb
    assert same(decode_value(pb, client), _helpers.decode_value(pb, client))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(keys, values, max_size=6))
def test_decoding_a_document_matches_the_client(client, data):
    fields = _helpers.encode_dict(data)
    from google.cloud.firestore_v1.types import Document

    pb = Document(fields=fields)._pb.fields
    assert same(decode_fields(pb, client), _helpers.decode_dict(pb, client))


def test_references_and_vectors_decode_as_the_client_does(client):
    reference = client.document("departments/eng")
    pb = _helpers.encode_value(reference)._pb
    assert decode_value(pb, client).path == "departments/eng"
    vector = _helpers.encode_value(Vector([1.0, 2.0]))._pb
    assert decode_value(vector, client) == Vector([1.0, 2.0])


def test_the_private_names_the_fast_reader_uses_still_exist(client):
    query = client.collection("employees").select(["name"]).order_by("__name__")
    request, prefix, kwargs = query._prep_stream(None, None, None)
    assert request["structured_query"] is not None and prefix.endswith("/documents/employees")
    assert hasattr(client._firestore_api, "run_query")
    assert isinstance(client._rpc_metadata, list)
    assert isinstance(query, BaseQuery) and hasattr(query, "_parent")
    assert callable(_helpers.decode_dict) and callable(_helpers.decode_value)


def test_the_private_names_listen_mode_uses_still_exist(client):
    """Each hook of firestore_compat: if an upgrade moves one, this fails instead of listen mode."""
    import inspect

    from google.cloud.firestore_v1 import watch

    from core.firestore_compat import grpc_channel, no_reopen, unordered

    assert callable(watch._should_recover) and "_should_recover" in inspect.getsource(watch.Watch)
    with no_reopen():
        assert watch._should_recover(RuntimeError("any")) is False
    assert watch._should_recover is not None and watch._should_recover.__name__ == "_should_recover"
    query = client.collection("employees").select(["name"])
    assert "_comparator" in inspect.getsource(watch.Watch.for_query)
    assert unordered(query)._comparator(object(), object()) == 0
    assert isinstance(watch._RPC_ERROR_THREAD_NAME, str)
    assert hasattr(grpc_channel(client), "subscribe")
