"""
The small HTML page a client gets when a request is refused (403, and also
407 and 429): what was refused and why.

The template is a `string.Template` (``$name`` placeholders); every value is
HTML-escaped before it is put in, so a host or URL cannot inject markup.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from string import Template
from typing import TYPE_CHECKING

from multiproxy._errors import STATUS_REASONS

if TYPE_CHECKING:
    from multiproxy._values import Decision, Intent

__all__ = ["DEFAULT_DENY_TEMPLATE", "DENY_PAGE_CONTENT_TYPE", "PLACEHOLDERS", "check_template",
           "load_deny_template", "render_deny_page"]

DENY_PAGE_CONTENT_TYPE = b"text/html; charset=utf-8"

#: Every placeholder a template may use.
PLACEHOLDERS = frozenset({
    "status", "reason", "title", "explanation", "message", "rule", "host", "port", "target",
    "method", "client", "proxy", "user",
})

DEFAULT_DENY_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>$status $reason</title></head>
<body>
<h1>$title</h1>
<p>$explanation</p>
<p>$message</p>
<p><small>Rule: $rule &middot; proxy: $proxy</small></p>
</body>
</html>
"""

_TITLES = {
    403: "Access denied",
    407: "Proxy authentication required",
    429: "Too many requests",
}


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
    intent: Intent | None, decision: Decision | None, *, status: int = 403,
    template: str = DEFAULT_DENY_TEMPLATE, extra: Mapping[str, str] | None = None,
) -> bytes:
    """
    The body of a refusal page, UTF-8 HTML (send it with
    `DENY_PAGE_CONTENT_TYPE`).  ``template`` should have passed
    `check_template`; values missing from the intent render as empty text.
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
    }
    if extra:
        values.update(extra)
    escaped = {k: html.escape(v, quote=True) for k, v in values.items()}
    return Template(template).safe_substitute(escaped).encode("utf-8")


def _what(intent: Intent | None) -> str:
    if intent is None:
        return "this request"
    if intent.kind == "connect":
        return f"a tunnel to {intent.host}:{intent.port}"
    if intent.kind == "tcp":
        return "this connection"
    return intent.target or intent.host or "this request"
