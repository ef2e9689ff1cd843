"""The same storage suite on SQLite and PostgreSQL: migrations, transactions, stores."""

from __future__ import annotations

import asyncio

import pytest

from homeserver.storage import Storage
from homeserver.storage.database import connect
from homeserver.storage.migrations import SchemaTooNew, code_schema_version, current_version, migrate
from homeserver.storage.users import UserListQuery


@pytest.fixture
async def storage(db_url: str):
    s = await Storage.open(db_url)
    yield s
    await s.close()


async def test_migrations_reach_code_version_and_are_idempotent(db_url: str) -> None:
    db = await connect(db_url)
    try:
        assert await current_version(db) == 0
        v = await migrate(db)
        assert v == code_schema_version(db.engine) >= 1
        assert await current_version(db) == v
        assert await migrate(db) == v  # a second start changes nothing
        assert await db.table_exists("users") and not await db.table_exists("no_such_table")
    finally:
        await db.close()


async def test_newer_database_refused(db_url: str) -> None:
    s = await Storage.open(db_url)
    await s.db.execute("UPDATE schema_version SET version = version + 1")
    await s.close()
    with pytest.raises(SchemaTooNew):
        await Storage.open(db_url)


async def test_transaction_rolls_back_on_error(storage: Storage) -> None:
    with pytest.raises(RuntimeError):
        async with storage.db.transaction() as conn:
            await storage.users.create(conn, "@a:hs1.test", None, admin=False, creation_ts=1)
            raise RuntimeError("boom")
    assert await storage.users.get("@a:hs1.test") is None


async def test_concurrent_transactions_stay_whole(storage: Storage) -> None:
    """Coroutines that await inside transactions neither interleave statements nor lose atomic updates."""
    await storage.registration_tokens.create("tok", None, None, 1)

    async def bump() -> None:
        async with storage.db.transaction() as conn:
            await conn.execute("UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1", "tok")
            await asyncio.sleep(0)
            await conn.execute("UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1", "tok")

    await asyncio.gather(*(bump() for _ in range(20)))
    t = await storage.registration_tokens.get("tok")
    assert (t.completed, t.pending) == (20, 20)


