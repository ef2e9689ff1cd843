"""Pushers: the client-server push module, and delivering notifications to HTTP push gateways.

Which events notify whom is decided when each event is stored (``PushEvaluator.record`` writes
``event_push_actions`` in the event's own transaction). Delivery is separate and never holds up an
event: the creator's after-commit listener only notes the event ID; a dispatcher task finds which of the
notified users have pushers and wakes one worker task per pusher. Each worker sends its user's
notifications past the pusher's ``last_stream_ordering`` in order, one at a time, and moves that mark on
after each, so nothing is lost or replayed across a restart, a slow gateway or a retry. Connection
errors, timeouts, 429 and 5xx are retried with exponential backoff (1 s doubling to 10 min); a
notification that has failed for a day is given up, as Synapse does. A gateway that lists the pushkey as
``rejected`` ends the pusher (spec). Logs carry user and event IDs and the gateway's host, never
message content and never a whole pushkey.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.services.event_creation import NewEvent
from homeserver.services.push import PushEvaluator
from homeserver.storage import Storage
from homeserver.storage.pushers import PendingAction, Pusher

logger = logging.getLogger(__name__)

NOTIFY_PATH = "/_matrix/push/v1/notify"
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 600.0
GIVE_UP_AFTER_MS = 24 * 3600 * 1000
REQUEST_TIMEOUT_S = 30.0
BATCH = 50

PusherKey = tuple[str, str, str]  # (app_id, pushkey, user_id)


@dataclass(frozen=True)
class PusherSettings:
    """A validated POST /pushers/set body (kind not null)."""
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    append: bool


class _Outcome(Enum):
    DELIVERED = "delivered"
    SKIPPED = "skipped"  # nothing to send (event gone, redacted or already read) or refused for good (4xx)
    RETRY = "retry"
    REJECTED = "rejected"


def short_pushkey(pushkey: str) -> str:
    """Enough of a pushkey to tell pushers apart in a log, not enough to use it."""
    return pushkey[:6] + "…" if len(pushkey) > 6 else "…"


def pusher_json(p: Pusher) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pushkey": p.pushkey, "kind": p.kind, "app_id": p.app_id, "app_display_name": p.app_display_name,
        "device_display_name": p.device_display_name, "lang": p.lang, "data": p.data,
    }
    if p.profile_tag is not None:
        out["profile_tag"] = p.profile_tag
    return out


def tweaks_for(actions: list[Any]) -> dict[str, Any]:
    """The set_tweak actions as a dict (a tweak without a value, i.e. highlight, is true)."""
    tweaks: dict[str, Any] = {}
    for a in actions:
        if isinstance(a, dict) and isinstance(a.get("set_tweak"), str):
            tweaks[a["set_tweak"]] = a.get("value", True)
    return tweaks


def priority_for(event_type: str, tweaks: dict[str, Any]) -> str:
    """high for what rings or highlights (and calls), and for encrypted events, whose rules could not
    see their content (as Synapse); low for the rest, so gateways may batch them."""
    if event_type in ("m.call.invite", "m.room.encrypted") or tweaks.get("sound") or tweaks.get("highlight"):
        return "high"
    return "low"


def gateway_allowed(url: str, allowlist: list[str]) -> bool:
    """Whether ``url``'s host (and port, where an entry names one) is on the operator's allowlist.

    Clients pick the gateway, so without this any user could have the server post message metadata
    to any host it can reach, outside the country or inside the ministry's own network."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower().rstrip("."), parts.port
    except ValueError:
        return False
    if not host:
        return False
    for entry in allowlist:
        pattern = entry.strip().lower()
        port_text = ""
        if pattern.startswith("["):  # an IPv6 literal: [addr] or [addr]:port
            pattern, _, rest = pattern[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else rest
        elif pattern.count(":") == 1:  # host:port
            pattern, _, port_text = pattern.partition(":")
        if port_text and not port_text.isdigit():
            continue
        want_port = int(port_text) if port_text else None
        pattern = pattern.rstrip(".")
        if want_port is not None and port != want_port:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


class PusherService:
    def __init__(self, storage: Storage, push: PushEvaluator, clock: Clock, config: Config) -> None:
        self.storage = storage
        self.push = push
        self.clock = clock
        self.include_content = config.push.include_content
        self.gateway_allowlist = list(config.push.gateway_allowlist)
        self._workers: dict[PusherKey, asyncio.Task[None]] = {}
        self._again: set[PusherKey] = set()
        self._intake: list[str] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # --- the client API -------------------------------------------------------------------------

    async def list(self, user_id: str) -> list[dict[str, Any]]:
        return [pusher_json(p) for p in await self.storage.pushers.for_user(user_id)]

    async def set(self, user_id: str, device_id: str | None, s: PusherSettings) -> None:
        removed = await self.storage.pushers.set(
            user_id=user_id, device_id=device_id, app_id=s.app_id, pushkey=s.pushkey, kind=s.kind,
            app_display_name=s.app_display_name, device_display_name=s.device_display_name, profile_tag=s.profile_tag,
            lang=s.lang, data=s.data, now=self.clock.time_ms(), append=s.append,
        )
        for key in removed + [(s.app_id, s.pushkey, user_id)]:
            self._stop(key)  # a replaced pusher starts afresh; a removed one stops
        logger.info("pusher set for %s (app %s, key %s)", user_id, s.app_id, short_pushkey(s.pushkey))

    async def delete(self, user_id: str, app_id: str, pushkey: str) -> None:
        if await self.storage.pushers.delete(app_id, pushkey, user_id):
            self._stop((app_id, pushkey, user_id))
            logger.info("pusher deleted for %s (app %s, key %s)", user_id, app_id, short_pushkey(pushkey))

    # --- waking pushers -------------------------------------------------------------------------

    async def on_event(self, new: NewEvent) -> None:
        """After-commit listener: note the event and return at once; the dispatcher does the rest."""
        if self._closed:
            return
        self._intake.append(new.event_id)
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch())

    async def resume(self) -> None:
        """At start-up: every pusher catches up on what it had not delivered before the last stop."""
        for p in await self.storage.pushers.all():
            self._poke(p.key)

    async def _dispatch(self) -> None:
        try:
            while self._intake and not self._closed:
                batch, self._intake = self._intake, []
                try:
                    users = await self.storage.pushers.users_notified(batch)
                    for user_id in users:
                        for p in await self.storage.pushers.for_user(user_id):
                            self._poke(p.key)
                except Exception:  # the pushers catch up at their next wake-up or restart
                    logger.exception("finding pushers for %d events failed", len(batch))
        finally:
            self._dispatcher = None

    def _poke(self, key: PusherKey) -> None:
        if self._closed:
            return
        if key in self._workers:
            self._again.add(key)
            return
        self._workers[key] = asyncio.create_task(self._run(key))

    def _stop(self, key: PusherKey) -> None:
        task = self._workers.pop(key, None)
        self._again.discard(key)
        if task is not None:
            task.cancel()

    # --- delivery -------------------------------------------------------------------------------

    async def _run(self, key: PusherKey) -> None:
        backoff = INITIAL_BACKOFF_S
        try:
            while not self._closed:
                self._again.discard(key)
                pusher = await self.storage.pushers.get(*key)
                if pusher is None:
                    return
                pending = await self.storage.pushers.pending_actions(pusher.user_id, pusher.last_stream_ordering, BATCH)
                if not pending:
                    if key in self._again:
                        continue
                    return
                for action in pending:
                    outcome = await self._attempt(pusher, action)
                    now = self.clock.time_ms()
                    if outcome is _Outcome.REJECTED:
                        await self.storage.pushers.delete(*key)
                        logger.info("push gateway rejected the pushkey of %s (app %s, key %s): pusher removed",
                                    pusher.user_id, pusher.app_id, short_pushkey(pusher.pushkey))
                        return
                    if outcome is _Outcome.RETRY:
                        failing_since = pusher.failing_since_ts or now
                        if now - failing_since < GIVE_UP_AFTER_MS:
                            await self.storage.pushers.mark_failing(key, now)
                            await asyncio.sleep(backoff)
                            backoff = min(backoff * 2, MAX_BACKOFF_S)
                            break  # read the pusher again (it may have been removed or replaced)
                        logger.warning("giving up on pushing %s to %s after a day of failures",
                                       action.event_id, pusher.user_id)
                    backoff = INITIAL_BACKOFF_S
                    await self.storage.pushers.advance(key, action.stream_ordering, now,
                                                       delivered=outcome is _Outcome.DELIVERED)
                    pusher = await self.storage.pushers.get(*key)
                    if pusher is None:
                        return
        except asyncio.CancelledError:
            raise
        except Exception:  # a later event or the next start wakes it again
            logger.exception("pusher for %s stopped", key[2])
        finally:
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]

    async def _attempt(self, pusher: Pusher, action: PendingAction) -> _Outcome:
        if pusher.kind != "http":
            return _Outcome.SKIPPED
        event = await self.storage.events.get_event(action.event_id)
        if event is None or event.redacted_by is not None:
            return _Outcome.SKIPPED
        if action.stream_ordering <= await self.push.read_position(pusher.user_id, action.room_id):
            return _Outcome.SKIPPED  # read meanwhile (e.g. on another device while the gateway was down)
        body = await self.notification(pusher, action, event.pdu)
        return await self._post(pusher, action.event_id, body)

    async def notification(self, pusher: Pusher, action: PendingAction, pdu: dict[str, Any]) -> dict[str, Any]:
        """The /_matrix/push/v1/notify body for one event and one pusher (push gateway spec)."""
        tweaks = tweaks_for(action.actions)
        device: dict[str, Any] = {
            "app_id": pusher.app_id, "pushkey": pusher.pushkey, "pushkey_ts": pusher.pushkey_ts // 1000,
            "data": {k: v for k, v in pusher.data.items() if k != "url"}, "tweaks": tweaks,
        }
        # Always sent, zero included, as Synapse does: it is how a gateway learns to clear a badge.
        counts = {"unread": await self._badge(pusher.user_id)}
        n: dict[str, Any] = {
            "event_id": action.event_id, "room_id": action.room_id, "prio": priority_for(pdu.get("type", ""), tweaks),
            "counts": counts, "devices": [device],
        }
        if pusher.data.get("format") == "event_id_only":
            return {"notification": n}
        sender = pdu.get("sender", "")
        n["type"] = pdu.get("type")
        n["sender"] = sender
        state = await self.storage.events.current_state_pdus(
            action.room_id, [("m.room.name", ""), ("m.room.canonical_alias", ""), ("m.room.member", sender)]
        )
        display = state.get(("m.room.member", sender), {}).get("content", {}).get("displayname")
        if isinstance(display, str) and display:
            n["sender_display_name"] = display
        name = state.get(("m.room.name", ""), {}).get("content", {}).get("name")
        if isinstance(name, str) and name:
            n["room_name"] = name
        alias = state.get(("m.room.canonical_alias", ""), {}).get("content", {}).get("alias")
        if isinstance(alias, str) and alias:
            n["room_alias"] = alias
        if pdu.get("type") == "m.room.member" and isinstance(pdu.get("state_key"), str):
            n["user_is_target"] = pdu["state_key"] == pusher.user_id
        content = pdu.get("content")
        if self.include_content and isinstance(content, dict) and content:
            n["content"] = content
        return {"notification": n}

    async def _badge(self, user_id: str) -> int:
        """Unread notifications across the rooms the user is joined to."""
        joined = await self.storage.events.rooms_for_user(user_id)
        total = 0
        for room_id in await self.storage.pushers.rooms_with_notifications(user_id):
            if room_id in joined:
                total += int((await self.push.unread_counts(user_id, room_id))["notification_count"])
        return total

    async def _post(self, pusher: Pusher, event_id: str, body: dict[str, Any]) -> _Outcome:
        url = pusher.data.get("url")
        if not isinstance(url, str):
            return _Outcome.SKIPPED
        host = urlsplit(url).netloc
        if not gateway_allowed(url, self.gateway_allowlist):  # the allowlist changed since the pusher was set
            logger.warning("push gateway %s is not on push.gateway_allowlist; not sending %s", host, event_id)
            return _Outcome.SKIPPED
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        try:
            async with self._session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"},
                                          allow_redirects=False) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            logger.warning("push gateway %s unreachable for %s (%s); will retry", host, event_id, type(e).__name__)
            return _Outcome.RETRY
        if status == 429 or status >= 500:
            logger.warning("push gateway %s answered %d for %s; will retry", host, status, event_id)
            return _Outcome.RETRY
        if not 200 <= status < 300:
            logger.warning("push gateway %s refused %s with %d; not retrying this notification", host, event_id, status)
            return _Outcome.SKIPPED
        try:
            answer = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            answer = {}
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if isinstance(rejected, list) and pusher.pushkey in rejected:
            return _Outcome.REJECTED
        return _Outcome.DELIVERED

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._workers.values()) + ([self._dispatcher] if self._dispatcher is not None else [])
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._workers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
