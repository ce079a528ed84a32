"""
The small HTML page a client gets when a request is refused (403, and also
407 and 429): what was refused and why.

The template is a `string.Template` (``$name`` placeholders); every value is
HTML-escaped before it is put in, so a host or URL cannot inject markup.  The
one placeholder that is markup, ``$admin`` (the optional "Contact the
administrator" line), is built here from escaped text.  The time comes in as
a value (``reactor.seconds()``), so a page renders the same on a test clock.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from string import Template
from typing import TYPE_CHECKING
from urllib.parse import quote

from multiproxy.http1._dates import format_http_date
from multiproxy.pipeline._errors import STATUS_REASONS

if TYPE_CHECKING:
    from multiproxy.pipeline._values import Decision, Intent

__all__ = ["DEFAULT_DENY_TEMPLATE", "DENY_PAGE_CONTENT_TYPE", "PLACEHOLDERS", "check_template",
           "load_deny_template", "render_deny_page"]

DENY_PAGE_CONTENT_TYPE = b"text/html; charset=utf-8"

#: Every placeholder a template may use.
PLACEHOLDERS = frozenset({
    "status", "reason", "title", "explanation", "message", "rule", "host", "port", "target",
    "method", "client", "proxy", "user", "time", "admin",
})

DEFAULT_DENY_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$status $reason</title>
<style>
body { margin: 0; padding: 2rem 1rem; background: #f3f4f6; color: #1f2937;
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 42rem; margin: 0 auto; padding: 1.5rem 2rem; background: #fff;
       border-top: 6px solid #b91c1c; border-radius: 6px; box-shadow: 0 1px 3px #0002; }
h1 { margin: 0 0 .75rem; font-size: 1.5rem; }
h1 small { color: #6b7280; font-weight: normal; font-size: 1rem; }
p:empty { display: none; }
dd:empty::before { content: "-"; }
.message { padding: .5rem .75rem; background: #fef2f2; border-left: 4px solid #b91c1c; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 1.25rem 0; }
dt { color: #6b7280; }
dd { margin: 0; overflow-wrap: anywhere; font-family: ui-monospace, monospace; }
.contact { border-top: 1px solid #e5e7eb; padding-top: .75rem; color: #4b5563; }
</style>
</head>
<body>
<main>
<h1>$title <small>($status $reason)</small></h1>
<p class="explanation">$explanation</p>
<p class="message">$message</p>
<dl>
<dt>Rule</dt><dd class="rule">$rule</dd>
<dt>URL</dt><dd class="target">$target</dd>
<dt>Client</dt><dd class="client">$client</dd>
<dt>Time</dt><dd class="time">$time</dd>
<dt>Proxy</dt><dd class="proxy">$proxy</dd>
</dl>
<p class="contact">$admin</p>
</main>
</body>
</html>
"""

_TITLES = {
    403: "Access denied",
    407: "Proxy authentication required",
    429: "Too many requests",
}

# An address a mail client can take (the common dot-atom form, RFC 5322 3.4.1).
_EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")


def check_template(text: str) -> str:
    """
    Return ``text`` if it is a usable template.

    @raise ValueError: it has a malformed or unknown placeholder (the message
        lists the allowed ones).
    """
    template = Template(text)
    if not template.is_valid():
        raise ValueError("the template has a malformed placeholder (write $name or ${name}; "
                         "a literal dollar sign is $$)")
    unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"unknown placeholder ${unknown[0]} in the template (allowed: "
            f"{', '.join('$' + p for p in sorted(PLACEHOLDERS))})"
        )
    return text


def load_deny_template(path: str) -> str:
    """
    Read and check a template file (UTF-8).

    @raise ValueError: the file cannot be read or is not a usable template.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the deny page template {path!r}: {e}") from None
    try:
        return check_template(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def render_deny_page(
    intent: Intent | None, decision: Decision | None, *, now: float, status: int = 403,
    template: str = DEFAULT_DENY_TEMPLATE, admin_contact: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """
    The body of a refusal page, UTF-8 HTML (send it with
    `DENY_PAGE_CONTENT_TYPE`).  ``now`` is the time of the refusal in
    seconds since the epoch (``reactor.seconds()``), shown as an
    IMF-fixdate; ``admin_contact``, if given, becomes the ``$admin`` line.
    ``template`` should have passed `check_template`; values missing from
    the intent render as empty text.
    """
    reason = STATUS_REASONS.get(status, b"Error").decode("ascii")
    what = _what(intent)
    explanation = {
        403: f"The proxy's access policy does not allow {what}.",
        407: f"Sign in to the proxy to reach {what}.",
        429: "This client has sent too many requests; wait a moment and try again.",
    }.get(status, f"The proxy refused {what}.")
    values = {
        "status": str(status),
        "reason": reason,
        "title": _TITLES.get(status, reason),
        "explanation": explanation,
        "message": (decision.message if decision is not None else None) or "",
        "rule": (decision.rule if decision is not None else None) or "-",
        "host": intent.host if intent is not None else "",
        "port": str(intent.port) if intent is not None and intent.port else "",
        "target": intent.target if intent is not None else "",
        "method": intent.method if intent is not None else "",
        "client": intent.client_host if intent is not None else "",
        "proxy": intent.proxy if intent is not None else "",
        "user": (intent.user if intent is not None else None) or "",
        "time": format_http_date(now).decode("ascii"),
    }
    if extra:
        values.update(extra)
    escaped = {k: html.escape(v, quote=True) for k, v in values.items()}
    escaped["admin"] = _admin_line(admin_contact)
    return Template(template).safe_substitute(escaped).encode("utf-8")


def _admin_line(contact: str | None) -> str:
    # The one value that is markup: built from escaped text, so it is as safe
    # as the others; a mailto: link only for a plain address.
    contact = (contact or "").strip()
    if not contact:
        return ""
    text = html.escape(contact, quote=True)
    if _EMAIL.match(contact):
        href = html.escape("mailto:" + quote(contact, safe="@"), quote=True)
        text = f'<a href="{href}">{text}</a>'
    return f"Contact the administrator: {text}"


def _what(intent: Intent | None) -> str:
    if intent is None:
        return "this request"
    if intent.kind == "connect":
        return f"a tunnel to {intent.host}:{intent.port}"
    if intent.kind == "tcp":
        return "this connection"
    return intent.target or intent.host or "this request"
