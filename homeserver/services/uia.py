"""User-interactive authentication (the spec's UIA): the 401 dance for /register and sensitive actions.

A session is bound to the method and URI that started it: a session opened for deleting a device cannot
be spent on deactivating the account. Stage results are persisted, so restarts don't break a flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from homeserver.clock import Clock
from homeserver.errors import MatrixError
from homeserver.services.tokens import random_string
from homeserver.storage import Storage
from homeserver.storage.uia import UiaSession

SESSION_LIFETIME_MS = 24 * 3600 * 1000
# Never persisted: the clientdict is kept so later steps may omit the body, but not its secrets.
_SECRET_KEYS = ("auth", "password", "new_password")

# A stage checker gets the ``auth`` dict and the session and returns what the stage proved (e.g. a
# user ID), or raises MatrixError which is reported inside the 401 body.
StageChecker = Callable[[dict[str, Any], UiaSession], Awaitable[Any]]


@dataclass
class UiaResult:
    completed: dict[str, Any]
    session: UiaSession
    clientdict: dict[str, Any] = field(default_factory=dict)


class UiaService:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock

    async def authenticate(
        self, *, method: str, uri: str, body: dict[str, Any], flows: list[list[str]],
        checkers: dict[str, StageChecker], params: dict[str, Any] | None = None,
    ) -> UiaResult:
        """Return once a whole flow is complete; otherwise raise the spec's 401 with what remains."""
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, "M_BAD_JSON", "auth must be an object")
        session: UiaSession | None = None
        if auth and auth.get("session") is not None:
            session = await self.storage.uia.get(str(auth["session"]))
            if session is None or session.created_ts + SESSION_LIFETIME_MS < self.clock.time_ms():
                raise MatrixError(400, "M_UNKNOWN", "Unknown or expired UIA session")
            if session.method != method or session.uri != uri:
                raise MatrixError(403, "M_FORBIDDEN", "Requested operation has changed during the UI authentication session.")
        if session is None:
            session_id = random_string(24)
            clientdict = {k: v for k, v in body.items() if k not in _SECRET_KEYS}
            await self.storage.uia.create(session_id, self.clock.time_ms(), method, uri, clientdict)
            session = await self.storage.uia.get(session_id)
            assert session is not None

        error: MatrixError | None = None
        if auth:
            stage = auth.get("type")
            if not isinstance(stage, str) or not any(stage in f for f in flows) or stage not in checkers:
                error = MatrixError(400, "M_UNRECOGNIZED", f"Unrecognised login type: {stage!r}")
            else:
                try:
                    result = await checkers[stage](auth, session)
                except MatrixError as e:
                    error = e
                else:
                    await self.storage.uia.mark_completed(session.session_id, stage, result)
                    session = await self.storage.uia.get(session.session_id)
                    assert session is not None

        for flow in flows:
            if all(stage in session.completed for stage in flow):
                merged = {**session.clientdict, **{k: v for k, v in body.items() if k != "auth"}}
                return UiaResult(completed=dict(session.completed), session=session, clientdict=merged)

        body_401: dict[str, Any] = {
            "flows": [{"stages": f} for f in flows],
            "params": params or {},
            "session": session.session_id,
        }
        if session.completed:
            body_401["completed"] = list(session.completed)
        if error is not None:
            if error.status not in (401, 403) or error.errcode == "M_UNRECOGNIZED":
                raise error
            body_401["errcode"] = error.errcode
            body_401["error"] = error.error
        raise UiaRequired(body_401)

    async def finish(self, session: UiaSession) -> None:
        """Spend the session: a completed UIA authorises exactly one operation."""
        await self.storage.uia.delete(session.session_id)

    async def expire(self) -> list[dict[str, Any]]:
        return await self.storage.uia.delete_older_than(self.clock.time_ms() - SESSION_LIFETIME_MS)


class UiaRequired(MatrixError):
    """The 401 whose body is the UIA state rather than a plain error."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(401, body.get("errcode", "M_UNAUTHORIZED"), body.get("error", "Additional authentication is required"))
        self.body = body

    def to_json(self) -> dict[str, Any]:
        return self.body
