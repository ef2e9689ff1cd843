"""Usage metering for billing: each ministry's server reports its usage to the central government.

Two parts. On the request path, the first authenticated request of a user on a UTC day writes one
row (user, day); an in-memory set of users already written today keeps every later request of the day
free of SQL. Everything else in the report is computed afterwards from what the server stores anyway
(events, accounts, rooms, media), so nothing is counted on the event path and no count can drift from
the data it describes.

The report is signed with the server's federation signing key exactly as Matrix signs JSON (canonical
JSON without ``signatures``/``unsigned``, ed25519), so the billing office checks it against the key the
server publishes at ``/_matrix/key/v2/server`` — offline, with :func:`verify_report` (``qasid usage
verify``), trusting that key rather than whoever handed the file over.

Users are "staff" or "appservice": an appservice user is the sender of a configured application service,
a user in one of its *exclusive* user namespaces, or an account an appservice registered. Non-exclusive
namespaces only express an appservice's interest in users who register themselves (a bridge may watch
``.*``); counting those as appservice users would take real staff off the bill.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from nacl.signing import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64

from homeserver.clock import Clock
from homeserver.errors import MatrixError, invalid_param
from homeserver.events.signing import server_of, sign_json, verify_json_signature

if TYPE_CHECKING:
    from homeserver.storage import Storage

SCHEMA = "qasid.usage.v1"
DAY_MS = 86_400_000
MAX_DAYS = 366
# Visits are read a month at a time, so a year's report never holds a year of rows in memory.
VISIT_CHUNK_DAYS = 31
EPOCH = datetime.date(1970, 1, 1)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

CSV_COLUMNS = (
    "day", "active_users_staff", "active_users_appservice", "active_users_total",
    "new_registrations_staff", "new_registrations_appservice", "new_registrations_total",
    "events_messages", "events_calls", "events_state", "events_other", "events_total",
    "rooms_created", "media_uploaded_count", "media_uploaded_bytes", "federation_events_received",
)


# --- days and periods ------------------------------------------------------------------------------

def day_number(day: datetime.date) -> int:
    return (day - EPOCH).days


def day_of(number: int) -> datetime.date:
    return EPOCH + datetime.timedelta(days=number)


def utc_day(ms: int) -> datetime.date:
    return day_of(ms // DAY_MS)


class PeriodError(MatrixError):
    """A bad ``from``/``to``/``format``: 400 M_INVALID_PARAM naming the parameter (the CLI reports it
    as ``--param: why``)."""

    def __init__(self, param: str, why: str) -> None:
        err = invalid_param(param, why)
        super().__init__(err.status, err.errcode, err.error)
        self.param = param
        self.why = why


def _parse_day(raw: str, param: str) -> datetime.date:
    if not _ISO_DATE.match(raw):
        raise PeriodError(param, f"expected a date YYYY-MM-DD, got {raw!r}")
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise PeriodError(param, f"not a valid date: {raw!r}") from None


def parse_period(raw_from: str | None, raw_to: str | None, today: datetime.date) -> tuple[datetime.date, datetime.date]:
    """The period [from, to] of UTC days a report covers. ``to`` defaults to today and ``from`` to
    the first day of ``to``'s month, so no parameters give the current month so far. A period in the
    future is refused: a signed report must not describe days that have not happened."""
    last = _parse_day(raw_to, "to") if raw_to is not None else today
    first = _parse_day(raw_from, "from") if raw_from is not None else last.replace(day=1)
    if last > today:
        raise PeriodError("to", f"{last.isoformat()} is in the future (today is {today.isoformat()} UTC)")
    if first > last:
        raise PeriodError("from", f"{first.isoformat()} is after to ({last.isoformat()})")
    days = (last - first).days + 1
    if days > MAX_DAYS:
        raise PeriodError("to", f"the period is {days} days; at most {MAX_DAYS}")
    return first, last


# --- the service -----------------------------------------------------------------------------------

def _split() -> dict[str, int]:
    return {"staff": 0, "appservice": 0, "total": 0}


def _add(split: dict[str, int], appservice: bool, n: int = 1) -> None:
    split["appservice" if appservice else "staff"] += n
    split["total"] += n


def _empty_day(day: datetime.date) -> dict[str, Any]:
    return {
        "day": day.isoformat(), "active_users": _split(), "new_registrations": _split(),
        "events_sent": {"messages": 0, "calls": 0, "state": 0, "other": 0, "total": 0},
        "rooms_created": 0, "media_uploaded": {"count": 0, "bytes": 0},
        "federation_events_received": {"total": 0, "by_origin": {}},
    }


class UsageService:
    def __init__(
        self, storage: "Storage", clock: Clock, server_name: str, signing_key: SigningKey,
        appservice_user: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.server_name = server_name
        self.signing_key = signing_key
        # Set by the composition root: whether a configured appservice owns this user exclusively (or
        # is it). Asked at report time, so a report reflects the registrations configured then.
        self.appservice_user = appservice_user
        self._day = -1
        self._seen: set[str] = set()

    async def record_visit(self, user_id: str) -> None:
        """Note that ``user_id`` made an authenticated request today (UTC). Only the first request of
        the day per process reaches the database; other processes' rows are absorbed by the key."""
        day = self.clock.time_ms() // DAY_MS
        if day != self._day:
            self._day, self._seen = day, set()  # yesterday's set is no longer needed
        seen = self._seen
        if user_id in seen:
            return
        await self.storage.usage.record_visit(user_id, day_of(day).isoformat())
        seen.add(user_id)  # only once written: a failed write is retried by the next request

    async def report(self, first: datetime.date, last: datetime.date) -> dict[str, Any]:
        """The signed usage report of the UTC days [first, last] (see the operator guide for each figure)."""
        store = self.storage.usage
        suffix = ":" + self.server_name
        d0, d1 = day_number(first), day_number(last)
        start_ms, end_ms = d0 * DAY_MS, (d1 + 1) * DAY_MS
        daily = {d: _empty_day(day_of(d)) for d in range(d0, d1 + 1)}
        by_as = await store.appservice_registered()
        classified: dict[str, bool] = {}

        def is_appservice(user_id: str) -> bool:
            got = classified.get(user_id)
            if got is None:
                got = classified[user_id] = user_id in by_as or self.appservice_user(user_id)
            return got

        active: dict[str, set[str]] = {"staff": set(), "appservice": set()}
        for chunk in range(d0, d1 + 1, VISIT_CHUNK_DAYS):
            chunk_end = min(chunk + VISIT_CHUNK_DAYS - 1, d1)
            for day, user_id in await store.visits(day_of(chunk).isoformat(), day_of(chunk_end).isoformat()):
                a = is_appservice(user_id)
                _add(daily[day_number(datetime.date.fromisoformat(day))]["active_users"], a)
                active["appservice" if a else "staff"].add(user_id)

        for user_id, d, _ in await store.users_created(start_ms, end_ms):
            _add(daily[d]["new_registrations"], is_appservice(user_id))
        registered = _split()
        for user_id, _ in await store.accounts_before(end_ms):
            _add(registered, is_appservice(user_id))

        for d, kind, n in await store.local_events(start_ms, end_ms, suffix):
            sent = daily[d]["events_sent"]
            sent[kind] += n
            sent["total"] += n
        for d, sender, n in await store.remote_events(start_ms, end_ms, suffix):
            received = daily[d]["federation_events_received"]
            origin = server_of(sender) or sender
            received["by_origin"][origin] = received["by_origin"].get(origin, 0) + n
            received["total"] += n
        for d, n in await store.rooms_created(start_ms, end_ms, suffix):
            daily[d]["rooms_created"] += n
        for d, count, size in await store.media_uploaded(start_ms, end_ms):
            daily[d]["media_uploaded"] = {"count": count, "bytes": size}
        local_bytes, remote_bytes = await store.media_stored(end_ms)

        days = [daily[d] for d in range(d0, d1 + 1)]
        for row in days:
            row["federation_events_received"]["by_origin"] = dict(sorted(row["federation_events_received"]["by_origin"].items()))
        totals = {
            "active_users": {"staff": len(active["staff"]), "appservice": len(active["appservice"]),
                             "total": len(active["staff"]) + len(active["appservice"])},
            "registered_users_at_end": registered,
            "new_registrations": _sum_dicts(r["new_registrations"] for r in days),
            "events_sent": _sum_dicts(r["events_sent"] for r in days),
            "rooms_created": sum(r["rooms_created"] for r in days),
            "media_uploaded": _sum_dicts(r["media_uploaded"] for r in days),
            "media_stored_at_end": {"bytes": local_bytes, "remote_cache_bytes": remote_bytes},
            "federation_events_received": {
                "total": sum(r["federation_events_received"]["total"] for r in days),
                "by_origin": dict(sorted(_sum_dicts(r["federation_events_received"]["by_origin"] for r in days).items())),
            },
        }
        now = self.clock.time_ms()
        body = {
            "schema": SCHEMA, "server_name": self.server_name, "generated_ts": now,
            "period": {"from": first.isoformat(), "to": last.isoformat(), "days": d1 - d0 + 1,
                       "complete": end_ms <= now},
            "totals": totals, "daily": days,
        }
        return sign_json(body, self.server_name, self.signing_key)


