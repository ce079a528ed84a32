"""
Host names as a policy sees them: one spelling per destination.

`normalise_host` is applied by every proxy when it builds an `Intent` and by
the rule parser to every host pattern, so a rule and a request meet in the
same canonical form and a rule cannot be dodged by writing the host another
way (case, trailing dot, Unicode, or an odd IP literal spelling).

The IPv4 rules follow the WHATWG URL standard's "IPv4 parser", which is what
browsers do and what ``inet_aton`` accepts: a host whose last label is a
number is an IPv4 address (``0x7f.1``, ``2130706433``, ``0177.0.0.1`` and
``127.1`` are all 127.0.0.1) or is invalid; it is never a domain name.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from multiproxy import _memo as memo
from multiproxy.policy._networks import NetworkSet, parse_network

try:
    import idna as _idna
except ImportError:  # pragma: no cover - idna comes with Twisted (via hyperlink)
    _idna = None

__all__ = ["HostMatcher", "HostPattern", "host_suffixes", "is_ip_literal", "normalise_host",
           "parse_host_pattern", "parse_name_pattern"]

_MAX_NAME = 253
_MAX_LABEL = 63
_LABEL = re.compile(r"[a-z0-9_-]{1,63}\Z")
# WHATWG "forbidden host code points", plus what can never be in a name.
_FORBIDDEN = re.compile(r"[\x00-\x20#/:<>?@\[\\\]^|%\x7f]")
_DIGITS = re.compile(r"[0-9]+\Z")
_HEX = re.compile(r"[0-9a-fA-F]*\Z")
_OCTAL = re.compile(r"[0-7]*\Z")


@memo.cached("policy.normalise-host", 4096)
def normalise_host(host: str) -> str:
    """
    The canonical form of a host name or IP literal, for matching and logging.

    - domain names: Unicode mapped with UTS #46 and converted to IDNA ASCII
      (``xn--``) form, lower-cased, one trailing dot removed;
    - IPv4 literals in any spelling browsers and ``inet_aton`` accept become
      dotted decimal (``0x7f.1`` -> ``127.0.0.1``);
    - IPv6 literals, with or without brackets, become the compressed form
      without brackets (``[0:0::1]`` -> ``::1``); an IPv4-mapped address
      (``::ffff:127.0.0.1``) becomes the IPv4 address it maps to, since a
      dual-stack socket connecting to it reaches that IPv4 host.

    @raise ValueError: the host is not a valid host name or IP literal (the
        message says why); the caller answers 400 or refuses the rule.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if not host:
        raise ValueError("host is empty")
    if host[0] == "[":
        if host[-1] != "]":
            raise ValueError(f"host {host!r}: '[' without a closing ']'")
        return _normalise_ipv6(host[1:-1], host)
    if ":" in host:
        return _normalise_ipv6(host, host)
    if not host.isascii():
        host = _unicode_to_ascii(host)
    if host.endswith("."):
        host = host[:-1]
    host = host.lower()
    bad = _FORBIDDEN.search(host)
    if bad:
        raise ValueError(f"host {host!r} contains a forbidden character {bad.group()!r}")
    labels = host.split(".")
    if _ends_in_number(labels):
        return _parse_ipv4(labels, host)
    return _check_domain(labels, host)


def is_ip_literal(host: str) -> bool:
    """Whether a host returned by `normalise_host` is an IP address (not a name)."""
    # A normalised name never ends in a digit-only label, so this is exact.
    return ":" in host or (bool(host) and host[-1].isdigit() and
                           _DIGITS.match(host.rpartition(".")[2]) is not None)


def host_suffixes(host: str) -> Iterator[str]:
    """
    The host itself and each parent domain, longest first
    (``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``).
    """
    yield host
    i = host.find(".")
    while i != -1:
        yield host[i + 1:]
        i = host.find(".", i + 1)


def _normalise_ipv6(text: str, original: str) -> str:
    if "%" in text:
        raise ValueError(f"host {original!r}: IPv6 zone identifiers are not allowed")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError as e:
        raise ValueError(f"host {original!r} is not a valid IPv6 address ({e})") from None
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return address.compressed


