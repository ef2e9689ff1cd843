"""Server-side key backup (the spec's "Server-side key backups"): clients store their Megolm session
keys encrypted to a backup key only they hold; the server keeps, per session, the better copy."""

from __future__ import annotations

from typing import Any, Mapping

from homeserver.errors import MatrixError
from homeserver.storage import Storage
from homeserver.storage.key_backup import BackedUpKey, BackupVersion

ALGORITHMS = ("m.megolm_backup.v1.curve25519-aes-sha2",)


def _not_found(what: str = "Unknown backup version") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", what)


def parse_version(raw: str | None) -> int:
    """Versions are opaque strings to clients; ours are decimal numbers, and anything else is unknown."""
    if raw is None:
        raise MatrixError(400, "M_MISSING_PARAM", "version is required")
    if not raw.isdigit() or len(raw) > 18:
        raise _not_found()
    return int(raw)


def _better(new: BackedUpKey, old: BackedUpKey) -> bool:
    """The spec's order: a verified key wins, then the lower first index, then fewer forwards."""
    if new.is_verified != old.is_verified:
        return new.is_verified
    if new.first_message_index != old.first_message_index:
        return new.first_message_index < old.first_message_index
    return new.forwarded_count < old.forwarded_count


def _parse_key(room_id: str, session_id: str, body: Any) -> BackedUpKey:
    where = f"rooms.{room_id}.sessions.{session_id}"
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", f"{where} must be an object")
    fmi, fwd, verified, data = (body.get(k) for k in ("first_message_index", "forwarded_count", "is_verified", "session_data"))
    for name, value in (("first_message_index", fmi), ("forwarded_count", fwd)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MatrixError(400, "M_BAD_JSON", f"{where}.{name} must be a non-negative integer")
    if not isinstance(verified, bool):
        raise MatrixError(400, "M_BAD_JSON", f"{where}.is_verified must be a boolean")
    if not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", f"{where}.session_data must be an object")
    return BackedUpKey(room_id, session_id, fmi, fwd, verified, data)


class KeyBackupService:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def _check_version_body(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
        if not isinstance(algorithm, str):
            raise MatrixError(400, "M_BAD_JSON", "algorithm must be a string")
        if algorithm not in ALGORITHMS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unsupported backup algorithm {algorithm!r}")
        if not isinstance(auth_data, dict):
            raise MatrixError(400, "M_BAD_JSON", "auth_data must be an object")
        if not isinstance(auth_data.get("public_key"), str):
            raise MatrixError(400, "M_INVALID_PARAM", "auth_data.public_key must be a string")
        return algorithm, auth_data

    async def create_version(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        algorithm, auth_data = self._check_version_body(body)
        return {"version": str(await self.storage.key_backup.create_version(user_id, algorithm, auth_data))}

    async def _require(self, user_id: str, version: int | None) -> BackupVersion:
        found = await self.storage.key_backup.get_version(user_id, version)
        if found is None:
            raise _not_found("No current backup version" if version is None else "Unknown backup version")
        return found

    async def get_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        v = await self._require(user_id, parse_version(version) if version is not None else None)
        return {"algorithm": v.algorithm, "auth_data": v.auth_data, "version": str(v.version),
                "etag": str(v.etag), "count": await self.storage.key_backup.count(user_id, v.version)}

    async def update_version(self, user_id: str, version: str, body: Mapping[str, Any]) -> None:
        v = await self._require(user_id, parse_version(version))
        algorithm, auth_data = self._check_version_body(body)
        if "version" in body and body["version"] != version:
            raise MatrixError(400, "M_INVALID_PARAM", "The version in the body does not match the path")
        if algorithm != v.algorithm:
            raise MatrixError(400, "M_INVALID_PARAM", "The algorithm of a backup cannot change")
        await self.storage.key_backup.update_auth_data(user_id, v.version, auth_data)

    async def delete_version(self, user_id: str, version: str) -> None:
        if not await self.storage.key_backup.delete_version(user_id, parse_version(version)):
            raise _not_found()

    async def put_keys(self, user_id: str, version: str | None, rooms: Mapping[str, Any]) -> dict[str, Any]:
        """Store keys; only into the current backup (403 M_WRONG_ROOM_KEYS_VERSION otherwise)."""
        wanted = parse_version(version)
        current = await self.storage.key_backup.get_version(user_id)
        if current is None:
            raise _not_found()
        if current.version != wanted:
            raise MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version",
                              current_version=str(current.version))
        parsed: dict[str, list[BackedUpKey]] = {}
        for room_id, room in rooms.items():
            sessions = room.get("sessions") if isinstance(room, dict) else None
            if not isinstance(sessions, dict):
                raise MatrixError(400, "M_BAD_JSON", f"rooms.{room_id}.sessions must be an object")
            parsed[room_id] = [_parse_key(room_id, sid, data) for sid, data in sessions.items()]
        changed = False
        async with self.storage.db.transaction() as conn:
            for room_id, keys in parsed.items():
                existing = await self.storage.key_backup.existing_keys(conn, user_id, current.version, room_id)
                for key in keys:
                    old = existing.get(key.session_id)
                    if old is None or _better(key, old):
                        await self.storage.key_backup.put_key(conn, user_id, current.version, key)
                        changed = True
            etag = await self.storage.key_backup.bump_etag(conn, user_id, current.version) if changed else current.etag
        return {"etag": str(etag), "count": await self.storage.key_backup.count(user_id, current.version)}

    async def get_keys(self, user_id: str, version: str | None, room_id: str | None = None,
                       session_id: str | None = None) -> dict[str, Any]:
        v = await self._require(user_id, parse_version(version))
        keys = await self.storage.key_backup.get_keys(user_id, v.version, room_id, session_id)
        if session_id is not None:
            if not keys:
                raise _not_found("No room_keys found")
            return keys[0].as_json()
        if room_id is not None:
            return {"sessions": {k.session_id: k.as_json() for k in keys}}
        rooms: dict[str, Any] = {}
        for k in keys:
            rooms.setdefault(k.room_id, {"sessions": {}})["sessions"][k.session_id] = k.as_json()
        return {"rooms": rooms}

    async def delete_keys(self, user_id: str, version: str | None, room_id: str | None = None,
                          session_id: str | None = None) -> dict[str, Any]:
        v = await self._require(user_id, parse_version(version))
        async with self.storage.db.transaction() as conn:
            deleted = await self.storage.key_backup.delete_keys(conn, user_id, v.version, room_id, session_id)
            etag = await self.storage.key_backup.bump_etag(conn, user_id, v.version) if deleted else v.etag
        return {"etag": str(etag), "count": await self.storage.key_backup.count(user_id, v.version)}
