"""The ``asterisk`` provider: an Asterisk PBX over its Manager Interface (AMI).

Turned on beside ``telephony``::

    plugins:
      telephony: {}
      asterisk:
        host: pbx.example.lan
        username: crm
        secret: ${AMI_SECRET}       # only as an environment variable (engine.api.Secret)

- Click-to-call (``crm_place_call``): one short connection — ``Login``,
  ``Originate`` (ring the user's phone through ``channel``, then dial the
  client's number in ``context``), ``Logoff``. The call carries the CRM's call
  id twice: as its channel's ``ChannelId`` and as the channel variable
  ``CRM_CALL_ID``.
- The listener (``crm_worker_services``): a long-running connection with
  events on, run by ``crm worker``. It follows each call by its ``Linkedid``
  (Asterisk's id shared by every channel of one call) and turns Newchannel,
  VarSet (CRM_CALL_ID), DialBegin, BridgeEnter, Hangup, OriginateResponse
  and Cdr events into the CRM's call events (``plugins.telephony.api.report``),
  each in a transaction of its own. It reconnects with a doubling pause when
  the connection drops, and stops when the worker does.

Event fields are those of the AMI documentation of Asterisk 16 to 21 (the
same in each): docs/telephony.md lists what is read from which event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError, validate, validates
from marshmallow import fields as mf

from engine.api import HandledError, Secret, SettingsSchema, clock, db_session, gettext, hookimpl

from .. import api
from .ami import AmiError, Connection, Message

NAME = "asterisk"
VARIABLE = "CRM_CALL_ID"
log = logging.getLogger("crm.asterisk")


class AsteriskSettings(SettingsSchema):
    """``plugins: {asterisk: {...}}``."""

    host = mf.String(required=True, validate=validate.Length(min=1, max=255))
    port = mf.Integer(load_default=5038, validate=validate.Range(min=1, max=65535))
    username = mf.String(required=True, validate=validate.Length(min=1, max=80))
    secret = Secret(required=True)
    #: the user's phone, as Originate's Channel: ``{extension}`` is the user's extension
    channel = mf.String(load_default="PJSIP/{extension}", validate=validate.Length(max=200))
    #: the dialplan context the client's number is dialed in
    context = mf.String(  # type: ignore[assignment]  # a field named as Schema.context
        load_default="from-internal", validate=validate.Length(min=1, max=80)
    )
    #: what is dialed: ``{number}`` is E.164 (+74951234567), ``{digits}`` the same without +
    exten = mf.String(load_default="{number}", validate=validate.Length(min=1, max=80))
    #: the caller id the user's phone shows while it rings for a click-to-call
    caller_id = mf.String(load_default="{number}", validate=validate.Length(max=80))
    #: seconds the user's phone rings before the exchange gives up
    originate_timeout = mf.Integer(load_default=30, validate=validate.Range(min=5, max=300))
    #: seconds to connect and to wait for each answer of the manager
    connect_timeout = mf.Float(load_default=5.0, validate=validate.Range(min=0.1, max=60))
    #: the longest pause between two attempts to reconnect the listener, seconds
    reconnect_max_backoff = mf.Float(load_default=60.0, validate=validate.Range(min=0.1, max=3600))
    #: seconds of silence after which the listener pings the manager
    ping_interval = mf.Float(load_default=20.0, validate=validate.Range(min=0.1, max=600))
    #: the longest internal extension: a longer number is an outside party
    extension_length = mf.Integer(load_default=6, validate=validate.Range(min=1, max=15))
    #: seconds the listener holds a call's end for its Cdr (the talk time Asterisk bills)
    cdr_wait = mf.Float(load_default=2.0, validate=validate.Range(min=0, max=60))
    ssl = mf.Boolean(load_default=False)

    @validates("channel")
    def _channel(self, value: str, **kwargs: Any) -> None:
        if "{extension}" not in value:
            raise ValidationError("names the user's phone: write `{extension}` in it")

    @validates("exten")
    def _exten(self, value: str, **kwargs: Any) -> None:
        if "{number}" not in value and "{digits}" not in value:
            raise ValidationError("is what is dialed: write `{number}` or `{digits}` in it")


@hookimpl
def crm_settings_schema() -> Any:
    return AsteriskSettings


def own_settings(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """This plugin's settings with defaults, or None when it is off."""
    if NAME not in settings:
        return None
    own = dict(settings.get(NAME) or {})
    for name, f in AsteriskSettings().fields.items():
        if name not in own and f.load_default is not None and not callable(f.load_default):
            own[name] = f.load_default
    return own


