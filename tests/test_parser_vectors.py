"""
Replays the request-smuggling and parsing corpus (tests/vectors/smuggling.py)
through the readers and target checks: every hostile vector is refused with
its status, every tricky-but-valid one is accepted with its body.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from multiproxy.http1._parser import (
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    RequestReader,
    ResponseReader,
)
from multiproxy.http1._target import parse_absolute_target, parse_authority
from multiproxy.pipeline._errors import ProtocolError


def load_corpus():
    """Import tests/vectors/smuggling.py by path (the folder is data, not a package)."""
    path = Path(__file__).parent / "vectors" / "smuggling.py"
    spec = importlib.util.spec_from_file_location("multiproxy_smuggling_vectors", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CORPUS = load_corpus()
VECTORS = CORPUS.load_vectors()


def _read(reader, data: bytes, bytewise: bool):
    """Feed ``data``; return (head, body) once the message is complete."""
    head = None
    body = []
    pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for piece in pieces:
        reader.feed(piece)
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                return head, b"".join(body)
            if type(event) is Data:
                body.append(event.data)
            elif type(event) is EndOfMessage:
                continue
            else:
                head = event
    raise AssertionError(f"message incomplete after all bytes: {head!r}")


def _outcome(vector, bytewise: bool):
    """The status the vector gets (None when accepted) and the body read."""
    try:
        if vector.direction == "response":
            reader = ResponseReader()
            reader.expect(b"GET")
            head, body = _read(reader, vector.data, bytewise)
            return None, body
        head, body = _read(RequestReader(), vector.data, bytewise)
        if vector.stage == "target":
            parse_absolute_target(head.target)
        elif vector.stage == "authority":
            parse_authority(head.target)
        return None, body
    except ProtocolError as error:
        return error.status, None


def test_corpus_is_large_and_names_are_unique():
    names = [v.name for v in VECTORS]
    assert len(names) == len(set(names))
    assert len([v for v in VECTORS if v.status is not None]) >= 150
    assert {v.stage for v in VECTORS} == {"parser", "target", "authority"}


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_vector_gets_its_status_fed_whole(vector):
    status, body = _outcome(vector, bytewise=False)
    assert status == vector.status, vector.note
    if vector.body is not None:
        assert body == vector.body


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_vector_gets_its_status_fed_bytewise(vector):
    status, body = _outcome(vector, bytewise=True)
    assert status == vector.status, vector.note
    if vector.body is not None:
        assert body == vector.body


def test_render_swaps_in_the_origin_authority():
    vector = next(v for v in VECTORS if v.name == "cl-te")
    rendered = vector.render(b"127.0.0.1:8000")
    assert rendered.startswith(b"POST http://127.0.0.1:8000/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
    assert b"origin.test" not in rendered
