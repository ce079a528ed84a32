"""
The frozen values whose ``__init__`` is written by hand for speed (`Intent`,
`ForwardedRequest`) behave exactly as the dataclass-generated one would.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from multiproxy.http._exchange import ForwardedRequest
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import RequestHead
from multiproxy.pipeline._values import Intent

HAND_WRITTEN = [Intent, ForwardedRequest]


@pytest.mark.parametrize("cls", HAND_WRITTEN, ids=lambda c: c.__name__)
def test_init_takes_the_fields_in_order_with_their_defaults(cls):
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    fields = dataclasses.fields(cls)
    assert [p.name for p in parameters] == [f.name for f in fields]
    for parameter, field in zip(parameters, fields):
        expected = inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        assert parameter.default == expected, field.name
        assert field.default_factory is dataclasses.MISSING


def _intent(**changes) -> Intent:
    values = dict(kind="http", proxy="fwd", client_host="127.0.0.1", client_port=5000,
                  host="example.com", port=80, method="GET", scheme="http",
                  target="http://example.com/", headers=Headers([(b"Host", b"example.com")]))
    values.update(changes)
    return Intent(**values)


def test_intent_sets_every_field_and_keeps_defaults():
    intent = _intent()
    assert intent.host == "example.com"
    assert intent.user is None
    assert intent.groups == frozenset()
    assert Intent("tcp", "relay", "::1", 1).target == ""


def test_intent_is_frozen_comparable_and_replaceable():
    intent = _intent()
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent.host = "other.example"
    assert intent == _intent()
    assert intent != _intent(port=8080)
    named = dataclasses.replace(intent, user="ann", groups=frozenset({"staff"}))
    assert (named.user, named.groups, named.host) == ("ann", frozenset({"staff"}), "example.com")
    assert intent.user is None
    assert "host='example.com'" in repr(intent)


def test_forwarded_request_is_frozen_and_replaceable():
    head = RequestHead(b"GET", b"/", b"HTTP/1.1", Headers())
    request = ForwardedRequest(_intent(), "upstream", head)
    assert request.body is None and request.idempotent
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.upstream = "other"
    moved = dataclasses.replace(request, upstream="other")
    assert (moved.upstream, moved.head, moved.intent) == ("other", head, request.intent)