def _unicode_to_ascii(host: str) -> str:
    if _idna is not None:
        try:
            mapped = _idna.uts46_remap(host, std3_rules=False, transitional=False)
        except _idna.IDNAError as e:
            raise ValueError(f"host {host!r} is not a valid internationalised name ({e})") \
                from None
        labels = mapped.split(".")
        out = []
        for label in labels:
            if label.isascii():
                out.append(label)
                continue
            try:
                out.append(_idna.alabel(label).decode("ascii"))
            except (_idna.IDNAError, UnicodeError) as e:
                raise ValueError(
                    f"host {host!r} is not a valid internationalised name ({e})"
                ) from None
        return ".".join(out)
    try:  # pragma: no cover - only without the idna package
        return host.encode("idna").decode("ascii")
    except UnicodeError as e:  # pragma: no cover
        raise ValueError(f"host {host!r} is not a valid internationalised name ({e})") from None


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    if not last:
        return False
    if _DIGITS.match(last):
        return True
    return _ipv4_number(last) is not None


def _ipv4_number(part: str) -> int | None:
    if not part:
        return None
    if part[:2] in ("0x", "0X"):
        digits, radix, pattern = part[2:], 16, _HEX
    elif len(part) > 1 and part[0] == "0":
        digits, radix, pattern = part[1:], 8, _OCTAL
    else:
        digits, radix, pattern = part, 10, _DIGITS
    if not digits:
        return 0
    if not pattern.match(digits):
        return None
    return int(digits, radix)


def _parse_ipv4(labels: list[str], host: str) -> str:
    if len(labels) > 4:
        raise ValueError(f"host {host!r} looks like an IPv4 address but has more than 4 parts")
    numbers = []
    for part in labels:
        number = _ipv4_number(part)
        if number is None:
            raise ValueError(
                f"host {host!r} looks like an IPv4 address but {part!r} is not a number"
            )
        numbers.append(number)
    for number in numbers[:-1]:
        if number > 255:
            raise ValueError(f"host {host!r}: IPv4 address part {number} is above 255")
    if numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"host {host!r}: IPv4 address is out of range")
    value = numbers[-1]
    for i, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def _check_domain(labels: list[str], host: str) -> str:
    if len(host) > _MAX_NAME:
        raise ValueError(f"host name is longer than {_MAX_NAME} characters: {host[:40]!r}...")
    for label in labels:
        if not label:
            raise ValueError(f"host {host!r} has an empty label")
        if len(label) > _MAX_LABEL:
            raise ValueError(f"host {host!r} has a label longer than {_MAX_LABEL} characters")
        if not _LABEL.match(label):
            raise ValueError(
                f"host {host!r}: label {label!r} may only hold letters, digits, '-' and '_'"
            )
        if label.startswith("xn--"):
            canonical = _canonical_alabel(label, host)
            if canonical != label:
                raise ValueError(f"host {host!r}: {label!r} is not a canonical IDNA label")
    return host


def _canonical_alabel(label: str, host: str) -> str:
    try:
        if _idna is not None:
            return _idna.alabel(_idna.ulabel(label)).decode("ascii")
        return label.encode("ascii").decode("idna").encode("idna").decode(  # pragma: no cover
            "ascii")
    except (UnicodeError, ValueError) as e:
        raise ValueError(f"host {host!r}: {label!r} is not a valid IDNA label ({e})") from None


PatternKind = Literal["exact", "suffix", "glob", "network"]


@dataclass(frozen=True, slots=True)
class HostPattern:
    """
    One destination pattern of a rule, already normalised.

    - ``exact``: ``example.com`` matches that host only;
    - ``suffix``: ``.example.com`` matches ``example.com`` and every name under
      it (``www.example.com``, ``a.b.example.com``), not ``badexample.com``
      (Squid's ``dstdomain`` semantics); never an IP literal;
    - ``glob``: ``*`` matches any run of characters, dots included, and ``?``
      one character, over the whole normalised host (``ads*.example.*``);
    - ``network``: ``10.0.0.0/8`` or ``fd00::/8`` matches IP-literal hosts in
      that network (names are not resolved, so a name that resolves into the
      network does not match).
    """

    kind: PatternKind
    value: str
    text: str


