"""
The strict RFC 8941 dictionary parser (`multiproxy.http1._structured`): what
it accepts, and that every step of the parsing algorithm that must fail does.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiproxy.http1._structured import (
    InnerList,
    Item,
    StructuredFieldError,
    Token,
    field_text,
    parse_dictionary,
)


def values(text: str) -> dict:
    return {k: m.value if isinstance(m, Item) else m for k, m in parse_dictionary(text).items()}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {}),
        ("a=1", {"a": 1}),
        ("a=1,b=2", {"a": 1, "b": 2}),
        ("a=1 ,  b=2", {"a": 1, "b": 2}),
        ("a=1\t,\tb=2", {"a": 1, "b": 2}),
        ("   a=1, b=2   ", {"a": 1, "b": 2}),
        ("a, b, c", {"a": True, "b": True, "c": True}),
        ("a=?1, b=?0", {"a": True, "b": False}),
        ("max-age=60, no-store", {"max-age": 60, "no-store": True}),
        ('no-cache="set-cookie, x-a"', {"no-cache": "set-cookie, x-a"}),
        ('a="q\\"uo\\\\te"', {"a": 'q"uo\\te'}),
        ("a=foo/bar:baz, b=*x", {"a": "foo/bar:baz", "b": "*x"}),
        ("a=-999999999999999", {"a": -999999999999999}),
        ("a=123456789012.123", {"a": Decimal("123456789012.123")}),
        ("a=:aGVsbG8=:", {"a": b"hello"}),
        ("a=:aGVsbG8:", {"a": b"hello"}),
        ("a=1,b=2,a=3", {"a": 3, "b": 2}),
    ],
)
def test_valid_dictionaries(text, expected):
    assert values(text) == expected


def test_tokens_and_strings_stay_apart():
    d = values('a=tok, b="tok"')
    assert isinstance(d["a"], Token) and not isinstance(d["b"], Token)


def test_parameters_and_inner_lists_are_kept():
    d = parse_dictionary("a=(1 2);p=1, b;q=?0, c=3;r")
    assert d["a"] == InnerList((Item(1, {}), Item(2, {})), {"p": 1})
    assert d["b"] == Item(True, {"q": False})
    assert d["c"] == Item(3, {"r": True})


@pytest.mark.parametrize(
    "text",
    [
        "a =1",  # no space before =
        "a= 1",  # nor after it
        "a=1, b=2,",  # trailing comma
        "a=1,,b=2",  # empty member
        ",a=1",
        "1a=2",  # a key starts with a lower-case letter or *
        "Max-Age=60",  # keys are lower case
        "a!=1",
        "a=1 b=2",  # members are separated by commas
        "a=1000000000000000",  # 16 integer digits
        "a=1234567890123.1",  # 13 integer digits in a decimal
        "a=1.1234",  # 4 fraction digits
        "a=1.",
        "a=--1",
        "a=-",
        "a=1.2.3",
        'a="unterminated',
        'a="bad\\escape"',
        'a="tab\there"',
        "a=?2",
        "a=(1,2)",
        "a=(1 2",
        "a=:abc",
        "a=:a*b:",
        "a=@1",  # dates and display strings are not RFC 8941
        'a=%"x"',
        "a=1;P=2",
        "a=1;",
        "\ta=1",  # only SP is discarded before the first member
        "a=\u00e9",
        "a=1\x00",
    ],
)
def test_invalid_dictionaries_fail(text):
    with pytest.raises(StructuredFieldError):
        parse_dictionary(text)


def test_field_lines_are_joined_with_a_comma():
    assert values(field_text([b"a=1", b"b=2"])) == {"a": 1, "b": 2}


def test_a_non_ascii_byte_fails():
    with pytest.raises(StructuredFieldError):
        field_text([b"a=\xff"])


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40))
def test_any_text_either_parses_or_fails_cleanly(text):
    try:
        parse_dictionary(text)
    except StructuredFieldError:
        pass
