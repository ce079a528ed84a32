"""Proxy authentication: SHA-crypt, htpasswd files, the cred portal and the check cache."""

from __future__ import annotations

import base64
import shutil
import subprocess

import bcrypt
import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from multiproxy.policy import (
    HashedPasswords,
    IProxyUser,
    ProxyAuthenticator,
    ProxyRealm,
    ProxyUser,
    basic_challenge,
    parse_basic_credentials,
    parse_group_file,
    parse_htpasswd,
    sha_crypt,
    sha_crypt_verify,
    verify_password,
)

# From Drepper's specification (https://www.akkadia.org/drepper/SHA-crypt.txt);
# "$5$saltstring" checked against `openssl passwd -5` and glibc crypt(3).
SPEC_VECTORS = [
    ("$5$saltstring", "Hello world!",
     "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    ("$5$rounds=10000$saltstringsaltstring", "Hello world!",
     "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
    ("$5$rounds=5000$toolongsaltstring", "This is just a test",
     "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"),
    ("$5$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"),
    ("$5$rounds=10$roundstoolow", "the minimum number is still observed",
     "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"),
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCo"
     "EOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8v"
     "OuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1"
     "yxdYcz/e1JSbq3y6JMxxl8audkUEm0"),
    ("$6$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t"
     "0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZE"
     "QpyUNGc0dqbpBYYBaHHrsX."),
]


@pytest.mark.parametrize("setting, password, expected", SPEC_VECTORS)
def test_sha_crypt_reproduces_the_specification_test_vectors(
    setting: str, password: str, expected: str,
) -> None:
    assert sha_crypt(password.encode(), setting) == expected
    assert sha_crypt_verify(password.encode(), expected)
    assert not sha_crypt_verify(password.encode() + b"x", expected)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
@pytest.mark.parametrize("variant", ["-5", "-6"])
def test_sha_crypt_agrees_with_openssl_passwd(variant: str) -> None:
    cases = [("secret", "abc"), ("pässwörd", "0123456789abcdef"), ("p" * 150, "x./Y")]
    for password, salt in cases:
        made = subprocess.run(
            ["openssl", "passwd", variant, "-salt", salt, password],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        assert verify_password(password.encode(), made), made
        assert sha_crypt(password.encode(), made) == made


def test_verify_password_accepts_bcrypt_2a_2b_and_2y() -> None:
    hashed = bcrypt.hashpw(b"hunter2", bcrypt.gensalt(4)).decode()
    for prefix in ("$2a$", "$2b$", "$2y$"):
        variant = prefix + hashed[4:]
        assert verify_password(b"hunter2", variant)
        assert not verify_password(b"hunter3", variant)


def test_verify_password_uses_only_72_bytes_for_bcrypt_like_htpasswd() -> None:
    hashed = bcrypt.hashpw(b"a" * 72, bcrypt.gensalt(4)).decode()
    assert verify_password(b"a" * 100, hashed)


def test_verify_password_refuses_unknown_hash_formats() -> None:
    assert not verify_password(b"x", "x")
    assert not verify_password(b"x", "$apr1$abc$def")


def test_parse_htpasswd_reads_users_skipping_comments_and_blank_lines() -> None:
    text = "# users\n\nalice:$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0\r\n" \
           "bob:$2y$04$" + "a" * 53 + "\n"
    users = parse_htpasswd(text, "pw")
    assert set(users) == {"alice", "bob"}


@pytest.mark.parametrize("line, fragment", [
    ("alice", "expected user:hash"), (":$5$a$b", "expected user:hash"),
    ("alice:$apr1$xyz$abc", "Apache MD5"), ("alice:{SHA}abc=", "unsalted SHA-1"),
    ("alice:plaintext", "unrecognised password hash"),
])
def test_parse_htpasswd_refuses_bad_lines_naming_file_and_line(line: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=rf"users\.txt:2: .*{fragment}") as info:
        parse_htpasswd("# header\n" + line + "\n", "users.txt")
    assert "htpasswd -B" in str(info.value) or "expected" in str(info.value)


def test_parse_htpasswd_refuses_a_user_listed_twice() -> None:
    line = "alice:$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0\n"
    with pytest.raises(ValueError, match=":2: user 'alice' is listed twice"):
        parse_htpasswd(line * 2, "f")


def test_parse_group_file_maps_users_to_their_groups() -> None:
    groups = parse_group_file("staff: alice bob\n# c\nadmins:alice\nempty:\n", "g")
    assert groups == {"alice": frozenset({"staff", "admins"}), "bob": frozenset({"staff"})}
    with pytest.raises(ValueError, match="g:1: expected 'group: user1"):
        parse_group_file("nocolon alice", "g")


@pytest.mark.parametrize("header, expected", [
    (b"Basic " + base64.b64encode(b"alice:s3cret"), (b"alice", b"s3cret")),
    (b"basic  " + base64.b64encode(b"alice:pa:ss"), (b"alice", b"pa:ss")),
    (b"BASIC " + base64.b64encode(b"alice:"), (b"alice", b"")),
    (b"Basic " + base64.b64encode("jörg:pw".encode()), ("jörg".encode(), b"pw")),
    (None, None), (b"", None), (b"Bearer abc", None), (b"Basic !!!", None),
    (b"Basic " + base64.b64encode(b"nocolon"), None), (b"Basic " + base64.b64encode(b":pw"), None),
])
def test_parse_basic_credentials(header, expected) -> None:
    assert parse_basic_credentials(header) == expected


def test_basic_challenge_quotes_the_realm_and_asks_for_utf8() -> None:
    assert basic_challenge('My "proxy"') == b'Basic realm="My \\"proxy\\"", charset="UTF-8"'


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


ALICE_HASH = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).decode()
BOB_HASH = sha_crypt(b"builder", "$6$rounds=1000$bobsalt")


