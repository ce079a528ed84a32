"""
Structured Field Dictionaries (RFC 8941 section 3.2), parsed strictly.

`parse_dictionary` follows the parsing algorithm of RFC 8941 section 4.2
exactly: anything the algorithm fails on raises `StructuredFieldError`, so a
caller can treat an invalid field as absent (as RFC 9213 asks of targeted
cache-control fields) instead of guessing what a sender meant.

Values are plain Python: ``int``, `Decimal`, ``str`` (sf-string), `Token`,
``bytes`` (byte sequence), ``bool``, and `InnerList` (a tuple of `Item`).
"""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal
from typing import NamedTuple

from multiproxy.pipeline._errors import MultiproxyError


class StructuredFieldError(MultiproxyError):
    """A field value is not a valid Structured Field of the type expected."""


class Token(str):
    """An sf-token (RFC 8941 3.3.4), kept apart from an sf-string."""

    __slots__ = ()


BareItem = int | Decimal | str | Token | bytes | bool
Parameters = dict[str, BareItem]


class Item(NamedTuple):
    """A bare item with its parameters."""

    value: BareItem
    params: Parameters


class InnerList(NamedTuple):
    """An inner list of items, with the list's own parameters."""

    items: tuple[Item, ...]
    params: Parameters


Member = Item | InnerList

_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_ALPHA = _LCALPHA | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGIT = frozenset("0123456789")
_KEY_FIRST = _LCALPHA | {"*"}
_KEY_CHARS = _LCALPHA | _DIGIT | frozenset("_-.*")
_TCHAR = _ALPHA | _DIGIT | frozenset("!#$%&'*+-.^_`|~")
_TOKEN_CHARS = _TCHAR | frozenset(":/")
_BASE64 = _ALPHA | _DIGIT | frozenset("+/=")
_INTEGER_MAX = 999_999_999_999_999


