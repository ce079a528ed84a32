"""
The page a refused client sees (403, 407, 429): what it says, the time and
the administrator's contact, custom templates, the ``deny_page`` and
``admin_contact`` settings from TOML and the command line, and the page as
headless Chromium renders it through a running forward proxy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.task import Clock
from twisted.python import usage

from multiproxy._tablereader import TableReader
from multiproxy._tap import Options
from multiproxy.pipeline._errors import ConfigError
from multiproxy.pipeline._values import Decision, Intent
from multiproxy.policy import (
    DEFAULT_DENY_TEMPLATE,
    PolicyHolder,
    check_template,
    load_deny_template,
    refusal,
    render_deny_page,
    settings_from_table,
)
from multiproxy.policy._denypage import PLACEHOLDERS

#: RFC 9110's example date, Sun, 06 Nov 1994 08:49:37 GMT.
NOV_6_1994 = 784111777.0


def intent(**kw) -> Intent:
    values = dict(kind="http", proxy="office", client_host="10.0.0.5", client_port=1,
                  host="www.twitter.com", port=443, method="GET",
                  target="https://www.twitter.com/home")
    values.update(kw)
    return Intent(**values)


def page(*args, **kw) -> str:
    kw.setdefault("now", NOV_6_1994)
    return render_deny_page(*args, **kw).decode("utf-8")


# What the default page says -------------------------------------------------

def test_deny_page_says_what_was_blocked_and_why() -> None:
    text = page(intent(), Decision("deny", "no-social-at-work", "Not at work"))
    assert "<title>403 Forbidden</title>" in text
    assert "<h1>Access denied" in text
    assert "The proxy&#x27;s access policy does not allow https://www.twitter.com/home." in text
    assert '<p class="message">Not at work</p>' in text
    assert '<dd class="rule">no-social-at-work</dd>' in text
    assert '<dd class="target">https://www.twitter.com/home</dd>' in text
    assert '<dd class="client">10.0.0.5</dd>' in text
    assert '<dd class="proxy">office</dd>' in text


def test_deny_page_shows_the_time_it_is_given_as_an_imf_fixdate() -> None:
    text = page(intent(), Decision("deny", "r"), now=NOV_6_1994)
    assert '<dd class="time">Sun, 06 Nov 1994 08:49:37 GMT</dd>' in text
    later = page(intent(), Decision("deny", "r"), now=NOV_6_1994 + 86400 * 365)
    assert '<dd class="time">Mon, 06 Nov 1995 08:49:37 GMT</dd>' in later


def test_deny_page_is_self_contained_html() -> None:
    text = page(intent(), Decision("deny", "r"), admin_contact="ops@example.com")
    assert "<style>" in text
    assert "<script" not in text and "<link" not in text and "src=" not in text
    assert "url(" not in text and "@import" not in text


def test_the_admin_line_is_absent_unless_configured() -> None:
    for contact in (None, "", "   "):
        text = page(intent(), Decision("deny", "r"), admin_contact=contact)
        assert "Contact the administrator" not in text
        assert '<p class="contact"></p>' in text  # hidden by the page's style


def test_an_email_admin_contact_is_a_mailto_link() -> None:
    text = page(intent(), Decision("deny", "r"), admin_contact=" help.desk+proxy@example.com ")
    assert ('<p class="contact">Contact the administrator: <a href="mailto:'
            'help.desk%2Bproxy@example.com">help.desk+proxy@example.com</a></p>') in text


def test_other_admin_contact_text_is_shown_as_text() -> None:
    text = page(intent(), Decision("deny", "r"), admin_contact="IT helpdesk, extension 4242")
    assert '<p class="contact">Contact the administrator: IT helpdesk, extension 4242</p>' in text
    assert "mailto:" not in text


@pytest.mark.parametrize("hostile", [
    '<script>alert("x")</script>',
    '"><img src=x onerror=alert(1)>@example.com',
    'a@example.com"><script>alert(1)</script>',
    "javascript:alert(1)",
])
def test_a_hostile_admin_contact_is_escaped(hostile: str) -> None:
    text = page(intent(), Decision("deny", "r"), admin_contact=hostile)
    line = re.search(r'<p class="contact">(.*)</p>', text).group(1)
    assert line.startswith("Contact the administrator: ")
    assert "<" not in line and ">" not in line and '"' not in line
    assert "href" not in line
    assert "<script" not in text and "<img" not in text


def test_deny_page_escapes_every_value() -> None:
    hostile = intent(target='http://x/<script>alert("1")</script>', client_host="<b>")
    text = page(hostile, Decision("deny", "r<1>", "a & b"))
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "r&lt;1&gt;" in text and "a &amp; b" in text


def test_deny_page_for_connect_tcp_407_and_429() -> None:
    assert "a tunnel to www.twitter.com:443" in page(
        intent(kind="connect", method="CONNECT"), Decision("deny", "r"))
    assert "this connection" in page(intent(kind="tcp"), Decision("deny", "r"))
    assert "Proxy authentication required" in page(intent(), None, status=407)
    too_many = page(None, None, status=429, admin_contact="ops@example.com")
    assert "Too many requests" in too_many and "Contact the administrator" in too_many


def test_refusal_dates_the_page_and_adds_the_policys_admin_contact() -> None:
    clock = Clock()
    clock.advance(NOV_6_1994)
    settings = settings_from_table(TableReader(tomllib.loads(
        '[policy]\nadmin_contact = "ops@example.com"\n')["policy"], "policy"))
    holder = PolicyHolder(settings, clock=clock.seconds)
    answer = refusal(holder, 403, intent(), Decision("deny", "r"), now=clock.seconds())
    body = answer.body.decode()
    assert "Sun, 06 Nov 1994 08:49:37 GMT" in body
    assert 'href="mailto:ops@example.com"' in body
    # No policy at all (or one without access control): the default page, no contact line.
    plain = refusal(None, 403, intent(), Decision("deny", "r"), now=clock.seconds()).body
    assert b"Sun, 06 Nov 1994 08:49:37 GMT" in plain and b"Contact the" not in plain


# Custom templates -------------------------------------------------------------

def test_a_custom_template_gets_the_escaped_values(tmp_path) -> None:
    path = tmp_path / "t.html"
    path.write_text("<b>$host</b> ($rule) $$5 ${user}", encoding="utf-8")
    template = load_deny_template(str(path))
    text = page(intent(user="bob&co"), Decision("deny", "r"), template=template)
    assert text == "<b>www.twitter.com</b> (r) $5 bob&amp;co"


def test_a_custom_template_may_use_time_and_admin(tmp_path) -> None:
    path = tmp_path / "t.html"
    path.write_text("<p>$time</p><footer>$admin</footer>", encoding="utf-8")
    template = load_deny_template(str(path))
    text = page(intent(), Decision("deny", "r"), template=template, admin_contact="a@b.example")
    assert text == ('<p>Sun, 06 Nov 1994 08:49:37 GMT</p><footer>Contact the administrator: '
                    '<a href="mailto:a@b.example">a@b.example</a></footer>')
    assert page(intent(), Decision("deny", "r"), template=template).endswith("<footer></footer>")


@pytest.mark.parametrize("text, fragment", [
    ("$nope", "unknown placeholder \\$nope"), ("${host", "malformed placeholder"),
])
def test_bad_templates_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_template(text)


def test_missing_template_file_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot read the deny page template"):
        load_deny_template(str(tmp_path / "nope.html"))


def test_the_default_template_is_valid_and_uses_the_new_placeholders() -> None:
    assert check_template(DEFAULT_DENY_TEMPLATE) == DEFAULT_DENY_TEMPLATE
    assert {"time", "admin"} <= PLACEHOLDERS
    assert "$time" in DEFAULT_DENY_TEMPLATE and "$admin" in DEFAULT_DENY_TEMPLATE


def test_the_custom_template_in_the_docs_is_valid() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text()
    template = re.search(r"A custom template, .*?```html\n(.*?)```", docs, re.S).group(1)
    text = page(intent(), Decision("deny", "r", "m"), template=check_template(template),
                admin_contact="ops@example.com")
    assert "for 10.0.0.5 at Sun, 06 Nov 1994 08:49:37 GMT." in text
    assert 'href="mailto:ops@example.com"' in text


# The settings: TOML and the command line --------------------------------------

def settings(text: str):
    return settings_from_table(TableReader(tomllib.loads(text)["policy"], "policy"))


def test_admin_contact_is_read_from_the_policy_table(tmp_path) -> None:
    assert settings('[policy]\nadmin_contact = "ops@example.com"\n').admin_contact == \
        "ops@example.com"
    assert settings('[policy]\nadmin_contact = "  "\n').admin_contact is None
    assert settings("[policy]\n").admin_contact is None
    with pytest.raises(ConfigError, match=r"policy\.admin_contact: expected a string"):
        settings("[policy]\nadmin_contact = 42\n")


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_deny_page_and_admin_contact_options_make_the_policy(tmp_path) -> None:
    template = tmp_path / "denied.html"
    template.write_text("<p>$rule: $target at $time. $admin</p>")
    source = parse("forward", "--deny-host", ".twitter.com", "--deny-page", str(template),
                   "--admin-contact", "ops@example.com").configuration.policy
    assert source.settings.deny_template == "<p>$rule: $target at $time. $admin</p>"
    assert source.settings.admin_contact == "ops@example.com"
    assert [r.name for r in source.settings.rules.rules] == ["cli-deny-host"]
    # On their own they make a policy too (nothing denied, but 429 pages would carry them).
    alone = parse("forward", "--admin-contact", "IT helpdesk").configuration.policy
    assert alone.settings.admin_contact == "IT helpdesk"
    assert alone.settings.deny_template == DEFAULT_DENY_TEMPLATE


@pytest.mark.parametrize("argv, message", [
    (["--deny-page", "/nonexistent.html"],
     "--deny-page: cannot read the deny page template '/nonexistent.html'"),
    (["--policy", "/nonexistent.toml", "--deny-page", "x.html"],
     "--deny-page cannot be combined with --policy"),
    (["--policy", "/nonexistent.toml", "--admin-contact", "ops@example.com"],
     "--admin-contact cannot be combined with --policy"),
])
def test_bad_deny_page_options_are_refused_with_one_line(argv, message) -> None:
    with pytest.raises(usage.UsageError, match=re.escape(message)) as caught:
        parse("forward", *argv)
    assert "\n" not in str(caught.value)


def test_a_deny_page_with_an_unknown_placeholder_is_refused(tmp_path) -> None:
    template = tmp_path / "denied.html"
    template.write_text("<p>$admin_email</p>")
    with pytest.raises(usage.UsageError, match=r"--deny-page: .*unknown placeholder "
                                                r"\$admin_email"):
        parse("forward", "--deny-page", str(template))


def test_only_the_forward_proxy_offers_the_deny_page_options() -> None:
    with pytest.raises(usage.UsageError, match="admin-contact"):
        parse("socks", "--admin-contact", "ops@example.com")


# In a browser -----------------------------------------------------------------

DENY_DOWNLOADS = """
[policy]
admin_contact = "proxy-admin@example.com"
[[policy.rules]]
name = "no-downloads"
action = "deny"
hosts = ["127.0.0.1"]
url_regex = "/denied/"
message = "Downloads are blocked here"
"""


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")
@pytest_twisted.ensureDeferred
async def test_headless_chromium_renders_the_deny_page(start_forward, origin, tmp_path):
    port, _ = start_forward(policy=PolicyHolder(settings(DENY_DOWNLOADS), clock=Clock().seconds))
    url = f"http://127.0.0.1:{origin}/denied/file.zip"
    # In a thread: the proxy answering chromium runs on this reactor.
    result = await threads.deferToThread(
        subprocess.run,
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path}", f"--proxy-server=http://127.0.0.1:{port}",
         "--proxy-bypass-list=<-loopback>", "--dump-dom", url],
        capture_output=True, text=True, timeout=90,
    )
    dom = result.stdout
    assert "<h1>Access denied" in dom, (dom, result.stderr[-2000:])
    assert "Downloads are blocked here" in dom
    assert '<dd class="rule">no-downloads</dd>' in dom
    assert f'<dd class="target">{url}</dd>' in dom
    assert '<dd class="client">127.0.0.1</dd>' in dom
    assert re.search(r'<dd class="time">\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT</dd>', dom)
    assert ('Contact the administrator: <a href="mailto:proxy-admin@example.com">'
            'proxy-admin@example.com</a>') in dom