def fill(template: str, **values: str) -> str:
    text = template
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def connect(own: Mapping[str, Any]) -> Connection:
    return Connection(
        str(own["host"]), int(own["port"]), float(own["connect_timeout"]), bool(own["ssl"])
    )


# --- click-to-call ---------------------------------------------------------------------------


def unreachable(own: Mapping[str, Any], exc: OSError) -> HandledError:
    address = "{}:{}".format(own["host"], own["port"])
    error = str(exc) or type(exc).__name__
    return HandledError(
        gettext(
            "The telephone exchange at %(address)s cannot be reached: %(error)s",
            address=address,
            error=error,
        )
    )


@hookimpl
def crm_place_call(
    session: Any, extension: str, number: str, call_id: str, settings: dict[str, Any]
) -> str | None:
    """Originate: ring ``extension``, then dial ``number``; ``call_id`` is adopted."""
    own = own_settings(settings)
    if own is None:
        return None
    try:
        conn = connect(own)
    except OSError as exc:
        raise unreachable(own, exc) from exc
    try:
        try:
            conn.login(str(own["username"]), str(own["secret"]), events=False)
        except AmiError as exc:
            raise HandledError(
                gettext(
                    "The telephone exchange refused the CRM's login: %(message)s", message=str(exc)
                )
            ) from exc
        digits = number.lstrip("+")
        fields = [
            ("Channel", fill(str(own["channel"]), extension=extension)),
            ("Context", own["context"]),
            ("Exten", fill(str(own["exten"]), number=number, digits=digits)),
            ("Priority", 1),
            ("Timeout", int(own["originate_timeout"]) * 1000),
            ("Async", "true"),
            ("ChannelId", call_id),
            ("Variable", f"{VARIABLE}={call_id}"),
        ]
        if own.get("caller_id"):
            fields.append(("CallerID", fill(str(own["caller_id"]), number=number, digits=digits)))
        try:
            conn.action("Originate", fields)
        except AmiError as exc:
            raise HandledError(
                gettext("The telephone exchange refused the call: %(message)s", message=str(exc))
            ) from exc
    except OSError as exc:
        raise unreachable(own, exc) from exc
    finally:
        conn.logoff()
    return call_id


# --- AMI events → the CRM's call events -------------------------------------------------------

#: Q.850 hangup causes that say how an unanswered call ended
BUSY_CAUSES = {17, 21}  # user busy, call rejected
NORMAL_CAUSES = {0, 16, 18, 19, 31}  # unknown, normal clearing, no response, no answer, normal
DISPOSITIONS = {
    "ANSWERED": "answered",
    "NO ANSWER": "missed",
    "BUSY": "busy",
    "FAILED": "failed",
    "CONGESTION": "failed",
}
#: how many finished calls the listener remembers (for a late Cdr or a repeated event)
REMEMBERED = 2000


@dataclass
class Leg:
    """What the listener knows of one call (all channels sharing a Linkedid)."""

    linkedid: str
    call_id: str | None = None
    direction: str | None = None
    number: str | None = None
    extension: str | None = None
    channels: set[str] = field(default_factory=set)
    causes: list[int] = field(default_factory=list)
    answered: bool = False
    ended: bool = False
    billsec: int = -1
    cdrs: set[str] = field(default_factory=set)  # the Cdr events seen (a repeat is dropped)


def channel_pattern(template: str) -> re.Pattern[str]:
    """A channel name made from the ``channel`` template: ``PJSIP/101-0000002a``
    from ``PJSIP/{extension}`` (a Local channel's ``;1``/``;2`` too)."""
    before, _, after = template.partition("{extension}")
    return re.compile(
        "^" + re.escape(before) + r"(?P<extension>[0-9*#]+)" + re.escape(after)
        + r"(?:-[^;]*)?(?:;\d)?$"
    )  # fmt: skip


