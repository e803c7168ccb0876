"""What the HTTP providers share: a public webhook endpoint, the replay
store, signed requests to a provider's REST API.

- :func:`public`: a view registered without login and without CSRF (a
  provider's POST carries neither; its signature is the key);
- :func:`seen_before`: remember a signed request's signature in the database
  (``WebhookSignature``, unique), so that every web worker recognizes the very
  same request sent again within the time window — a replay;
- :func:`prune`: forget signatures older than twice the window (a request
  that old is refused as stale anyway);
- :func:`refused`: log why a request was refused and answer it in JSON;
- :func:`send`: one HTTP request with a timeout; a refusal, an error status
  or a timeout becomes ``HandledError`` with a message the user reads.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.api import HandledError, clock, gettext, json_error

from .. import once

SIGNATURES = "WebhookSignature"

log = logging.getLogger("crm.telephony.webhooks")


def public(appbuilder: Any, view: Any) -> Any:
    """Add ``view`` to the app with no menu, its POSTs exempt from CSRF."""
    from flask import current_app

    added = appbuilder.add_view_no_menu(view)
    if added.blueprint is not None:
        current_app.extensions["csrf"].exempt(added.blueprint)
    return added


def refused(provider: str, status: int, reason: str, **extra: Any) -> Any:
    """Log a refused webhook request (who, why, from where) and answer it."""
    from flask import request

    log.warning(
        "%s webhook refused (%d): %s [from %s, %s]",
        provider, status, reason, request.remote_addr, request.path,
    )  # fmt: skip
    return json_error(status, reason, **extra)


def seen_before(session: Any, models: Any, provider: str, signature: str) -> bool:
    """Record the signature of a request; True when it was recorded before
    (the same signed request again: a replay). In the caller's transaction:
    a request that fails afterwards is not remembered."""
    table = models.table(SIGNATURES)
    key = f"{provider}:{signature.strip().lower()}"[:128]
    values = {"provider": provider[:64], "signature": key, "received_at": clock.now()}
    if once.supported(session):  # one statement: no savepoint around it
        return not once.insert_new(session, table, values, "signature")
    try:
        with session.begin_nested():
            session.execute(sa.insert(table).values(**values))
    except sa.exc.IntegrityError:
        return True
    return False


def applied(provider: str, event: Any, session: Any) -> Any:
    """Apply a webhook's call event in the request's session and commit; the
    JSON answer (``duplicate`` for an event applied before), or a logged 400
    for an event the Call refuses. Nothing is written on a refusal."""
    from engine.api import ValidationFailed

    from .. import api

    try:
        call = api.report(event, session=session)
        answer = (
            {"ok": True, "duplicate": True}
            if call is None  # read before the commit expires the record
            else {"ok": True, "call": call.id, "status": call.status}
        )
        session.commit()
    except ValidationFailed as exc:
        session.rollback()
        reasons = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
        return refused(provider, 400, reasons or "the event was refused")
    except ValueError as exc:
        session.rollback()
        return refused(provider, 400, str(exc))
    except Exception:
        session.rollback()
        raise
    return answer


def prune(session: Any, models: Any, window: int) -> int:
    """Forget the signatures received more than twice ``window`` seconds ago;
    how many. (A request's timestamp may be up to ``window`` ahead of the
    clock, so it stays valid for twice the window after it arrived.)"""
    table = models.table(SIGNATURES)
    before = clock.now() - dt.timedelta(seconds=2 * window)
    done = session.execute(sa.delete(table).where(table.c.received_at < before))
    return int(done.rowcount or 0)


def send(
    provider: str,
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> tuple[int, bytes]:
    """Send one request; (status, body) of a 2xx answer. Anything else — an
    error status, a refused connection, a timeout — raises ``HandledError``
    with a message the user reads (and is logged with the details)."""
    if not url.startswith(("http://", "https://")):  # the settings allow no other scheme
        raise HandledError(gettext("The telephone exchange's address is not an http(s) URL."))
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:  # noqa: S310 (the admin's URL)
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        detail = _said(exc.read())
        log.warning("%s refused %s %s: %s %s", provider, method, url, exc.code, detail)
        message = gettext(
            "The telephone exchange refused the call (%(status)s): %(detail)s",
            status=exc.code, detail=detail or exc.reason,
        )  # fmt: skip
        raise HandledError(message) from exc
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        log.warning("%s did not answer %s %s: %s", provider, method, url, reason)
        raise HandledError(
            gettext("The telephone exchange does not answer: %(reason)s", reason=str(reason))
        ) from exc


def _said(body: bytes) -> str:
    """What an error answer says: its JSON ``message`` or ``error``, else its text."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and (data.get("message") or data.get("error")):
            return str(data.get("message") or data.get("error"))[:300]
    except ValueError:
        pass
    return body[:300].decode("utf-8", "replace").strip()
