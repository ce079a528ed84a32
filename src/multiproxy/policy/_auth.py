"""
Proxy authentication (``Proxy-Authorization: Basic``) on `twisted.cred`.

The pieces are the usual cred ones: credential checkers (`HashedPasswords`,
for htpasswd-style files with bcrypt or SHA-2 crypt hashes; Twisted's own
``InMemoryUsernamePasswordDatabaseDontUse`` for tests), a realm
(`ProxyRealm`) that turns an avatar id into a `ProxyUser` with its groups,
and a `twisted.cred.portal.Portal` joining them.  `ProxyAuthenticator` turns
a header value into a user through the portal, and remembers successful
checks for a while (bcrypt is meant to be slow) under a keyed hash of the
credentials, never the password itself.

Nothing here logs credentials, and nothing needs a reactor: the clock is
injected, and slow hash checks can be sent to a thread pool by passing
``run_blocking`` (e.g. ``partial(deferToThreadPool, reactor, pool)``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from multiproxy.policy._shacrypt import sha_crypt_verify

__all__ = [
    "HashedPasswords", "IProxyUser", "ProxyAuthenticator", "ProxyRealm", "ProxyUser",
    "basic_challenge", "load_htpasswd", "parse_basic_credentials", "parse_group_file",
    "parse_htpasswd",
    "verify_password",
]

RunBlocking = Callable[..., Deferred]

_BCRYPT = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}\Z")
_SHA_CRYPT = re.compile(r"\$[56]\$(?:rounds=[0-9]+\$)?[^$]{0,16}\$[./0-9A-Za-z]+\Z")
_WEAK = {
    "$apr1$": "Apache MD5 ($apr1$)",
    "$1$": "MD5-crypt ($1$)",
    "{SHA}": "unsalted SHA-1 ({SHA})",
    "{SSHA}": "salted SHA-1 ({SSHA})",
}
_ADVICE = "re-create the entry with `htpasswd -B` (bcrypt) or `openssl passwd -6` (SHA-512 crypt)"


class IProxyUser(Interface):
    """The avatar a proxy gets for an authenticated client."""

    name = Attribute("The user name (str).")
    groups = Attribute("The groups the user belongs to (frozenset of str).")


@implementer(IProxyUser)
@dataclass(frozen=True, slots=True)
class ProxyUser:
    """An authenticated user and the groups it belongs to."""

    name: str
    groups: frozenset[str] = frozenset()


def verify_password(password: bytes, hashed: str) -> bool:
    """
    Whether ``password`` matches a bcrypt (``$2a$``/``$2b$``/``$2y$``) or
    SHA-2 crypt (``$5$``/``$6$``) hash.  Slow on purpose; run it off the
    reactor thread for bcrypt.
    """
    if _BCRYPT.match(hashed):
        import bcrypt

        # bcrypt only ever uses the first 72 bytes; htpasswd -B hashed those.
        return bcrypt.checkpw(password[:72], hashed.encode("ascii"))
    if _SHA_CRYPT.match(hashed):
        return sha_crypt_verify(password, hashed)
    return False


def check_hash(hashed: str) -> str | None:
    """None if ``hashed`` is a supported hash, else the reason it is not."""
    if _BCRYPT.match(hashed):
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            return ("bcrypt hashes need the bcrypt package: pip install 'multiproxy[auth]', "
                    "or use SHA-512 crypt hashes (`openssl passwd -6`)")
        return None
    if _SHA_CRYPT.match(hashed):
        return None
    for prefix, what in _WEAK.items():
        if hashed.startswith(prefix):
            return f"{what} hashes are too weak and not supported; {_ADVICE}"
    return f"unrecognised password hash (plain text or crypt?); {_ADVICE}"


def parse_htpasswd(text: str, source: str = "htpasswd") -> dict[str, str]:
    """
    ``user:hash`` lines (``#`` comments and blank lines ignored) as a dict.

    @raise ValueError: naming ``source:line`` and what is wrong.
    """
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        if not colon or not user:
            raise ValueError(f"{source}:{number}: expected user:hash")
        hashed = hashed.split(":", 1)[0]  # htdigest-style trailing fields are not ours
        problem = check_hash(hashed)
        if problem:
            raise ValueError(f"{source}:{number}: user {user!r}: {problem}")
        if user in users:
            raise ValueError(f"{source}:{number}: user {user!r} is listed twice")
        users[user] = hashed
    return users


def load_htpasswd(path: str) -> dict[str, str]:
    """
    Read an htpasswd-style file with `parse_htpasswd`.

    @raise ValueError: it cannot be read, or a line is wrong (``path:line``).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the password file {path!r}: {e}") from None
    return parse_htpasswd(text, path)


def parse_group_file(text: str, source: str = "groups") -> dict[str, frozenset[str]]:
    """
    An Apache ``AuthGroupFile``: ``group: user1 user2`` lines, as a map from
    user to groups.

    @raise ValueError: naming ``source:line``.
    """
    members: dict[str, set[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        group, colon, users = line.partition(":")
        group = group.strip()
        if not colon or not group:
            raise ValueError(f"{source}:{number}: expected 'group: user1 user2 ...'")
        for user in users.split():
            members.setdefault(user, set()).add(group)
    return {user: frozenset(groups) for user, groups in members.items()}


@implementer(ICredentialsChecker)
class HashedPasswords:
    """
    A credentials checker over a map of user name to bcrypt or SHA-2 crypt
    hash, as read from an htpasswd-style file.  Unknown users cost a hash
    check too, so timing does not reveal which users exist.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self, hashes: Mapping[str, str], run_blocking: RunBlocking | None = None,
    ) -> None:
        for user, hashed in hashes.items():
            problem = check_hash(hashed)
            if problem:
                raise ValueError(f"user {user!r}: {problem}")
        self._hashes = dict(hashes)
        self._dummy = next(iter(self._hashes.values()), None)
        self._run = run_blocking

    @classmethod
    def from_file(cls, path: str, run_blocking: RunBlocking | None = None) -> HashedPasswords:
        """
        Load an htpasswd-style file.

        @raise ValueError: it cannot be read or a line is wrong (``path:line``).
        """
        return cls(load_htpasswd(path), run_blocking)

    def __len__(self) -> int:
        return len(self._hashes)

    def requestAvatarId(self, credentials: Any) -> Deferred:
        name = credentials.username
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                return defer.fail(error.UnauthorizedLogin())
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")
        hashed = self._hashes.get(name)
        if hashed is None:
            hashed, name = self._dummy, None
        if hashed is None:
            return defer.fail(error.UnauthorizedLogin())
        if self._run is None:
            d = defer.maybeDeferred(verify_password, password, hashed)
        else:
            d = self._run(verify_password, password, hashed)

        def checked(ok: bool) -> str:
            if ok and name is not None:
                return name
            raise error.UnauthorizedLogin()

        return d.addCallback(checked)


@implementer(IRealm)
class ProxyRealm:
    """A realm whose avatars are `ProxyUser`s, with groups from a user-to-groups map."""

    def __init__(self, groups: Mapping[str, frozenset[str]] | None = None) -> None:
        self.groups = dict(groups or {})

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple:
        if IProxyUser not in interfaces:
            raise NotImplementedError("ProxyRealm only provides IProxyUser")
        name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
        return IProxyUser, ProxyUser(name, self.groups.get(name, frozenset())), lambda: None


def parse_basic_credentials(value: bytes | None) -> tuple[bytes, bytes] | None:
    """
    ``(user, password)`` from a ``Proxy-Authorization: Basic`` value
    (RFC 7617), or None if absent, another scheme, or malformed.
    """
    if not value:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    token = token.strip()
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon or not user:
        return None
    return user, password


def basic_challenge(realm: str) -> bytes:
    """The ``Proxy-Authenticate`` value for a 407 (RFC 7617, UTF-8 credentials)."""
    quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{quoted}", charset="UTF-8"'.encode()


class ProxyAuthenticator:
    """
    Turns ``Proxy-Authorization`` values into `ProxyUser`s through a cred
    `Portal`, remembering successful checks for ``cache_seconds`` (keyed by
    an HMAC of the credentials under a per-process random key, so the cache
    never holds a password), at most ``cache_size`` of them.  Concurrent
    checks of the same credentials share one hash computation.
    """

    def __init__(
        self, portal: Portal, *, clock: Callable[[], float], realm: str = "multiproxy",
        cache_seconds: float = 300.0, cache_size: int = 10_000,
    ) -> None:
        self.portal = portal
        self.realm = realm
        self.challenge = basic_challenge(realm)
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, tuple[Any, float]] = OrderedDict()
        self._pending: dict[bytes, list[Deferred]] = {}

    def authenticate(self, header: bytes | None) -> Deferred:
        """
        @return: a Deferred firing with the `ProxyUser`, or None when the
            header is absent, malformed or the credentials are wrong (the
            proxy then answers 407).  Never fails for bad credentials.
        """
        parsed = parse_basic_credentials(header)
        if parsed is None:
            return defer.succeed(None)
        user, password = parsed
        key = hmac.new(self._key, user + b"\x00" + password, hashlib.sha256).digest()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[1] > self._clock():
                self._cache.move_to_end(key)
                return defer.succeed(cached[0])
            del self._cache[key]
        waiting = self._pending.get(key)
        if waiting is not None:
            d: Deferred = Deferred()
            waiting.append(d)
            return d
        self._pending[key] = []
        login = self.portal.login(UsernamePassword(user, password), None, IProxyUser)
        login.addCallbacks(self._logged_in, self._refused)
        return login.addBoth(self._settle, key)

    def clear(self) -> None:
        """Forget every remembered check (after the password file changed)."""
        self._cache.clear()

    def _logged_in(self, result: tuple) -> Any:
        _, avatar, logout = result
        logout()
        return avatar

    def _refused(self, failure: Failure) -> None:
        failure.trap(error.UnauthorizedLogin, error.UnhandledCredentials)
        return None

    def _settle(self, result: Any, key: bytes) -> Any:
        if IProxyUser.providedBy(result) and self._cache_seconds > 0:
            self._cache[key] = (result, self._clock() + self._cache_seconds)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        for d in self._pending.pop(key, []):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        return result