class Mapper:
    """Turns AMI events into ``api.Event`` — no database, no socket."""

    def __init__(self, own: Mapping[str, Any]) -> None:
        self.pattern = channel_pattern(str(own.get("channel") or "PJSIP/{extension}"))
        self.longest = int(own.get("extension_length") or 6)
        self.cdr_wait = float(own.get("cdr_wait") or 0)
        #: a call's end held for its Cdr: Linkedid → (until, the hangup event)
        self.pending: dict[str, tuple[float, api.Event]] = {}
        self.legs: OrderedDict[str, Leg] = OrderedDict()
        self.linked: OrderedDict[str, str] = OrderedDict()  # a channel's Uniqueid → Linkedid

    # -- who is who --------------------------------------------------------------------------

    def internal(self, channel: str | None) -> str | None:
        """The extension of a user's phone channel, or None for any other channel."""
        found = self.pattern.match(channel or "")
        if found is None or len(found["extension"]) > self.longest:
            return None
        return found["extension"]

    def outside(self, number: str | None) -> str | None:
        """``number`` when it is an outside party's (longer than any extension)."""
        if not number or number.startswith("<"):  # <unknown>
            return None
        digits = re.sub(r"\D", "", number)
        return number if len(digits) > self.longest else None

    def leg(self, linkedid: str) -> Leg:
        leg = self.legs.get(linkedid)
        if leg is None:
            leg = self.legs[linkedid] = Leg(linkedid)
            if linkedid.startswith("crm-"):  # our Originate's ChannelId
                leg.call_id = linkedid
            self._forget()
        else:
            self.legs.move_to_end(linkedid)
        return leg

    def _forget(self) -> None:
        while len(self.legs) > REMEMBERED:
            self.legs.popitem(last=False)
        while len(self.linked) > REMEMBERED * 4:
            self.linked.popitem(last=False)

    def linkedid(self, m: Message) -> str | None:
        return m.get("Linkedid") or m.get("LinkedID") or self.linked.get(m.get("Uniqueid") or "")

    # -- the events --------------------------------------------------------------------------

    def feed(self, m: Message) -> list[api.Event]:
        handler = getattr(self, f"on_{m.get('Event', '').lower()}", None)
        if handler is None:
            return []
        return list(handler(m) or [])

    def event(self, leg: Leg, kind: str, m: Message, key: str, **values: Any) -> api.Event:
        call_id = leg.call_id or f"ast-{leg.linkedid}"
        values.setdefault("direction", leg.direction)
        values.setdefault("number", leg.number)
        values.setdefault("extension", leg.extension)
        return api.Event(
            provider=NAME, call_id=call_id, kind=kind, at=moment(m),
            event_id=f"{call_id}:{key}", raw=dict(m), **values,
        )  # fmt: skip

    def on_newchannel(self, m: Message) -> list[api.Event]:
        uid = m.get("Uniqueid") or ""
        lid = m.get("Linkedid") or uid
        if not lid:
            return []
        self.linked[uid] = lid
        leg = self.leg(lid)
        leg.channels.add(uid)
        if leg.direction is not None or uid != lid:
            return []
        # the call's first channel: a user's phone calls out, anything else calls in
        extension = self.internal(m.get("Channel"))
        if extension is not None:
            leg.direction, leg.extension = "out", extension
            leg.number = self.outside(m.get("Exten"))
            return []
        leg.direction = "in"
        leg.number = self.outside(m.get("CallerIDNum"))
        if leg.number is None or leg.call_id is not None:
            return []
        return [self.event(leg, "ringing", m, "ringing")]

    def on_varset(self, m: Message) -> list[api.Event]:
        if m.get("Variable") != VARIABLE or not m.get("Value"):
            return []
        lid = self.linkedid(m)
        if lid:
            self.leg(lid).call_id = m["Value"]
        return []

    def on_dialbegin(self, m: Message) -> list[api.Event]:
        lid = m.get("Linkedid") or m.get("DestLinkedid") or self.linkedid(m)
        if not lid:
            return []
        if m.get("DestUniqueid"):
            self.linked[m["DestUniqueid"]] = lid
        leg = self.leg(lid)
        if not m.get("Channel"):
            # Originate ringing the user's phone: the click-to-call's own first step
            return []
        dest = self.internal(m.get("DestChannel"))
        if leg.direction is None:
            leg.direction = "out" if self.internal(m.get("Channel")) else "in"
        if leg.direction == "in":
            if leg.number is None:
                leg.number = self.outside(m.get("CallerIDNum"))
            if dest is None or leg.call_id is not None:
                return []
            return [self.event(leg, "ringing", m, f"ringing:{dest}", extension=dest)]
        if leg.extension is None:
            leg.extension = self.internal(m.get("Channel"))
        dialed = [m.get("DestCallerIDNum"), m.get("DestExten"), m.get("Exten")]
        dialed.append((m.get("DialString") or "").rpartition("/")[2])
        for candidate in dialed:
            if leg.number is None:
                leg.number = self.outside(candidate)
        if dest is not None or leg.number is None:
            return []  # an internal call, or nothing to file it under
        return [self.event(leg, "ringing", m, "ringing")]

    def on_bridgeenter(self, m: Message) -> list[api.Event]:
        lid = self.linkedid(m)
        if not lid:
            return []
        leg = self.leg(lid)
        try:
            together = int(m.get("BridgeNumChannels") or 2)
        except ValueError:
            together = 2
        if together < 2 or leg.answered or not self._known(leg):
            return []
        leg.answered = True
        extension = leg.extension
        if leg.direction == "in":
            extension = self.internal(m.get("Channel")) or leg.extension
            leg.extension = leg.extension or extension
        return [self.event(leg, "answered", m, "answered", extension=extension)]

    def on_hangup(self, m: Message) -> list[api.Event]:
        lid = self.linkedid(m)
        if not lid:
            return []
        leg = self.leg(lid)
        leg.channels.discard(m.get("Uniqueid") or "")
        with contextlib.suppress(ValueError):
            leg.causes.append(int(m.get("Cause") or 0))
        if leg.channels or leg.ended or not self._known(leg):
            return []
        leg.ended = True
        event = self.event(leg, "hangup", m, "hangup", status=self.ending(leg))
        if self.cdr_wait <= 0:
            return [event]
        self.pending[lid] = (time.monotonic() + self.cdr_wait, event)
        return []

    def due(self, everything: bool = False) -> list[api.Event]:
        """The held call ends whose Cdr did not come in time (all of them: ``everything``)."""
        now = time.monotonic()
        late = [lid for lid, (until, _) in self.pending.items() if everything or until <= now]
        return [self.pending.pop(lid)[1] for lid in late]

    def ending(self, leg: Leg) -> str:
        if leg.answered:
            return "answered"
        if any(c in BUSY_CAUSES for c in leg.causes):
            return "busy"
        if any(c not in NORMAL_CAUSES for c in leg.causes):
            return "failed"
        return "missed"

    def on_originateresponse(self, m: Message) -> list[api.Event]:
        if (m.get("Response") or "").lower() != "failure":
            return []
        call_id = m.get("Uniqueid") or ""
        if not call_id.startswith("crm-"):
            return []
        leg = self.leg(call_id)
        if leg.ended:
            return []
        leg.ended = True
        reason = m.get("Reason") or ""
        status = {"5": "busy", "3": "missed"}.get(reason, "failed")
        return [self.event(leg, "hangup", m, "hangup", status=status)]

    def on_cdr(self, m: Message) -> list[api.Event]:
        uid = m.get("UniqueID") or m.get("Uniqueid") or ""
        lid = m.get("Linkedid") or m.get("LinkedID") or self.linked.get(uid) or uid
        if not lid:
            return []
        leg = self.leg(lid)
        if leg.direction is None:  # a call that began before the listener connected
            extension = self.internal(m.get("Channel"))
            if extension is not None:
                leg.direction, leg.extension = "out", extension
                leg.number = self.outside(m.get("Destination"))
            else:
                leg.direction = "in"
                leg.number = self.outside(m.get("Source"))
                leg.extension = self.internal(m.get("DestinationChannel"))
        if not self._known(leg):
            return []
        status = DISPOSITIONS.get((m.get("Disposition") or "").upper())
        if status is None:
            return []
        try:
            billsec = int(m.get("BillableSeconds") or 0)
        except ValueError:
            billsec = 0
        seen = f"{uid}:{m.get('DestinationChannel')}:{status}:{billsec}"
        if seen in leg.cdrs:
            return []
        leg.cdrs.add(seen)
        held = self.pending.pop(lid, None)
        if held is not None:  # the call's end, with what the Cdr says
            event = held[1]
            if status == "answered":
                leg.answered, leg.billsec = True, billsec
                event.status, event.duration = "answered", billsec
            elif not leg.answered:
                event.status = status
            event.raw = {**event.raw, "Cdr": dict(m)}
            return [event]
        if status == "answered":
            if billsec <= leg.billsec:
                return []
            leg.answered, leg.billsec, leg.ended = True, billsec, True
            return [self.event(leg, "hangup", m, f"cdr:{uid}:{billsec}", status="answered",
                               duration=billsec)]  # fmt: skip
        if leg.answered:
            return []  # a party that did not pick up, on a call someone answered
        leg.ended = True
        return [self.event(leg, "hangup", m, f"cdr:{uid}:{status}", status=status)]

    @staticmethod
    def _known(leg: Leg) -> bool:
        """Whether the call is the CRM's: click-to-call, or an outside party's."""
        return leg.call_id is not None or leg.number is not None