def _sum_dicts(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        for k, v in item.items():
            out[k] = out.get(k, 0) + v
    return out


def report_csv(report: Mapping[str, Any]) -> str:
    """The daily rows as CSV, one line per day (with a header). Not signed: the JSON report is the
    document of record; the CSV is for spreadsheets."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in report["daily"]:
        au, nr, ev, mu = r["active_users"], r["new_registrations"], r["events_sent"], r["media_uploaded"]
        w.writerow([r["day"], au["staff"], au["appservice"], au["total"], nr["staff"], nr["appservice"], nr["total"],
                    ev["messages"], ev["calls"], ev["state"], ev["other"], ev["total"], r["rooms_created"],
                    mu["count"], mu["bytes"], r["federation_events_received"]["total"]])
    return buf.getvalue()


# --- offline verification (the billing office) ------------------------------------------------------

class ReportFormatError(Exception):
    """The input is not a usage report or not a key document at all (nothing could be checked)."""


class NotVerified(Exception):
    """The report could not be shown to come unchanged from the server it names."""


@dataclass(frozen=True)
class PublishedKey:
    verify_key: VerifyKey
    expired_ts: int | None = None  # for old_verify_keys: when the server stopped signing with it


def check_report_shape(report: Any) -> dict[str, Any]:
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise ReportFormatError(f"not a usage report (expected schema {SCHEMA!r})")
    if not isinstance(report.get("server_name"), str) or not isinstance(report.get("generated_ts"), int) \
            or not isinstance(report.get("period"), dict):
        raise ReportFormatError("not a usage report (server_name, generated_ts or period missing)")
    return report


def keys_from_document(doc: Any, server_name: str) -> dict[str, PublishedKey]:
    """The keys a server's ``/_matrix/key/v2/server`` response publishes, once the response is shown to
    be signed by its own current key and to be the named server's."""
    if not isinstance(doc, dict) or not isinstance(doc.get("verify_keys"), dict):
        raise ReportFormatError("not a server key document (no verify_keys)")
    if doc.get("server_name") != server_name:
        raise NotVerified(f"the key document is for {doc.get('server_name')!r}, the report is from {server_name!r}")
    current: dict[str, PublishedKey] = {}
    old: dict[str, PublishedKey] = {}
    try:
        for kid, entry in doc["verify_keys"].items():
            current[kid] = PublishedKey(VerifyKey(decode_base64(entry["key"])))
        for kid, entry in (doc.get("old_verify_keys") or {}).items():
            old[kid] = PublishedKey(VerifyKey(decode_base64(entry["key"])), int(entry["expired_ts"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ReportFormatError(f"not a server key document (bad key entry: {e})") from None
    if not any(verify_json_signature(doc, server_name, kid, k.verify_key) for kid, k in current.items()):
        raise NotVerified("the key document is not signed by its own current key")
    return {**old, **current}


def key_from_base64(key_id: str, key_b64: str) -> dict[str, PublishedKey]:
    """A single public key the billing office holds independently (e.g. from the federation directory)."""
    if not key_id.startswith("ed25519:"):
        raise ReportFormatError(f"key ID must look like ed25519:<version>, got {key_id!r}")
    try:
        return {key_id: PublishedKey(VerifyKey(decode_base64(key_b64)))}
    except (ValueError, TypeError) as e:
        raise ReportFormatError(f"not an unpadded-base64 ed25519 public key ({e})") from None


def verify_report(report: Mapping[str, Any], keys: Mapping[str, PublishedKey]) -> str:
    """Return the key ID whose signature verifies the report; raise :class:`NotVerified` otherwise. A
    retired key counts only for reports generated before it was retired."""
    server = report["server_name"]
    sigs = report.get("signatures")
    mine = sigs.get(server) if isinstance(sigs, dict) else None
    if not isinstance(mine, dict) or not mine:
        raise NotVerified(f"the report carries no signature by {server}")
    known = [kid for kid in mine if kid in keys]
    if not known:
        raise NotVerified(f"signed with {', '.join(sorted(mine))}, none of which is among the keys given")
    for kid in known:
        key = keys[kid]
        if key.expired_ts is not None and report["generated_ts"] >= key.expired_ts:
            continue
        if verify_json_signature(report, server, kid, key.verify_key):
            return kid
    retired = [kid for kid in known if keys[kid].expired_ts is not None and report["generated_ts"] >= keys[kid].expired_ts]
    if retired and len(retired) == len(known):
        raise NotVerified(f"signed with {retired[0]}, which the server had retired before the report's generated_ts")
    raise NotVerified("the signature does not match the report's contents (changed after signing, or signed by another key)")
