"""The listener's reading of AMI events, without a socket or a database:
which CRM call events come out of which Asterisk events."""

from __future__ import annotations

import itertools
from typing import Any

from plugins.telephony.providers.asterisk import Mapper, channel_pattern

from .ami_server import incoming_call, originated_call


def feed(mapper: Mapper, events: list[list[tuple[str, Any]]]) -> list[Any]:
    out = []
    for event in events:
        out += mapper.feed({k: str(v) for k, v in event})
    return out + mapper.due(everything=True)


def summary(events: list[Any]) -> list[tuple[Any, ...]]:
    return [(e.kind, e.direction, e.number, e.extension, e.status, e.duration) for e in events]


def test_an_answered_incoming_call() -> None:
    got = feed(Mapper({"cdr_wait": 5}), incoming_call("17.1", "+74951234567", "101", talk=65))
    assert summary(got) == [
        ("ringing", "in", "+74951234567", None, None, None),
        ("ringing", "in", "+74951234567", "101", None, None),
        ("answered", "in", "+74951234567", "101", None, None),
        ("hangup", "in", "+74951234567", "101", "answered", 65),  # the Hangup, completed by the Cdr
    ]
    assert {e.call_id for e in got} == {"ast-17.1"}
    assert len({e.event_id for e in got}) == 4


def test_without_waiting_for_the_cdr_it_corrects_the_duration_afterwards() -> None:
    got = feed(Mapper({"cdr_wait": 0}), incoming_call("17.2", "+74951234567", "101", talk=30))
    assert [(e.kind, e.status, e.duration) for e in got[-2:]] == [
        ("hangup", "answered", None),
        ("hangup", "answered", 30),
    ]


def test_an_originated_call_keeps_the_crms_id() -> None:
    originate = [("Channel", "PJSIP/101"), ("Context", "from-internal"),
                 ("Exten", "+74951234567"), ("CallerID", "+74951234567"),
                 ("ChannelId", "crm-abc"), ("Variable", "CRM_CALL_ID=crm-abc")]  # fmt: skip
    got = feed(Mapper({"cdr_wait": 5}), originated_call(originate, itertools.count(1), talk=42))
    assert {e.call_id for e in got} == {"crm-abc"}
    assert summary(got) == [
        ("ringing", "out", "+74951234567", "101", None, None),
        ("answered", "out", "+74951234567", "101", None, None),
        ("hangup", "out", "+74951234567", "101", "answered", 42),
    ]


def test_varset_names_the_call_when_the_channel_id_does_not() -> None:
    originate = [("Channel", "PJSIP/101"), ("Context", "from-internal"),
                 ("Exten", "+74951234567"), ("Variable", "CRM_CALL_ID=crm-xyz")]  # fmt: skip
    got = feed(Mapper({}), originated_call(originate, itertools.count(7), answer=False))
    assert {e.call_id for e in got} == {"crm-xyz"}
    assert got[-1].status == "missed"


def test_a_failed_originate_ends_the_call() -> None:
    got = Mapper({}).feed({"Event": "OriginateResponse", "Response": "Failure",
                           "Uniqueid": "crm-1", "Reason": "5"})  # fmt: skip
    assert [(e.call_id, e.kind, e.status) for e in got] == [("crm-1", "hangup", "busy")]


def test_busy_and_failed_causes() -> None:
    busy = feed(Mapper({}), incoming_call("17.3", "+74951234567", "101", answer=False, cause=17,
                                          cdr_event=False))  # fmt: skip
    failed = feed(Mapper({}), incoming_call("17.4", "+74951234567", "101", answer=False,
                                            cause=34, cdr_event=False))  # fmt: skip
    assert (busy[-1].status, failed[-1].status) == ("busy", "failed")


def test_which_channels_are_phones() -> None:
    assert channel_pattern("PJSIP/{extension}").match("PJSIP/101-0000002a")["extension"] == "101"
    local = channel_pattern("Local/{extension}@from-internal")
    assert local.match("Local/101@from-internal-00000001;2")["extension"] == "101"
    mapper = Mapper({"channel": "SIP/{extension}", "extension_length": 4})
    assert mapper.internal("SIP/1001-000a") == "1001"
    assert mapper.internal("SIP/trunk-000a") is None
    assert mapper.internal("SIP/10012-000a") is None  # longer than an extension
    assert mapper.internal("PJSIP/101-000a") is None