def moment(m: Message) -> dt.datetime:
    """When an event happened: its ``Timestamp`` (manager.conf ``timestampevents``), else now."""
    try:
        return dt.datetime.fromtimestamp(float(m["Timestamp"]), dt.UTC)
    except (KeyError, ValueError, OverflowError, OSError):
        return clock.now()


# --- the listener: a worker service -----------------------------------------------------------


class AsteriskListener:
    """``service(stop)``: listen to the exchange until ``stop`` is set."""

    __name__ = "asterisk-listener"

    def __init__(self, own: Mapping[str, Any]) -> None:
        self.own = dict(own)
        self.mapper = Mapper(own)
        self.connected = threading.Event()

    def __call__(self, stop: threading.Event) -> None:
        pause = 1.0
        longest = float(self.own["reconnect_max_backoff"])
        while not stop.is_set():
            try:
                self.listen(stop)
                pause = 1.0
            except AmiError as exc:
                log.error("the Asterisk manager refused the listener's login: %s", exc)
            except OSError as exc:
                log.warning("the Asterisk manager connection is lost: %s", exc or type(exc))
            self.connected.clear()
            if stop.is_set():
                break
            stop.wait(min(pause, longest))
            pause = min(pause * 2, longest)

    def listen(self, stop: threading.Event) -> None:
        conn = connect(self.own)
        try:
            conn.login(str(self.own["username"]), str(self.own["secret"]), events=True)
            log.info("listening to the Asterisk manager at %s:%s", self.own["host"],
                     self.own["port"])  # fmt: skip
            self.connected.set()
            quiet_since = time.monotonic()
            ping = float(self.own["ping_interval"])
            while not stop.is_set():
                m = conn.event(timeout=min(0.2, ping))
                for event in self.mapper.due():
                    apply(event)
                if m is None:
                    if time.monotonic() - quiet_since >= ping:
                        conn.action("Ping")
                        quiet_since = time.monotonic()
                    continue
                quiet_since = time.monotonic()
                for event in self.mapper.feed(m):
                    apply(event)
        finally:
            for event in self.mapper.due(everything=True):
                apply(event)
            if stop.is_set():
                conn.logoff()
            else:
                conn.close()


def apply(event: api.Event) -> None:
    """Report one event in a committed transaction of its own; a failure is logged."""
    session = db_session()
    try:
        api.report(event, session=session)
        session.commit()
    except Exception:  # one bad event never stops the listener
        session.rollback()
        log.exception("the call event %s of %s was not applied", event.kind, event.call_id)


@hookimpl
def crm_worker_services(registry: Any) -> list[Any]:
    if NAME not in registry.plugins or "telephony" not in registry.plugins:
        return []
    own = own_settings(registry.plugins)
    return [AsteriskListener(own)] if own is not None else []
