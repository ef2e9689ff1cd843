"""The Matrix spec's own test vectors (appendices: canonical JSON, signing JSON, signing events)."""

from __future__ import annotations

import json

import pytest
from signedjson.key import decode_signing_key_base64

from homeserver.events import VerifyKeyInfo, content_hash, sign_event, verify_event
from homeserver.events.canonical import encode_canonical_json
from homeserver.events.errors import EventFormatError
from homeserver.events.signing import sign_json_bytes

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = decode_signing_key_base64("ed25519", "1", SEED)


@pytest.mark.parametrize("given, expected", [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"auth":{"success":true,"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"medium":"email","address":"john.doe@example.org"},{"medium":"msisdn","address":"123456789"}]}}}',
     '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}'),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
    ('{"a": -0, "b": 1e10}', '{"a":0,"b":10000000000}'),
])
def test_canonical_json_examples(given: str, expected: str) -> None:
    assert encode_canonical_json(json.loads(given)) == expected.encode("utf-8")


def test_strict_mode_refuses_floats_and_big_integers() -> None:
    with pytest.raises(EventFormatError):
        encode_canonical_json({"a": 1.5}, strict=True)
    with pytest.raises(EventFormatError):
        encode_canonical_json({"a": 2**53}, strict=True)
    assert encode_canonical_json({"a": 2**53 - 1}, strict=True) == b'{"a":9007199254740991}'


def test_signing_json_vectors() -> None:
    assert sign_json_bytes(encode_canonical_json({}), KEY) == (
        "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ")
    assert sign_json_bytes(encode_canonical_json({"one": 1, "two": "Two"}), KEY) == (
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw")


MINIMAL = {"room_id": "!x:domain", "sender": "@a:domain", "origin": "domain", "origin_server_ts": 1000000,
           "signatures": {}, "hashes": {}, "type": "X", "content": {}, "prev_events": [], "auth_events": [],
           "depth": 3, "unsigned": {"age_ts": 1000000}}


def test_minimal_event_hash_and_signature() -> None:
    signed = sign_event(MINIMAL, "domain", KEY, "10")
    assert signed["hashes"] == {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}
    assert signed["signatures"] == {"domain": {"ed25519:1": (
        "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg")}}
    assert signed["unsigned"] == {"age_ts": 1000000}
    assert content_hash(MINIMAL) == "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"


def test_redactable_event_vector() -> None:
    event = {"content": {"body": "Here is the message content"}, "event_id": "$0:domain", "origin": "domain",
             "origin_server_ts": 1000000, "type": "m.room.message", "room_id": "!r:domain", "sender": "@u:domain",
             "signatures": {}, "unsigned": {"age_ts": 1000000}}
    signed = sign_event(event, "domain", KEY, "10")
    assert signed["hashes"] == {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"}
    assert signed["signatures"]["domain"]["ed25519:1"] == (
        "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA")


def test_verify_minimal_event() -> None:
    signed = sign_event(MINIMAL, "domain", KEY, "10")
    signed["sender"] = "@a:domain"
    verify_event(signed, "10", {"domain": {"ed25519:1": VerifyKeyInfo(KEY.verify_key, valid_until_ts=2_000_000)}})