def parse_host_pattern(text: str) -> HostPattern:
    """
    Parse one host pattern as written in a rule (see `HostPattern`).

    @raise ValueError: with a message that says what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a host pattern must be a non-empty string")
    text = text.strip()
    if "/" in text:
        return HostPattern("network", str(parse_network(text)), text)
    if "*" in text or "?" in text:
        return HostPattern("glob", _normalise_glob(text), text)
    return parse_name_pattern(text)


def parse_name_pattern(text: str, what: str = "host pattern") -> HostPattern:
    """
    An ``exact`` host or a ``.suffix`` pattern (stripped text, no network,
    no glob); ``what`` names it in errors.

    @raise ValueError: with a message that says what is wrong.
    """
    if text.startswith("."):
        if text.startswith(".."):
            raise ValueError(f"{what} {text!r} starts with two dots")
        value = normalise_host(text[1:])
        if is_ip_literal(value):
            raise ValueError(
                f"{what} {text!r}: a domain suffix cannot be an IP address "
                "(write a network such as 10.0.0.0/8 instead)"
            )
        return HostPattern("suffix", value, text)
    return HostPattern("exact", normalise_host(text), text)


def _normalise_glob(text: str) -> str:
    if text.endswith("."):
        text = text[:-1]
    labels = []
    for label in text.split("."):
        if not label:
            raise ValueError(f"host pattern {text!r} has an empty label")
        if not label.isascii():
            label = _unicode_to_ascii(label)
        labels.append(label.lower())
    value = ".".join(labels)
    if not re.fullmatch(r"[a-z0-9_.*?:-]+", value):
        raise ValueError(
            f"host pattern {text!r} may only hold letters, digits, '.', '-', '_', '*' and '?'"
        )
    return value


def glob_tail(value: str) -> str | None:
    """
    For a glob pattern, the parent domain every match must lie under, if the
    literal text after the last wildcard is a whole-label suffix
    (``ads*.example.com`` -> ``example.com``); None otherwise.
    """
    cut = max(value.rfind("*"), value.rfind("?"))
    tail = value[cut + 1:]
    if tail.startswith(".") and len(tail) > 1:
        return tail[1:]
    return None


class HostMatcher:
    """
    The host condition of one rule: a set of `HostPattern`s, any of which may
    match.  Exact hosts and suffixes are looked up in sets, and globs with a
    literal parent domain are filed under it (one lookup per label of the
    host), so a rule listing ten thousand sites costs about the same to check
    as a rule listing one.  Only globs like ``ads*`` are tried one by one.
    """

    __slots__ = ("patterns", "_exact", "_suffixes", "_tailed_globs", "_globs", "_networks")

    def __init__(self, patterns: Iterable[HostPattern]) -> None:
        self.patterns: tuple[HostPattern, ...] = tuple(patterns)
        if not self.patterns:
            raise ValueError("a host condition needs at least one pattern")
        self._exact = frozenset(p.value for p in self.patterns if p.kind == "exact")
        self._suffixes = frozenset(p.value for p in self.patterns if p.kind == "suffix")
        tailed: dict[str, list[re.Pattern[str]]] = {}
        globs = []
        for p in self.patterns:
            if p.kind != "glob":
                continue
            compiled = re.compile(fnmatch.translate(p.value))
            tail = glob_tail(p.value)
            if tail is None:
                globs.append(compiled)
            else:
                tailed.setdefault(tail, []).append(compiled)
        self._tailed_globs = {tail: tuple(g) for tail, g in tailed.items()}
        self._globs = tuple(globs)
        networks = [p.value for p in self.patterns if p.kind == "network"]
        self._networks = NetworkSet(parse_network(n) for n in networks) if networks else None

    def matches(self, host: str) -> bool:
        """Whether the normalised ``host`` matches any of the patterns."""
        if not host:
            return False
        if host in self._exact:
            return True
        ip = is_ip_literal(host)
        if (self._suffixes or self._tailed_globs) and not ip:
            suffixes, tailed = self._suffixes, self._tailed_globs
            at = -1
            while True:  # the host, then each parent domain
                parent = host[at + 1:]
                if parent in suffixes:
                    return True
                globs = tailed.get(parent)
                if globs is not None and any(g.match(host) for g in globs):
                    return True
                at = host.find(".", at + 1)
                if at == -1:
                    break
        for glob in self._globs:
            if glob.match(host):
                return True
        if self._networks is not None and ip:
            return ipaddress.ip_address(host) in self._networks
        return False

    def __repr__(self) -> str:
        return f"HostMatcher({[p.text for p in self.patterns]!r})"