class _Input:
    """The input string and a position in it (the algorithm consumes characters)."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        c = self.peek()
        if not c:
            raise StructuredFieldError("the value ends too early")
        self.pos += 1
        return c

    def empty(self) -> bool:
        return self.pos >= len(self.text)

    def skip(self, chars: str) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in chars:
            pos += 1
        self.pos = pos


def field_text(lines: list[bytes]) -> str:
    """
    The field lines of one field as the string a parser reads: joined with
    ", " (RFC 8941 4.2), ASCII only.

    @raise StructuredFieldError: a byte outside ASCII.
    """
    joined = b", ".join(lines)
    try:
        return joined.decode("ascii")
    except UnicodeDecodeError:
        raise StructuredFieldError("a non-ASCII byte in a structured field") from None


def parse_dictionary(text: str) -> dict[str, Member]:
    """
    Parse ``text`` as an sf-dictionary (RFC 8941 4.2, 4.2.2).  A key given
    twice keeps its last value (4.2.2).

    @raise StructuredFieldError: ``text`` is not a valid dictionary.
    """
    if any(ord(c) > 0x7E or (ord(c) < 0x20 and c != "\t") for c in text):
        raise StructuredFieldError("a control or non-ASCII character in a structured field")
    inp = _Input(text)
    inp.skip(" ")
    out: dict[str, Member] = {}
    # Trailing SP is discarded before parsing (4.2 step 2): strip it here.
    inp.text = inp.text.rstrip(" ")
    while not inp.empty():
        key = _parse_key(inp)
        if inp.peek() == "=":
            inp.take()
            member = _parse_item_or_inner_list(inp)
        else:
            member = Item(True, _parse_parameters(inp))
        out[key] = member
        inp.skip(" \t")
        if inp.empty():
            return out
        if inp.take() != ",":
            raise StructuredFieldError("dictionary members must be separated by commas")
        inp.skip(" \t")
        if inp.empty():
            raise StructuredFieldError("a dictionary must not end with a comma")
    return out


def _parse_item_or_inner_list(inp: _Input) -> Member:
    if inp.peek() == "(":
        return _parse_inner_list(inp)
    return _parse_item(inp)


def _parse_inner_list(inp: _Input) -> InnerList:
    inp.take()  # "("
    items: list[Item] = []
    while not inp.empty():
        inp.skip(" ")
        if inp.peek() == ")":
            inp.take()
            return InnerList(tuple(items), _parse_parameters(inp))
        items.append(_parse_item(inp))
        if inp.peek() not in (" ", ")"):
            raise StructuredFieldError("inner list items must be separated by spaces")
    raise StructuredFieldError("an inner list is not closed")


def _parse_item(inp: _Input) -> Item:
    value = _parse_bare_item(inp)
    return Item(value, _parse_parameters(inp))


def _parse_bare_item(inp: _Input) -> BareItem:
    c = inp.peek()
    if c == "-" or c in _DIGIT:
        return _parse_number(inp)
    if c == '"':
        return _parse_string(inp)
    if c in _ALPHA or c == "*":
        return _parse_token(inp)
    if c == ":":
        return _parse_byte_sequence(inp)
    if c == "?":
        return _parse_boolean(inp)
    raise StructuredFieldError(f"no item starts with {c!r}" if c else "an item is missing")


def _parse_parameters(inp: _Input) -> Parameters:
    params: Parameters = {}
    while inp.peek() == ";":
        inp.take()
        inp.skip(" ")
        key = _parse_key(inp)
        value: BareItem = True
        if inp.peek() == "=":
            inp.take()
            value = _parse_bare_item(inp)
        params[key] = value
    return params


def _parse_key(inp: _Input) -> str:
    if inp.peek() not in _KEY_FIRST:
        raise StructuredFieldError("a key must start with a lower-case letter or *")
    start = inp.pos
    text = inp.text
    pos = start
    while pos < len(text) and text[pos] in _KEY_CHARS:
        pos += 1
    inp.pos = pos
    return text[start:pos]


def _parse_number(inp: _Input) -> int | Decimal:
    sign = 1
    if inp.peek() == "-":
        inp.take()
        sign = -1
    if inp.peek() not in _DIGIT:
        raise StructuredFieldError("a number needs a digit")
    digits = []
    decimal = False
    while not inp.empty():
        c = inp.peek()
        if c in _DIGIT:
            digits.append(inp.take())
        elif not decimal and c == ".":
            if len(digits) > 12:
                raise StructuredFieldError("a decimal has at most 12 integer digits")
            digits.append(inp.take())
            decimal = True
        else:
            break
        if not decimal and len(digits) > 15:
            raise StructuredFieldError("an integer has at most 15 digits")
        if decimal and len(digits) > 16:
            raise StructuredFieldError("a decimal has at most 16 characters")
    number = "".join(digits)
    if not decimal:
        return sign * int(number)
    if number.endswith("."):
        raise StructuredFieldError("a decimal must not end with a dot")
    if len(number) - number.index(".") - 1 > 3:
        raise StructuredFieldError("a decimal has at most 3 fraction digits")
    return sign * Decimal(number)


def _parse_string(inp: _Input) -> str:
    inp.take()  # '"'
    out = []
    while not inp.empty():
        c = inp.take()
        if c == "\\":
            if inp.empty():
                raise StructuredFieldError("a string ends in a backslash")
            nxt = inp.take()
            if nxt not in ('"', "\\"):
                raise StructuredFieldError("only \\\" and \\\\ are escapes in a string")
            out.append(nxt)
        elif c == '"':
            return "".join(out)
        elif ord(c) < 0x20 or ord(c) > 0x7E:
            raise StructuredFieldError("a control character in a string")
        else:
            out.append(c)
    raise StructuredFieldError("a string is not closed")


def _parse_token(inp: _Input) -> Token:
    start = inp.pos
    inp.take()
    text = inp.text
    pos = inp.pos
    while pos < len(text) and text[pos] in _TOKEN_CHARS:
        pos += 1
    inp.pos = pos
    return Token(text[start:pos])


def _parse_byte_sequence(inp: _Input) -> bytes:
    inp.take()  # ":"
    end = inp.text.find(":", inp.pos)
    if end < 0:
        raise StructuredFieldError("a byte sequence is not closed")
    content = inp.text[inp.pos:end]
    inp.pos = end + 1
    if any(c not in _BASE64 for c in content):
        raise StructuredFieldError("a byte sequence holds a character outside base64")
    try:
        # RFC 8941 4.2.7: padding may be omitted.
        return base64.b64decode(content + "=" * (-len(content) % 4))
    except (binascii.Error, ValueError):
        raise StructuredFieldError("a byte sequence is not valid base64") from None


def _parse_boolean(inp: _Input) -> bool:
    inp.take()  # "?"
    c = inp.peek()
    if c == "1":
        inp.take()
        return True
    if c == "0":
        inp.take()
        return False
    raise StructuredFieldError("a boolean is ?0 or ?1")
