"""
Admin actions on the status listener: put a backend in drain, maint or
ready, by a POST to ``/admin`` that carries the configured token.

Reading the request is pure (`read_admin_request`): it takes the target,
the ``Authorization`` value and the form body, and returns an
`AdminCommand` or raises `AdminRefused` with the status to answer.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs

ADMIN_ACTIONS = ("drain", "maint", "ready")
"""What an operator may do to a backend (the backend's admin states)."""

FORM_TYPE = b"application/x-www-form-urlencoded"


class AdminRefused(Exception):
    """An admin request that is not carried out; ``status`` is the answer's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """Put ``backend`` of ``pool`` in ``action`` (one of `ADMIN_ACTIONS`)."""

    pool: str
    backend: str
    action: str


def _bearer(authorization: bytes | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return value.strip().decode("latin-1")


def read_admin_request(target: bytes, authorization: bytes | None, content_type: bytes | None,
                       body: bytes, token: str | None) -> AdminCommand:
    """
    The command in a POST to ``/admin``: ``pool``, ``backend`` and
    ``action`` from the query string or the form body, the token from
    ``Authorization: Bearer TOKEN`` or the form field ``token``.

    @raise AdminRefused: 403 when no token is configured or it does not
        match; 400 when a field is missing or the action is unknown.
    """
    if not token:
        raise AdminRefused(403, "admin actions are off: no status_token is configured")
    _, _, query = target.partition(b"?")
    fields = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
    if body:
        kind = (content_type or b"").split(b";", 1)[0].strip().lower()
        if kind and kind != FORM_TYPE:
            raise AdminRefused(400, "send the fields as application/x-www-form-urlencoded")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise AdminRefused(400, "the form is not UTF-8") from None
        fields.update({k: v[-1] for k, v in parse_qs(text).items()})
    given = _bearer(authorization) or fields.get("token", "")
    if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
        raise AdminRefused(403, "wrong or missing admin token")
    missing = [k for k in ("pool", "backend", "action") if not fields.get(k)]
    if missing:
        raise AdminRefused(400, f"missing field {missing[0]} (pool, backend and action)")
    action = fields["action"]
    if action not in ADMIN_ACTIONS:
        raise AdminRefused(400, f"action must be one of {', '.join(ADMIN_ACTIONS)}")
    return AdminCommand(fields["pool"], fields["backend"], action)