class CountingChecker(HashedPasswords):
    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.checks = 0

    def requestAvatarId(self, credentials):
        self.checks += 1
        return super().requestAvatarId(credentials)


def make_authenticator(clock: Clock, checker=None, **kw) -> tuple[ProxyAuthenticator, object]:
    checker = checker or CountingChecker({"alice": ALICE_HASH, "bob": BOB_HASH})
    realm = ProxyRealm({"alice": frozenset({"staff"})})
    return ProxyAuthenticator(Portal(realm, [checker]), clock=clock.seconds, **kw), checker


def result_of(d: defer.Deferred):
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def test_hashed_passwords_provides_icredentialschecker() -> None:
    from twisted.cred.checkers import ICredentialsChecker

    assert verifyObject(ICredentialsChecker, HashedPasswords({"bob": BOB_HASH}))
    assert verifyObject(IProxyUser, ProxyUser("bob"))


def test_hashed_passwords_refuses_unsupported_hashes_at_construction() -> None:
    with pytest.raises(ValueError, match="user 'eve': Apache MD5"):
        HashedPasswords({"eve": "$apr1$x$y"})


def test_authenticator_accepts_good_credentials_with_groups() -> None:
    auth, _ = make_authenticator(Clock())
    assert result_of(auth.authenticate(basic("alice", "wonderland"))) == ProxyUser(
        "alice", frozenset({"staff"}))
    assert result_of(auth.authenticate(basic("bob", "builder"))) == ProxyUser("bob")


@pytest.mark.parametrize("header", [
    None, b"Bearer x", basic("alice", "wrong"), basic("mallory", "wonderland"),
    b"Basic " + base64.b64encode(b"\xff\xfe:pw"),
])
def test_authenticator_answers_none_for_missing_or_wrong_credentials(header) -> None:
    auth, _ = make_authenticator(Clock())
    assert result_of(auth.authenticate(header)) is None


def test_successful_checks_are_cached_until_they_expire() -> None:
    clock = Clock()
    auth, checker = make_authenticator(clock, cache_seconds=60)
    for _ in range(5):
        assert result_of(auth.authenticate(basic("alice", "wonderland"))).name == "alice"
    assert checker.checks == 1
    clock.advance(61)
    assert result_of(auth.authenticate(basic("alice", "wonderland"))).name == "alice"
    assert checker.checks == 2


def test_failed_checks_are_not_cached_and_a_cached_user_needs_the_same_password() -> None:
    auth, checker = make_authenticator(Clock())
    result_of(auth.authenticate(basic("alice", "wonderland")))
    assert result_of(auth.authenticate(basic("alice", "wrong"))) is None
    assert result_of(auth.authenticate(basic("alice", "wrong"))) is None
    assert checker.checks == 3


def test_the_cache_holds_no_password_in_plain_text_and_is_bounded() -> None:
    auth, _ = make_authenticator(Clock(), cache_size=2)
    auth.authenticate(basic("alice", "wonderland"))
    auth.authenticate(basic("bob", "builder"))
    for key, (user, _) in auth._cache.items():
        assert b"wonderland" not in key and b"builder" not in key
        assert len(key) == 32
    extra = CountingChecker({"carol": BOB_HASH})
    auth.portal.registerChecker(extra)
    result_of(auth.authenticate(basic("alice", "wonderland")))
    assert len(auth._cache) == 2


def test_concurrent_checks_of_the_same_credentials_share_one_hash_computation() -> None:
    pending: list[defer.Deferred] = []

    def run_later(f, *args):
        d = defer.Deferred()
        pending.append(d)
        d.addCallback(lambda _: f(*args))
        return d

    checker = CountingChecker({"alice": ALICE_HASH}, run_blocking=run_later)
    auth, _ = make_authenticator(Clock(), checker=checker)
    results: list = []
    for _ in range(3):
        auth.authenticate(basic("alice", "wonderland")).addCallback(results.append)
    assert checker.checks == 1 and results == []
    pending[0].callback(None)
    assert [u.name for u in results] == ["alice"] * 3


def test_clear_forgets_cached_checks() -> None:
    auth, checker = make_authenticator(Clock())
    result_of(auth.authenticate(basic("alice", "wonderland")))
    auth.clear()
    result_of(auth.authenticate(basic("alice", "wonderland")))
    assert checker.checks == 2


def test_twisted_in_memory_checker_works_for_tests_with_the_same_realm() -> None:
    checker = InMemoryUsernamePasswordDatabaseDontUse(carol=b"pw")
    auth, _ = make_authenticator(Clock(), checker=checker)
    assert result_of(auth.authenticate(basic("carol", "pw"))) == ProxyUser("carol")
    assert result_of(auth.authenticate(basic("carol", "nope"))) is None


def test_unknown_users_still_cost_a_hash_check() -> None:
    calls: list[str] = []

    def run(f, password, hashed):
        calls.append(hashed)
        return defer.succeed(f(password, hashed))

    auth, _ = make_authenticator(Clock(), checker=HashedPasswords({"bob": BOB_HASH}, run))
    assert result_of(auth.authenticate(basic("nobody", "builder"))) is None
    assert calls == [BOB_HASH]


def test_load_htpasswd_reports_unreadable_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot read the password file"):
        HashedPasswords.from_file(str(tmp_path / "missing"))
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{ALICE_HASH}\n")
    assert len(HashedPasswords.from_file(str(path))) == 1
