"""
SHA-256 and SHA-512 crypt (``$5$`` and ``$6$``), as specified by Ulrich
Drepper in "Unix crypt using SHA-256 and SHA-512"
(https://www.akkadia.org/drepper/SHA-crypt.txt).

Python's ``crypt`` module is deprecated since 3.11 and gone in 3.13, and it
only offers what the platform's libc has, so the algorithm is written out
here (it is short) and checked against the specification's test vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["sha_crypt", "sha_crypt_verify"]

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUNDS_DEFAULT = 5000
_ROUNDS_MIN = 1000
_ROUNDS_MAX = 999_999_999
_SALT_MAX = 16

# The order in which the digest bytes are encoded, three at a time, from the
# specification (steps 22 e/f).
_ORDER_256 = (
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
    (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29),
)
_ORDER_512 = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4),
    (47, 5, 26), (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51),
    (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
    (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19),
    (62, 20, 41),
)
_HASH = re.compile(r"\$([56])\$(?:rounds=([0-9]+)\$)?([^$]{0,16})\$([./0-9A-Za-z]+)\Z")


def sha_crypt(password: bytes, setting: str) -> str:
    """
    Hash ``password`` with the ``$5$``/``$6$`` ``setting``
    (``$5$salt``, ``$6$rounds=N$salt``, or a whole existing hash, whose
    salt and rounds are reused) and return the full crypt string.

    @raise ValueError: ``setting`` is not a SHA-crypt setting.
    """
    if not setting.startswith(("$5$", "$6$")):
        raise ValueError("not a SHA-crypt setting (expected $5$ or $6$)")
    variant = setting[1]
    rest = setting[3:]
    rounds = _ROUNDS_DEFAULT
    custom_rounds = False
    if rest.startswith("rounds="):
        count, dollar, rest = rest[7:].partition("$")
        if not dollar or not count.isdigit():
            raise ValueError("malformed rounds= in SHA-crypt setting")
        rounds = min(max(int(count), _ROUNDS_MIN), _ROUNDS_MAX)
        custom_rounds = True
    salt = rest.split("$", 1)[0][:_SALT_MAX].encode("utf-8")
    digest = _digest(password, salt, rounds, hashlib.sha256 if variant == "5" else hashlib.sha512)
    order = _ORDER_256 if variant == "5" else _ORDER_512
    out = []
    for a, b, c in order:
        out.append(_b64(digest[a] << 16 | digest[b] << 8 | digest[c], 4))
    if variant == "5":
        out.append(_b64(digest[31] << 8 | digest[30], 3))
    else:
        out.append(_b64(digest[63], 2))
    prefix = f"${variant}$" + (f"rounds={rounds}$" if custom_rounds else "")
    return prefix + salt.decode("utf-8") + "$" + "".join(out)


def sha_crypt_verify(password: bytes, hashed: str) -> bool:
    """Whether ``password`` matches the ``$5$``/``$6$`` hash, compared in constant time."""
    if not _HASH.match(hashed):
        return False
    return hmac.compare_digest(sha_crypt(password, hashed).encode(), hashed.encode())


def _digest(password: bytes, salt: bytes, rounds: int, new) -> bytes:
    b = new(password + salt + password).digest()
    a = new(password + salt)
    a.update(_repeat(b, len(password)))
    n = len(password)
    while n:
        a.update(b if n & 1 else password)
        n >>= 1
    a_digest = a.digest()
    p = _repeat(new(password * len(password)).digest(), len(password))
    s = _repeat(new(salt * (16 + a_digest[0])).digest(), len(salt))
    c = a_digest
    for i in range(rounds):
        h = new(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    return c


def _repeat(data: bytes, length: int) -> bytes:
    return (data * (length // len(data) + 1))[:length]


def _b64(value: int, count: int) -> str:
    chars = []
    for _ in range(count):
        chars.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(chars)
