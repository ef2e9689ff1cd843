"""Offline verification of a room's audit export: needs no server and no configuration, and uses only
``homeserver.events`` — the same rules every server applies, so an auditor trusts the rules, not the
ministry's server.

What is checked, for every event: its ID is the reference hash of its content (so nothing about it
can change without changing its ID, which later events cite); its content hash (an event exported in
redacted form is reported as redacted, not as a failure); the signatures of the servers that must
sign it, with the key each published for that time; that every event it cites (``prev_events``,
``auth_events``) is in the export; that the room's rules allowed it, against its own auth events and
against the state the events before it resolve to. Then the room's final state is computed. Keys are
checked too: each server's key document must carry its own signature; keys can further be anchored to
keys the auditor holds independently (``trusted_keys``).
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, TextIO

from homeserver.events import (
    AuthError, EventFormatError, HashMismatch, SignatureError, VerifyKeyInfo, auth_types_for_event, check_auth,
    event_id, get_room_version, redact, resolve_state, verify_event,
)
from homeserver.events.hashes import create_event_id_for_room
from homeserver.events.signing import VerifyKey, decode_base64, verify_json_signature

FORMAT = "qasid.audit.v1"
StateMap = dict[tuple[str, str], str]


@dataclass
class Failure:
    event_id: str | None
    check: str  # id, hash, signature, missing, auth_events, state_before, key, format, export
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "check": self.check, "reason": self.reason}


@dataclass
class Report:
    room_id: str | None = None
    room_version: str | None = None
    exported_by: str | None = None
    events: int = 0
    in_range: int = 0
    redacted: list[str] = field(default_factory=list)
    by_server: Counter[str] = field(default_factory=Counter)
    by_sender: Counter[str] = field(default_factory=Counter)
    first_ts: int | None = None
    last_ts: int | None = None
    failures: list[Failure] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    keys: dict[str, list[str]] = field(default_factory=dict)
    unanchored_servers: list[str] = field(default_factory=list)
    final_state: StateMap = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "room_id": self.room_id, "room_version": self.room_version, "exported_by": self.exported_by,
            "events": self.events, "events_in_range": self.in_range, "redacted": sorted(self.redacted),
            "by_server": dict(sorted(self.by_server.items())), "by_sender": dict(sorted(self.by_sender.items())),
            "first_ts": self.first_ts, "last_ts": self.last_ts, "failures": [f.as_dict() for f in self.failures],
            "missing_events": sorted(self.gaps), "keys": self.keys, "unanchored_servers": self.unanchored_servers,
            "final_state": [{"type": t, "state_key": k, "event_id": v} for (t, k), v in sorted(self.final_state.items())],
        }


class ExportError(Exception):
    """The file is not an audit export at all (nothing could be checked)."""


def _read(lines: Iterable[str]) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    header: dict[str, Any] | None = None
    keys: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    end: dict[str, Any] | None = None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ExportError(f"line {n}: not JSON") from None
        if not isinstance(item, dict):
            raise ExportError(f"line {n}: not a JSON object")
        kind = item.get("kind")
        if header is None:
            if kind != "header" or item.get("format") != FORMAT:
                raise ExportError(f"line {n}: not a {FORMAT} export header")
            header = item
        elif kind == "server_keys":
            keys.append(item)
        elif kind == "event":
            events.append(item)
        elif kind == "end":
            end = item
        else:
            raise ExportError(f"line {n}: unknown kind {kind!r}")
    if header is None:
        raise ExportError("empty file")
    return header, keys, events, end


def _load_keys(key_items: list[dict[str, Any]], report: Report,
               trusted: Mapping[str, Mapping[str, str]] | None) -> dict[str, dict[str, VerifyKeyInfo]]:
    """Each key document must be signed by one of its own keys. Keys the auditor trusts independently
    must match; servers with no trusted key are listed as unanchored."""
    out: dict[str, dict[str, VerifyKeyInfo]] = {}
    for item in key_items:
        server = item.get("server_name")
        resp = item.get("response")
        if not isinstance(server, str) or not isinstance(resp, dict) or resp.get("server_name") != server:
            report.failures.append(Failure(None, "key", f"malformed key document for {server!r}"))
            continue
        current = resp.get("verify_keys") if isinstance(resp.get("verify_keys"), dict) else {}
        old = resp.get("old_verify_keys") if isinstance(resp.get("old_verify_keys"), dict) else {}
        parsed: dict[str, tuple[VerifyKey, int | None, int | None]] = {}
        try:
            for kid, k in current.items():
                parsed[kid] = (VerifyKey(decode_base64(k["key"])), resp.get("valid_until_ts"), None)
            for kid, k in old.items():
                parsed[kid] = (VerifyKey(decode_base64(k["key"])), None, k.get("expired_ts"))
        except Exception:  # noqa: BLE001 - any malformed key is a failed key document
            report.failures.append(Failure(None, "key", f"{server}: a key in its key document is malformed"))
            continue
        self_signed = any(verify_json_signature(resp, server, kid, vk) for kid, (vk, _, _) in parsed.items() if kid in current)
        if not self_signed:
            report.failures.append(Failure(None, "key", f"{server}: its key document is not signed by its own current key"))
            continue
        for kid, (vk, valid_until, expired) in parsed.items():
            prev = out.setdefault(server, {}).get(kid)
            info = VerifyKeyInfo(vk, valid_until if isinstance(valid_until, int) else None, expired if isinstance(expired, int) else None)
            if prev is not None and bytes(prev.verify_key) != bytes(vk):
                report.failures.append(Failure(None, "key", f"{server}: two different keys under the ID {kid}"))
                continue
            # The latest document wins for validity (a key retired later carries its expiry).
            if prev is None or (info.expired_ts is not None):
                out[server][kid] = info
        report.keys[server] = sorted(out.get(server, {}))
    if trusted is not None:
        for server, kids in out.items():
            anchors = trusted.get(server)
            if not anchors:
                report.unanchored_servers.append(server)
                continue
            for kid, info in kids.items():
                want = anchors.get(kid)
                if want is not None and want != _b64(bytes(info.verify_key)):
                    report.failures.append(Failure(None, "key", f"{server} {kid}: not the key the auditor trusts"))
    else:
        report.unanchored_servers = sorted(out)
    return out


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode().rstrip("=")


def _order(events: dict[str, dict[str, Any]]) -> list[str]:
    """Events before those that cite them (prev and auth), ties by depth, time and ID."""
    children: dict[str, list[str]] = {e: [] for e in events}
    waiting: dict[str, int] = {}
    for eid, pdu in events.items():
        deps = {p for p in list(pdu.get("prev_events") or []) + list(pdu.get("auth_events") or []) if p in events and p != eid}
        waiting[eid] = len(deps)
        for d in deps:
            children[d].append(eid)

    def key(eid: str) -> tuple[int, int, str]:
        p = events[eid]
        return (int(p.get("depth", 0)) if isinstance(p.get("depth"), int) else 0, int(p.get("origin_server_ts", 0) or 0), eid)

    ready = [(key(e), e) for e, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, eid = heapq.heappop(ready)
        out.append(eid)
        for c in children[eid]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (key(c), c))
    if len(out) < len(events):  # a cycle can only come from forged references: report, check the rest
        out += sorted(e for e in events if e not in set(out))
    return out


def verify_export(lines: Iterable[str], trusted_keys: Mapping[str, Mapping[str, str]] | None = None) -> Report:
    report = Report()
    header, key_items, items, end = _read(lines)
    report.room_id = header.get("room_id")
    report.room_version = header.get("room_version")
    report.exported_by = header.get("exported_by")
    try:
        rv = get_room_version(str(report.room_version))
    except Exception:  # noqa: BLE001
        raise ExportError(f"unknown room version {report.room_version!r}") from None
    keys = _load_keys(key_items, report, trusted_keys)

    events: dict[str, dict[str, Any]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for item in items:
        pdu, claimed = item.get("pdu"), item.get("event_id")
        if not isinstance(pdu, dict) or not isinstance(claimed, str):
            report.failures.append(Failure(claimed if isinstance(claimed, str) else None, "format", "malformed event line"))
            continue
        if claimed in events:
            report.failures.append(Failure(claimed, "export", "the event appears twice"))
            continue
        events[claimed] = pdu
        meta[claimed] = item
    report.events = len(events)
    if isinstance(end, dict) and end.get("events") != len(events):
        report.failures.append(Failure(None, "export", f"the export says {end.get('events')} events but holds {len(events)}"))

    create_id = create_event_id_for_room(str(report.room_id)) if rv.room_id_from_create_event else None
    valid: set[str] = set()
    redacted: set[str] = set()
    for eid, pdu in events.items():
        try:
            computed = event_id(pdu, rv)
        except Exception as e:  # noqa: BLE001
            report.failures.append(Failure(eid, "format", f"cannot compute the event ID: {e}"))
            continue
        if computed != eid:
            report.failures.append(Failure(eid, "id", f"the event's content hashes to {computed}, not to its ID"))
            continue
        if pdu.get("room_id", report.room_id) != report.room_id and not (pdu.get("type") == "m.room.create" and eid == create_id):
            report.failures.append(Failure(eid, "format", "the event belongs to another room"))
            continue
        try:
            verify_event(pdu, rv, keys)
        except HashMismatch:
            if redact(pdu, rv) == {k: v for k, v in pdu.items() if k != "unsigned"} or redact(pdu, rv) == pdu:
                redacted.add(eid)
            else:
                report.failures.append(Failure(eid, "hash", "the content does not match the content hash the servers signed"))
                continue
        except SignatureError as e:
            report.failures.append(Failure(eid, "signature", str(e)))
            continue
        except EventFormatError as e:
            report.failures.append(Failure(eid, "format", str(e)))
            continue
        valid.add(eid)
    report.redacted = sorted(redacted)

    # The room's rules, in the order the events happened.
    state_after: dict[str, StateMap] = {}
    pdus_with_ids = {eid: {**pdu, "event_id": eid} for eid, pdu in events.items()}
    children: set[str] = set()
    for eid in _order(events):
        pdu = events[eid]
        if eid not in valid:
            # Already reported. Its state change is not taken, but the room's state flows through it
            # unchanged: one forged event must not make every event after it look refused.
            prev_states = [state_after[p] for p in pdu.get("prev_events") or [] if p in state_after]
            state_after[eid] = _resolve(rv, prev_states, pdus_with_ids)
            continue
        cited = list(pdu.get("prev_events") or []) + list(pdu.get("auth_events") or [])
        missing = [c for c in cited if c not in events]
        if missing:
            report.gaps.extend(m for m in missing if m not in report.gaps)
            report.failures.append(Failure(eid, "missing", f"cites events not in the export: {', '.join(missing[:3])}"))
        children.update(p for p in pdu.get("prev_events") or [])
        auth_map: dict[tuple[str, str], dict[str, Any]] = {}
        for aid in pdu.get("auth_events") or []:
            a = pdus_with_ids.get(aid)
            if a is not None and isinstance(a.get("state_key"), str):
                auth_map[(a["type"], a["state_key"])] = a
        if create_id and pdu.get("type") != "m.room.create" and create_id in pdus_with_ids:
            auth_map[("m.room.create", "")] = pdus_with_ids[create_id]
        ok = True
        if not missing:
            try:
                check_auth(pdus_with_ids[eid], auth_map, rv)
            except AuthError as e:
                report.failures.append(Failure(eid, "auth_events", f"refused by its own auth events: {e}"))
                ok = False
        prev_states = [state_after[p] for p in pdu.get("prev_events") or [] if p in state_after]
        before = _resolve(rv, prev_states, pdus_with_ids)
        if ok and (prev_states or not pdu.get("prev_events")):
            wanted = auth_types_for_event(pdu, rv) | {("m.room.create", "")}
            from_state = {k: pdus_with_ids[v] for k, v in before.items() if k in wanted and v in pdus_with_ids}
            try:
                check_auth(pdus_with_ids[eid], from_state, rv)
            except AuthError as e:
                report.failures.append(Failure(eid, "state_before", f"refused by the room's state before it: {e}"))
                ok = False
        key = pdu.get("state_key")
        state_after[eid] = {**before, (pdu["type"], key): eid} if ok and isinstance(key, str) else before
        status = meta[eid].get("status", "accepted")
        if status == "accepted" and meta[eid].get("in_range", True):
            report.in_range += 1
            report.by_sender[str(pdu.get("sender"))] += 1
            report.by_server[str(pdu.get("sender", ":")).split(":", 1)[-1]] += 1
            ts = pdu.get("origin_server_ts")
            if isinstance(ts, int):
                report.first_ts = ts if report.first_ts is None else min(report.first_ts, ts)
                report.last_ts = ts if report.last_ts is None else max(report.last_ts, ts)
    heads = [e for e in state_after if e not in children and meta[e].get("status", "accepted") == "accepted"]
    report.final_state = _resolve(rv, [state_after[h] for h in heads], pdus_with_ids)
    declared = end.get("current_state") if isinstance(end, dict) else None
    if isinstance(declared, list):
        claimed = {(s["type"], s["state_key"]): s["event_id"] for s in declared if isinstance(s, dict)}
        if claimed != report.final_state:
            diff = sorted(k for k in set(claimed) | set(report.final_state) if claimed.get(k) != report.final_state.get(k))
            report.failures.append(Failure(None, "state", f"the server's current state differs from the verified one at {diff[:3]}"))
    return report


def _resolve(rv: Any, sets: list[StateMap], events: Mapping[str, Mapping[str, Any]]) -> StateMap:
    distinct: list[StateMap] = []
    for s in sets:
        if not any(s is d or s == d for d in distinct):
            distinct.append(s)
    if not distinct:
        return {}
    if len(distinct) == 1:
        return distinct[0]
    return resolve_state(rv, distinct, events)


def human_report(report: Report, out: TextIO) -> None:
    w = out.write
    w(f"Room {report.room_id} (version {report.room_version}), exported by {report.exported_by}\n")
    w(f"{report.events} events in the export, {report.in_range} in the audited range")
    if report.first_ts is not None and report.last_ts is not None:
        import datetime

        fmt = lambda ms: datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")  # noqa: E731
        w(f", from {fmt(report.first_ts)} to {fmt(report.last_ts)}")
    w("\n\nEvents per server:\n")
    for server, n in sorted(report.by_server.items()):
        w(f"  {server:40} {n:>8}\n")
    w("Events per sender:\n")
    for sender, n in sorted(report.by_sender.items()):
        w(f"  {sender:40} {n:>8}\n")
    w(f"\nSigning keys checked: {', '.join(f'{s} ({len(k)})' for s, k in sorted(report.keys.items())) or 'none'}\n")
    if report.unanchored_servers:
        w(f"Keys taken from the export itself (no independently trusted key given): {', '.join(report.unanchored_servers)}\n")
    if report.redacted:
        w(f"Redacted (content removed, signatures intact): {len(report.redacted)} events\n")
    if report.gaps:
        w(f"Missing from the export: {len(report.gaps)} events, e.g. {', '.join(report.gaps[:3])}\n")
    w(f"\nFinal state: {len(report.final_state)} entries\n")
    for (t, k), v in sorted(report.final_state.items()):
        if t != "m.room.member":
            w(f"  {t} [{k}] {v}\n")
    members = sum(1 for (t, _) in report.final_state if t == "m.room.member")
    w(f"  m.room.member x {members}\n")
    if report.ok:
        w("\nRESULT: CLEAN — every check passed.\n")
    else:
        w(f"\nRESULT: {len(report.failures)} FAILURE(S)\n")
        for f in report.failures[:200]:
            w(f"  [{f.check}] {f.event_id or '-'}: {f.reason}\n")
        if len(report.failures) > 200:
            w(f"  ... and {len(report.failures) - 200} more\n")
