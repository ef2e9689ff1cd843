"""Push rules: the spec's server-default rules, users' own rules, and evaluating them for an event.

Ordering follows the spec: ``.m.rule.master`` above everything; within each kind, user rules before
the server-default ones; kinds in the order override, content, room, sender, underride.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from typing import Any, Mapping

from homeserver.errors import MatrixError
from homeserver.services.notifier import Notifier
from homeserver.storage import Storage

KINDS = ("override", "content", "room", "sender", "underride")
_NOTIFY_SOUND = ["notify", {"set_tweak": "sound", "value": "default"}]


def default_rules(user_id: str) -> dict[str, list[dict[str, Any]]]:
    def rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any], enabled: bool = True) -> dict[str, Any]:
        return {"rule_id": rule_id, "default": True, "enabled": enabled, "conditions": conditions, "actions": actions}

    def match(key: str, pattern: str) -> dict[str, Any]:
        return {"kind": "event_match", "key": key, "pattern": pattern}

    override = [
        rule(".m.rule.master", [], [], enabled=False),
        rule(".m.rule.suppress_notices", [match("content.msgtype", "m.notice")], []),
        rule(".m.rule.invite_for_me", [match("type", "m.room.member"), match("content.membership", "invite"),
                                       match("state_key", user_id)], list(_NOTIFY_SOUND)),
        rule(".m.rule.member_event", [match("type", "m.room.member")], []),
        rule(".m.rule.is_user_mention", [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids",
                                          "value": user_id}], [*_NOTIFY_SOUND, {"set_tweak": "highlight"}]),
        rule(".m.rule.is_room_mention", [{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                                         {"kind": "sender_notification_permission", "key": "room"}],
             ["notify", {"set_tweak": "highlight"}]),
        rule(".m.rule.tombstone", [match("type", "m.room.tombstone"), match("state_key", "")],
             ["notify", {"set_tweak": "highlight"}]),
        rule(".m.rule.reaction", [match("type", "m.reaction")], []),
        rule(".m.rule.room.server_acl", [match("type", "m.room.server_acl"), match("state_key", "")], []),
        rule(".m.rule.suppress_edits", [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type",
                                         "value": "m.replace"}], []),
    ]
    underride = [
        rule(".m.rule.call", [match("type", "m.call.invite")], ["notify", {"set_tweak": "sound", "value": "ring"}]),
        rule(".m.rule.encrypted_room_one_to_one", [{"kind": "room_member_count", "is": "2"},
                                                   match("type", "m.room.encrypted")], list(_NOTIFY_SOUND)),
        rule(".m.rule.room_one_to_one", [{"kind": "room_member_count", "is": "2"}, match("type", "m.room.message")],
             list(_NOTIFY_SOUND)),
        rule(".m.rule.message", [match("type", "m.room.message")], ["notify"]),
        rule(".m.rule.encrypted", [match("type", "m.room.encrypted")], ["notify"]),
    ]
    return {"override": override, "content": [], "room": [], "sender": [], "underride": underride}


def _clean_actions(actions: Any) -> list[Any]:
    """Validate actions; historical dont_notify/coalesce are stripped, as the spec requires."""
    if not isinstance(actions, list):
        raise MatrixError(400, "M_BAD_JSON", "actions must be a list")
    out = []
    for a in actions:
        if a in ("dont_notify", "coalesce"):
            continue
        if a == "notify":
            out.append(a)
        elif isinstance(a, dict) and isinstance(a.get("set_tweak"), str):
            out.append(a)
        else:
            raise MatrixError(400, "M_UNKNOWN", f"Unrecognised action {a!r}")
    return out


class PushRuleService:
    def __init__(self, storage: Storage, notifier: Notifier) -> None:
        self.storage = storage
        self.notifier = notifier
        # Rulesets are read for every recipient of every event: keep them, drop one when it changes.
        self._cache: dict[str, dict[str, list[dict[str, Any]]]] = {}
        # Users (among the cached) who never changed a rule: their rules are the defaults.
        self._default_users: set[str] = set()

    async def ruleset(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """The user's rules, theirs to change (a copy)."""
        return copy.deepcopy(await self.shared_ruleset(user_id))

    async def shared_ruleset(self, user_id: str) -> Mapping[str, list[dict[str, Any]]]:
        """The cached rules themselves, for evaluation on every event: callers must not modify them."""
        cached = self._cache.get(user_id)
        if cached is None:
            cached, untouched = await self._load(user_id)
            if len(self._cache) > 50_000:
                self._cache.clear()
                self._default_users.clear()
            self._cache[user_id] = cached
            if untouched:
                self._default_users.add(user_id)
        return cached

    def has_default_rules(self, user_id: str) -> bool:
        """Whether the user's cached rules are exactly the server defaults (ask after shared_ruleset)."""
        return user_id in self._default_users

    async def _load(self, user_id: str) -> tuple[dict[str, list[dict[str, Any]]], bool]:
        """The user's rules, and whether they are the untouched defaults."""
        defaults = default_rules(user_id)
        stored = await self.storage.push_rules.rules_for(user_id)
        settings = {(s.kind, s.rule_id): s for s in stored if s.rule is None}
        user_rules: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for s in stored:
            if s.rule is not None:
                user_rules[s.kind].append({**s.rule, "rule_id": s.rule_id, "default": False, "enabled": s.enabled})
        out: dict[str, list[dict[str, Any]]] = {}
        for kind in KINDS:
            merged_defaults = []
            for d in defaults[kind]:
                s = settings.get((kind, d["rule_id"]))
                if s is not None:
                    d = {**d, "enabled": s.enabled, **({"actions": s.actions} if s.actions is not None else {})}
                merged_defaults.append(d)
            if kind == "override":
                master, rest = merged_defaults[:1], merged_defaults[1:]
                out[kind] = master + user_rules[kind] + rest
            else:
                out[kind] = user_rules[kind] + merged_defaults
        return out, not stored

    async def find(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown push rule kind {kind}")
        for r in (await self.ruleset(user_id))[kind]:
            if r["rule_id"] == rule_id:
                return r
        raise MatrixError(404, "M_NOT_FOUND", "Unknown push rule")

    async def put(self, user_id: str, kind: str, rule_id: str, body: dict[str, Any], before: str | None, after: str | None) -> None:
        if kind not in KINDS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown push rule kind {kind}")
        if rule_id.startswith("."):
            raise MatrixError(400, "M_INVALID_PARAM", "Rule IDs starting with '.' are reserved for server-default rules")
        if not rule_id or "/" in rule_id or "\\" in rule_id:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid rule ID")
        for anchor in (before, after):
            if anchor is not None and anchor.startswith("."):
                raise MatrixError(400, "M_INVALID_PARAM", "Cannot position a rule relative to a server-default rule")
        rule: dict[str, Any] = {"actions": _clean_actions(body.get("actions"))}
        if kind in ("override", "underride"):
            conditions = body.get("conditions", [])
            if not isinstance(conditions, list) or not all(isinstance(c, dict) and isinstance(c.get("kind"), str) for c in conditions):
                raise MatrixError(400, "M_BAD_JSON", "conditions must be a list of objects with a kind")
            rule["conditions"] = conditions
        elif kind == "content":
            if not isinstance(body.get("pattern"), str):
                raise MatrixError(400, "M_MISSING_PARAM", "Content rules need a pattern")
            rule["pattern"] = body["pattern"]
        elif kind == "room":
            if not rule_id.startswith("!"):
                raise MatrixError(400, "M_INVALID_PARAM", "Room rules are named by a room ID")
        elif kind == "sender" and not rule_id.startswith("@"):
            raise MatrixError(400, "M_INVALID_PARAM", "Sender rules are named by a user ID")
        if not await self.storage.push_rules.insert_user_rule(user_id, kind, rule_id, rule, before=before, after=after):
            raise MatrixError(404, "M_NOT_FOUND", "The rule named by before/after does not exist")
        await self._changed(user_id)

    async def delete(self, user_id: str, kind: str, rule_id: str) -> None:
        await self.find(user_id, kind, rule_id)
        if rule_id.startswith("."):
            raise MatrixError(400, "M_INVALID_PARAM", "Server-default rules cannot be deleted")
        await self.storage.push_rules.delete_user_rule(user_id, kind, rule_id)
        await self._changed(user_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: Any) -> None:
        await self.find(user_id, kind, rule_id)
        if not isinstance(enabled, bool):
            raise MatrixError(400, "M_BAD_JSON", "enabled must be a boolean")
        await self.storage.push_rules.set_flags(user_id, kind, rule_id, enabled=enabled, is_default=rule_id.startswith("."))
        await self._changed(user_id)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        await self.find(user_id, kind, rule_id)
        await self.storage.push_rules.set_flags(user_id, kind, rule_id, actions=_clean_actions(actions),
                                                is_default=rule_id.startswith("."))
        await self._changed(user_id)

    async def _changed(self, user_id: str) -> None:
        self._cache.pop(user_id, None)
        self._default_users.discard(user_id)
        # Clients learn of changes through m.push_rules account data in /sync.
        await self.storage.user_data.put_account_data(user_id, "", "m.push_rules", {"global": await self.ruleset(user_id)})
        self.notifier.notify(users=[user_id])


# --- evaluation ---------------------------------------------------------------------------------


@dataclass
class EvalContext:
    member_count: int
    sender_power: int
    notification_levels: Mapping[str, int]
    display_name: str | None = None


@functools.lru_cache(maxsize=4096)
def _key_parts(key: str) -> tuple[str, ...]:
    return tuple(part.replace("\\.", ".").replace("\\\\", "\\") for part in re.split(r"(?<!\\)\.", key))


def _path(event: Mapping[str, Any], key: str) -> Any:
    value: Any = event
    for part in _key_parts(key):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, *, words: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if words:
        return re.compile(rf"(?:^|[^\w])({body})(?:[^\w]|$)", re.IGNORECASE | re.DOTALL)
    return re.compile(rf"^{body}$", re.IGNORECASE | re.DOTALL)


def _member_count_ok(spec: str, count: int) -> bool:
    m = re.fullmatch(r"(==|<=|>=|<|>)?(\d+)", spec or "")
    if not m:
        return False
    op, n = m.group(1) or "==", int(m.group(2))
    return {"==": count == n, "<": count < n, ">": count > n, "<=": count <= n, ">=": count >= n}[op]


def condition_matches(cond: Mapping[str, Any], event: Mapping[str, Any], ctx: EvalContext) -> bool:
    kind = cond.get("kind")
    if kind == "event_match":
        value = _path(event, str(cond.get("key", "")))
        pattern = cond.get("pattern")
        if not isinstance(value, str) or not isinstance(pattern, str):
            return False
        return bool(_glob(pattern, words=cond.get("key") == "content.body").search(value))
    if kind == "event_property_is":
        value = _path(event, str(cond.get("key", "")))
        return value is not _MISSING and type(value) is type(cond.get("value")) and value == cond.get("value")
    if kind == "event_property_contains":
        value = _path(event, str(cond.get("key", "")))
        return isinstance(value, list) and any(type(v) is type(cond.get("value")) and v == cond.get("value") for v in value)
    if kind == "room_member_count":
        return _member_count_ok(str(cond.get("is", "")), ctx.member_count)
    if kind == "sender_notification_permission":
        needed = ctx.notification_levels.get(str(cond.get("key")), 50)
        return ctx.sender_power >= needed
    if kind == "contains_display_name":
        body = _path(event, "content.body")
        return bool(ctx.display_name) and isinstance(body, str) and bool(_glob(ctx.display_name, words=True).search(body))
    return False  # unknown conditions never match


# Conditions whose outcome depends only on the event and the room, not on the recipient: their results
# are shared between all recipients of one event (see ``evaluate``'s ``memo``).
# Server-default rules whose conditions name the recipient; every other default rule has the same
# conditions for everyone, so its outcome for one event is computed once.
# Of the server-default rules, the only ones whose outcome depends on who the recipient is.
USER_SPECIFIC_DEFAULTS = frozenset({".m.rule.invite_for_me", ".m.rule.is_user_mention"})
_RECIPIENT_DEFAULTS = frozenset({".m.rule.is_user_mention", ".m.rule.invite_for_me", ".m.rule.contains_display_name",
                                 ".m.rule.contains_user_name", ".m.rule.roomnotif"})
_SHAREABLE = ("event_match", "event_property_is", "event_property_contains", "room_member_count",
              "sender_notification_permission")


def _condition_cached(cond: Mapping[str, Any], event: Mapping[str, Any], ctx: EvalContext, memo: dict[Any, bool] | None) -> bool:
    kind = cond.get("kind")
    if memo is None or kind not in _SHAREABLE:
        return condition_matches(cond, event, ctx)
    value = cond.get("value")
    key = (kind, cond.get("key"), cond.get("pattern"), cond.get("is"), type(value).__name__,
           value if isinstance(value, (str, int, float, bool, type(None))) else repr(value))
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = condition_matches(cond, event, ctx)
    return hit


def evaluate(
    ruleset: Mapping[str, list[dict[str, Any]]], event: Mapping[str, Any], ctx: EvalContext,
    memo: dict[Any, bool] | None = None, skip: frozenset[str] = frozenset(),
) -> list[Any]:
    """The actions of the first enabled rule that matches, or [] (no notification).

    ``memo``, one dict per event shared across its recipients, keeps the results of conditions that
    do not depend on the recipient, so a room of many members costs little more than one evaluation.
    """
    for kind in KINDS:
        for rule in ruleset.get(kind, []):
            if not rule.get("enabled", True):
                continue
            rid = rule.get("rule_id", "")
            if rid in skip:
                continue
            if kind == "room":
                hit = event.get("room_id") == rid
            elif kind == "sender":
                hit = event.get("sender") == rid
            elif kind == "content":
                body = _path(event, "content.body")
                hit = isinstance(body, str) and bool(_glob(str(rule.get("pattern", "")), words=True).search(body))
            elif memo is not None and rule.get("default") and rid not in _RECIPIENT_DEFAULTS:
                hit = memo.get(rid)  # type: ignore[assignment]
                if hit is None:
                    hit = memo[rid] = all(_condition_cached(c, event, ctx, memo) for c in rule.get("conditions", []))
            else:
                hit = all(_condition_cached(c, event, ctx, memo) for c in rule.get("conditions", []))
            if hit:
                # Shared with the cached ruleset: callers store or serialise actions, never change them.
                return rule.get("actions", [])
    return []


def notifies(actions: list[Any]) -> tuple[bool, bool]:
    """(notify, highlight) for a list of actions."""
    notify = "notify" in actions
    highlight = any(isinstance(a, dict) and a.get("set_tweak") == "highlight" and a.get("value", True) for a in actions)
    return notify, notify and highlight