async def test_concurrent_duplicate_inserts_are_clean(storage: Storage) -> None:
    async def make() -> bool:
        async with storage.db.transaction() as conn:
            return await storage.users.create(conn, "@same:hs1.test", None, admin=False, creation_ts=1)

    results = await asyncio.gather(*(make() for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]


async def test_user_store(storage: Storage) -> None:
    async with storage.db.transaction() as conn:
        assert await storage.users.create(conn, "@bob:hs1.test", "h1", admin=True, creation_ts=5)
        assert not await storage.users.create(conn, "@bob:hs1.test", "h2", admin=False, creation_ts=6)
        assert await storage.users.create(conn, "@Carol:hs1.test", None, admin=False, creation_ts=7)
        await storage.users.set_profile_field(conn, "@bob:hs1.test", "displayname", "Bob B")
        await storage.users.set_profile_field(conn, "@bob:hs1.test", "m.tz", {"nested": [1, 2]})
    u = await storage.users.get("@bob:hs1.test")
    assert (u.admin, u.password_hash, u.creation_ts, u.deactivated) == (True, "h1", 5, False)
    assert await storage.users.find_case_insensitive("@carol:HS1.test") == ["@Carol:hs1.test"]
    assert await storage.users.get_profile("@bob:hs1.test") == {"displayname": "Bob B", "m.tz": {"nested": [1, 2]}}
    profiles = await storage.users.get_profiles(["@bob:hs1.test", "@Carol:hs1.test"])
    assert profiles["@Carol:hs1.test"] == {} and profiles["@bob:hs1.test"]["displayname"] == "Bob B"
    async with storage.db.transaction() as conn:
        await storage.users.set_flags(conn, "@Carol:hs1.test", deactivated=True)
        await storage.users.set_profile_field(conn, "@bob:hs1.test", "m.tz", None)
    assert "m.tz" not in await storage.users.get_profile("@bob:hs1.test")
    users, total = await storage.users.list(UserListQuery())
    assert [x.user_id for x in users] == ["@bob:hs1.test"] and total == 1
    users, total = await storage.users.list(UserListQuery(deactivated=True, order_by="creation_ts", direction="b"))
    assert [x.user_id for x in users] == ["@Carol:hs1.test", "@bob:hs1.test"] and total == 2
    users, total = await storage.users.list(UserListQuery(name="bob b"))
    assert [x.user_id for x in users] == ["@bob:hs1.test"]
    users, total = await storage.users.list(UserListQuery(deactivated=True, limit=1, offset=1))
    assert len(users) == 1 and total == 2


async def test_device_and_token_store(storage: Storage) -> None:
    async with storage.db.transaction() as conn:
        await storage.users.create(conn, "@d:hs1.test", None, admin=False, creation_ts=1)
        assert await storage.devices.upsert_device(conn, "@d:hs1.test", "D1", "one", 10)
        assert not await storage.devices.upsert_device(conn, "@d:hs1.test", "D1", "other", 11)
        await storage.devices.upsert_device(conn, "@d:hs1.test", "D2", None, 12)
        await storage.devices.add_access_token(conn, "hash1", "@d:hs1.test", "D1", 10, None)
        await storage.devices.add_access_token(conn, "hash2", "@d:hs1.test", "D2", 10, 99)
        await storage.devices.add_refresh_token(conn, "r1", "@d:hs1.test", "D2", 10, None)
    rec = await storage.devices.get_access_token("hash2")
    assert (rec.user_id, rec.device_id, rec.valid_until_ts, rec.admin) == ("@d:hs1.test", "D2", 99, False)
    assert [d.display_name for d in await storage.devices.list_devices("@d:hs1.test")] == ["one", None]
    await storage.devices.touch("@d:hs1.test", "D1", 50, "10.0.0.1", "UA")
    d1 = await storage.devices.get_device("@d:hs1.test", "D1")
    assert (d1.last_seen_ts, d1.last_seen_ip, d1.last_seen_user_agent) == (50, "10.0.0.1", "UA")
    async with storage.db.transaction() as conn:
        affected = await storage.devices.delete_access_tokens_for_user(conn, "@d:hs1.test", except_device="D1")
        assert affected == ["D2"]
        assert await storage.devices.get_refresh_token(conn, "r1") is None
    assert await storage.devices.get_access_token("hash1") is not None
    assert await storage.devices.get_access_token("hash2") is None
    async with storage.db.transaction() as conn:
        await storage.devices.delete_devices(conn, "@d:hs1.test", ["D1"])
    assert await storage.devices.get_access_token("hash1") is None
    assert [d.device_id for d in await storage.devices.list_devices("@d:hs1.test")] == ["D2"]


async def test_registration_token_reservation_is_atomic(storage: Storage) -> None:
    await storage.registration_tokens.create("one", 1, None, 1)
    results = []
    for _ in range(3):
        async with storage.db.transaction() as conn:
            results.append(await storage.registration_tokens.reserve(conn, "one", 2))
    assert results == [True, False, False]
    async with storage.db.transaction() as conn:
        await storage.registration_tokens.release(conn, "one")
        assert await storage.registration_tokens.reserve(conn, "one", 2)
        await storage.registration_tokens.complete(conn, "one")
    t = await storage.registration_tokens.get("one")
    assert (t.pending, t.completed, t.is_valid(2)) == (0, 1, False)
    await storage.registration_tokens.create("exp", None, 100, 2)
    async with storage.db.transaction() as conn:
        assert not await storage.registration_tokens.reserve(conn, "exp", 100)
    updated = await storage.registration_tokens.update("exp", {"expiry_time": None, "uses_allowed": 3})
    assert (updated.expiry_time, updated.uses_allowed) == (None, 3)
    assert [t.token for t in await storage.registration_tokens.list()] == ["one", "exp"]
    assert await storage.registration_tokens.delete("exp") and not await storage.registration_tokens.delete("exp")


async def test_uia_store(storage: Storage) -> None:
    await storage.uia.create("s1", 100, "POST", "/x", {"username": "a"})
    await storage.uia.mark_completed("s1", "m.login.dummy", True)
    await storage.uia.set_params("s1", {"registration_token": "t"})
    s = await storage.uia.get("s1")
    assert (s.clientdict, s.params, s.completed) == ({"username": "a"}, {"registration_token": "t"}, {"m.login.dummy": True})
    await storage.uia.create("s2", 500, "POST", "/x", {})
    expired = await storage.uia.delete_older_than(200)
    assert expired == [{"registration_token": "t"}]
    assert await storage.uia.get("s1") is None and await storage.uia.get("s2") is not None
