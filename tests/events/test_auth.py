"""Authorization rules: for each rule an event it allows and one it refuses (by rule name)."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64

from homeserver.events import AuthError, check_auth
from homeserver.events.canonical import encode_canonical_json
from tests.events.builder import ALICE, BOB, CAROL, EVE, RoomBuilder


def allow(rb: RoomBuilder, ev: dict, auth: dict | None = None) -> None:
    check_auth(ev, auth if auth is not None else rb.auth_for(ev), rb.rv)


def refuse(rb: RoomBuilder, ev: dict, rule: str, auth: dict | None = None) -> None:
    with pytest.raises(AuthError) as e:
        check_auth(ev, auth if auth is not None else rb.auth_for(ev), rb.rv)
    assert e.value.rule == rule, e.value


ALL = ["6", "7", "8", "9", "10", "11", "12"]


# --- create -------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ALL)
def test_create_allowed(version: str) -> None:
    rb = RoomBuilder(version)
    check_auth(rb.events[rb.create_id], {}, version)


@pytest.mark.parametrize("version", ALL)
def test_create_with_prev_events_refused(version: str) -> None:
    rb = RoomBuilder(version)
    bad = dict(rb.events[rb.create_id], prev_events=["$x"])
    with pytest.raises(AuthError) as e:
        check_auth(bad, {}, version)
    assert e.value.rule == "create.has_prev_events"


def test_create_domain_rules() -> None:
    rb = RoomBuilder("10")
    with pytest.raises(AuthError, match="create.room_domain"):
        check_auth(dict(rb.events[rb.create_id], room_id="!r:elsewhere.test"), {}, "10")
    rb12 = RoomBuilder("12")
    with pytest.raises(AuthError, match="create.has_room_id"):
        check_auth(dict(rb12.events[rb12.create_id], room_id="!r:a.test"), {}, "12")


def test_create_creator_field() -> None:
    rb = RoomBuilder("10")
    ev = rb.events[rb.create_id]
    with pytest.raises(AuthError, match="create.no_creator"):
        check_auth(dict(ev, content={"room_version": "10"}), {}, "10")
    check_auth(dict(RoomBuilder("11").events[RoomBuilder("11").create_id]), {}, "11")  # v11: sender is creator


def test_create_room_version_and_additional_creators() -> None:
    rb = RoomBuilder("11")
    ev = rb.events[rb.create_id]
    with pytest.raises(AuthError, match="create.unknown_version"):
        check_auth(dict(ev, content={"room_version": "banana"}), {}, "11")
    rb12 = RoomBuilder("12")
    ev12 = rb12.events[rb12.create_id]
    check_auth(dict(ev12, content={"room_version": "12", "additional_creators": [BOB]}), {}, "12")
    with pytest.raises(AuthError, match="create.additional_creators"):
        check_auth(dict(ev12, content={"room_version": "12", "additional_creators": ["not-a-user"]}), {}, "12")


# --- auth events ----------------------------------------------------------------------------------

def test_auth_events_checks() -> None:
    rb = RoomBuilder("10").standard()
    ev = rb.build("m.room.message", ALICE, {"body": "x"})
    allow(rb, ev)
    auth_list = list(rb.auth_for(ev).values())
    with pytest.raises(AuthError, match="auth_events.duplicate"):
        check_auth(ev, auth_list + [auth_list[0]], rb.rv)
    no_create = {k: v for k, v in rb.auth_for(ev).items() if k != ("m.room.create", "")}
    refuse(rb, ev, "auth_events.no_create", no_create)
    extra = dict(rb.auth_for(ev))
    extra[("m.room.join_rules", "")] = rb.events[rb.state[("m.room.join_rules", "")]]
    refuse(rb, ev, "auth_events.unexpected", extra)
    other_room = dict(rb.auth_for(ev))
    other_room[("m.room.power_levels", "")] = dict(other_room[("m.room.power_levels", "")], room_id="!other:a.test")
    refuse(rb, ev, "auth_events.wrong_room", other_room)


def test_v12_create_must_not_be_listed_and_must_match_room() -> None:
    rb = RoomBuilder("12").standard()
    ev = rb.build("m.room.message", ALICE, {"body": "x"})
    assert rb.create_id not in ev["auth_events"]
    allow(rb, ev)
    listed = dict(ev, auth_events=ev["auth_events"] + ["$" + rb.room_id[1:]])
    refuse(rb, listed, "auth_events.create_listed")
    other = RoomBuilder("12", creator=BOB)
    auth = dict(rb.auth_for(ev))
    auth[("m.room.create", "")] = other.events[other.create_id]
    refuse(rb, ev, "room_id.mismatch", auth)


def test_m_federate_false() -> None:
    rb = RoomBuilder("10", create_content={"m.federate": False}).standard()
    allow(rb, rb.build("m.room.member", CAROL, {"membership": "join"}, CAROL))  # same server as the creator
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "join"}, BOB), "create.not_federated")


# --- membership -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_creator_first_join(version: str) -> None:
    rb = RoomBuilder(version)
    allow(rb, rb.build("m.room.member", ALICE, {"membership": "join"}, ALICE))
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "join"}, BOB), "member.join.not_allowed")


def test_member_malformed_and_unknown() -> None:
    rb = RoomBuilder("10").standard()
    refuse(rb, rb.build("m.room.member", BOB, {}, BOB), "member.malformed")
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "dance"}, BOB), "member.unknown_membership")


def test_join_rules() -> None:
    rb = RoomBuilder("10").standard("public")
    allow(rb, rb.build("m.room.member", BOB, {"membership": "join"}, BOB))
    refuse(rb, rb.build("m.room.member", ALICE, {"membership": "join"}, BOB), "member.join.sender_mismatch")
    rb.add("m.room.member", ALICE, {"membership": "ban"}, BOB)
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "join"}, BOB), "member.join.banned")

    inv = RoomBuilder("10").standard("invite")
    refuse(inv, inv.build("m.room.member", BOB, {"membership": "join"}, BOB), "member.join.not_invited")
    inv.add("m.room.member", ALICE, {"membership": "invite"}, BOB)
    allow(inv, inv.build("m.room.member", BOB, {"membership": "join"}, BOB))

    knock = RoomBuilder("10").standard("knock")
    refuse(knock, knock.build("m.room.member", BOB, {"membership": "join"}, BOB), "member.join.not_invited")

    private = RoomBuilder("10").standard("private")
    refuse(private, private.build("m.room.member", BOB, {"membership": "join"}, BOB), "member.join.not_allowed")


@pytest.mark.parametrize("rule, version", [("restricted", "8"), ("restricted", "12"), ("knock_restricted", "10")])
def test_restricted_joins(rule: str, version: str) -> None:
    rb = RoomBuilder(version).standard(rule, users={CAROL: 0})
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "join"}, BOB), "member.join.restricted_unauthorised")
    allow(rb, rb.build("m.room.member", BOB, {"membership": "join", "join_authorised_via_users_server": ALICE}, BOB))
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "join", "join_authorised_via_users_server": EVE}, BOB),
           "member.join.authoriser_not_joined")


def test_restricted_join_authoriser_needs_invite_power() -> None:
    rb = RoomBuilder("10").standard("restricted")
    pl = rb.events[rb.state[("m.room.power_levels", "")]]["content"]
    rb.add("m.room.power_levels", ALICE, {**pl, "invite": 50}, "")
    rb.add("m.room.member", ALICE, {"membership": "invite"}, CAROL)
    rb.add("m.room.member", CAROL, {"membership": "join"}, CAROL)
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "join", "join_authorised_via_users_server": CAROL}, BOB),
           "member.join.authoriser_power")


def test_restricted_is_not_a_rule_before_v8() -> None:
    rb = RoomBuilder("7").standard("restricted")
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "join", "join_authorised_via_users_server": ALICE}, BOB),
           "member.join.not_allowed")


def test_invite() -> None:
    rb = RoomBuilder("10").standard("invite")
    allow(rb, rb.build("m.room.member", ALICE, {"membership": "invite"}, BOB))
    refuse(rb, rb.build("m.room.member", CAROL, {"membership": "invite"}, BOB), "member.invite.sender_not_joined")
    refuse(rb, rb.build("m.room.member", ALICE, {"membership": "invite"}, ALICE), "member.invite.target_state")
    pl = rb.events[rb.state[("m.room.power_levels", "")]]["content"]
    rb.add("m.room.power_levels", ALICE, {**pl, "invite": 50}, "")
    rb.add("m.room.member", ALICE, {"membership": "invite"}, CAROL)
    rb.add("m.room.member", CAROL, {"membership": "join"}, CAROL)
    refuse(rb, rb.build("m.room.member", CAROL, {"membership": "invite"}, BOB), "member.invite.power")


def _third_party(rb: RoomBuilder, key: SigningKey, mxid: str = BOB, token: str = "tok") -> dict:
    signed = {"mxid": mxid, "token": token, "sender": ALICE}
    sig = encode_base64(key.sign(encode_canonical_json(signed)).signature)
    return {"display_name": "Bob", "signed": {**signed, "signatures": {"id.test": {"ed25519:0": sig}}}}


def test_third_party_invite() -> None:
    key = SigningKey.generate()
    rb = RoomBuilder("10").standard("invite")
    rb.add("m.room.third_party_invite", ALICE, {"display_name": "B", "key_validity_url": "https://id.test/v",
                                               "public_key": encode_base64(bytes(key.verify_key))}, "tok")
    good = rb.build("m.room.member", ALICE, {"membership": "invite", "third_party_invite": _third_party(rb, key)}, BOB)
    allow(rb, good)
    forged = rb.build("m.room.member", ALICE, {"membership": "invite", "third_party_invite": _third_party(rb, SigningKey.generate())}, BOB)
    refuse(rb, forged, "member.3pid_invite.bad_signature")
    wrong = rb.build("m.room.member", ALICE, {"membership": "invite", "third_party_invite": _third_party(rb, key, mxid=CAROL)}, BOB)
    refuse(rb, wrong, "member.3pid_invite.mxid_mismatch")
    nosigned = rb.build("m.room.member", ALICE, {"membership": "invite", "third_party_invite": {"display_name": "x"}}, BOB)
    refuse(rb, nosigned, "member.3pid_invite.no_signed")
    other_token = rb.build("m.room.member", ALICE, {"membership": "invite", "third_party_invite": _third_party(rb, key, token="nope")}, BOB)
    refuse(rb, other_token, "member.3pid_invite.no_invite")
    rb.add("m.room.member", ALICE, {"membership": "invite"}, CAROL)
    rb.add("m.room.member", CAROL, {"membership": "join"}, CAROL)
    by_carol = rb.build("m.room.member", CAROL, {"membership": "invite", "third_party_invite": _third_party(rb, key)}, BOB)
    refuse(rb, by_carol, "member.3pid_invite.sender_mismatch")


def test_leave_and_kick() -> None:
    rb = RoomBuilder("10").standard("public", users={CAROL: 50})
    rb.add("m.room.member", BOB, {"membership": "join"}, BOB)
    rb.add("m.room.member", CAROL, {"membership": "join"}, CAROL)
    allow(rb, rb.build("m.room.member", BOB, {"membership": "leave"}, BOB))
    refuse(rb, rb.build("m.room.member", EVE, {"membership": "leave"}, EVE), "member.leave.not_member")
    allow(rb, rb.build("m.room.member", CAROL, {"membership": "leave"}, BOB))  # 50 kicks 0
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "leave"}, CAROL), "member.kick.power")
    refuse(rb, rb.build("m.room.member", CAROL, {"membership": "leave"}, ALICE), "member.kick.power")
    refuse(rb, rb.build("m.room.member", EVE, {"membership": "leave"}, BOB), "member.leave.sender_not_joined")


def test_unban_needs_ban_power() -> None:
    rb = RoomBuilder("10").standard("public", users={CAROL: 40})
    rb.add("m.room.member", CAROL, {"membership": "join"}, CAROL)
    pl = rb.events[rb.state[("m.room.power_levels", "")]]["content"]
    rb.add("m.room.power_levels", ALICE, {**pl, "kick": 40}, "")
    rb.add("m.room.member", ALICE, {"membership": "ban"}, BOB)
    refuse(rb, rb.build("m.room.member", CAROL, {"membership": "leave"}, BOB), "member.unban.power")
    allow(rb, rb.build("m.room.member", ALICE, {"membership": "leave"}, BOB))


def test_ban() -> None:
    rb = RoomBuilder("10").standard("public")
    rb.add("m.room.member", BOB, {"membership": "join"}, BOB)
    allow(rb, rb.build("m.room.member", ALICE, {"membership": "ban"}, BOB))
    allow(rb, rb.build("m.room.member", ALICE, {"membership": "ban"}, EVE))  # pre-emptive ban
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "ban"}, ALICE), "member.ban.power")
    refuse(rb, rb.build("m.room.member", EVE, {"membership": "ban"}, BOB), "member.ban.sender_not_joined")


def test_knock() -> None:
    rb = RoomBuilder("10").standard("knock")
    allow(rb, rb.build("m.room.member", BOB, {"membership": "knock"}, BOB))
    refuse(rb, rb.build("m.room.member", ALICE, {"membership": "knock"}, BOB), "member.knock.sender_mismatch")
    refuse(rb, rb.build("m.room.member", ALICE, {"membership": "knock"}, ALICE), "member.knock.state")
    public = RoomBuilder("10").standard("public")
    refuse(public, public.build("m.room.member", BOB, {"membership": "knock"}, BOB), "member.knock.join_rule")
    kr = RoomBuilder("10").standard("knock_restricted")
    allow(kr, kr.build("m.room.member", BOB, {"membership": "knock"}, BOB))
    old = RoomBuilder("6").standard("knock")
    refuse(old, old.build("m.room.member", BOB, {"membership": "knock"}, BOB), "member.unknown_membership")


# --- other events -------------------------------------------------------------------------------

def test_sender_must_be_joined() -> None:
    rb = RoomBuilder("10").standard("public")
    allow(rb, rb.build("m.room.message", ALICE, {"body": "x"}))
    refuse(rb, rb.build("m.room.message", BOB, {"body": "x"}), "sender.not_joined")


def test_third_party_invite_event_power() -> None:
    rb = RoomBuilder("10").standard("public")
    rb.add("m.room.member", BOB, {"membership": "join"}, BOB)
    allow(rb, rb.build("m.room.third_party_invite", BOB, {"public_key": "x"}, "t"))
    pl = rb.events[rb.state[("m.room.power_levels", "")]]["content"]
    rb.add("m.room.power_levels", ALICE, {**pl, "invite": 50}, "")
    refuse(rb, rb.build("m.room.third_party_invite", BOB, {"public_key": "x"}, "t"), "third_party_invite.power")


def test_event_type_power() -> None:
    rb = RoomBuilder("10").standard("public")
    rb.add("m.room.member", BOB, {"membership": "join"}, BOB)
    allow(rb, rb.build("m.room.name", ALICE, {"name": "n"}, ""))
    refuse(rb, rb.build("m.room.name", BOB, {"name": "n"}, ""), "power.event_type")
    allow(rb, rb.build("m.room.message", BOB, {"body": "hi"}))


def test_user_state_keys_reserved() -> None:
    rb = RoomBuilder("10").standard("public")
    allow(rb, rb.build("org.example.pref", ALICE, {}, ALICE))
    refuse(rb, rb.build("org.example.pref", ALICE, {}, BOB), "state_key.user_reserved")


# --- power levels ---------------------------------------------------------------------------------

def _pl(rb: RoomBuilder) -> dict:
    return dict(rb.events[rb.state[("m.room.power_levels", "")]]["content"])


def test_power_levels_integers_by_version() -> None:
    v9 = RoomBuilder("9").standard()
    allow(v9, v9.build("m.room.power_levels", ALICE, {**_pl(v9), "kick": "40"}, ""))
    v10 = RoomBuilder("10").standard()
    refuse(v10, v10.build("m.room.power_levels", ALICE, {**_pl(v10), "kick": "40"}, ""), "power_levels.not_integer")
    refuse(v10, v10.build("m.room.power_levels", ALICE, {**_pl(v10), "events": {"m.room.name": "50"}}, ""), "power_levels.not_integer")
    refuse(v10, v10.build("m.room.power_levels", ALICE, {**_pl(v10), "users": {"nobody": 5}}, ""), "power_levels.users_invalid")


def test_power_levels_changes() -> None:
    rb = RoomBuilder("10").standard("public", users={BOB: 50, CAROL: 50})
    rb.add("m.room.member", BOB, {"membership": "join"}, BOB)
    pl = _pl(rb)
    pl["events"] = {**pl["events"], "m.room.power_levels": 50}
    rb.add("m.room.power_levels", ALICE, pl, "")
    allow(rb, rb.build("m.room.power_levels", BOB, {**pl, "users": {**pl["users"], EVE: 50}}, ""))
    refuse(rb, rb.build("m.room.power_levels", BOB, {**pl, "users": {**pl["users"], EVE: 60}}, ""), "power_levels.raise_above_own")
    refuse(rb, rb.build("m.room.power_levels", BOB, {**pl, "users": {**pl["users"], CAROL: 10}}, ""), "power_levels.change_equal_or_above")
    refuse(rb, rb.build("m.room.power_levels", BOB, {**pl, "users": {**pl["users"], ALICE: 10}}, ""), "power_levels.change_equal_or_above")
    refuse(rb, rb.build("m.room.power_levels", BOB, {**pl, "ban": 60}, ""), "power_levels.raise_above_own")
    high = {**pl, "events": {**pl["events"], "m.room.tombstone": 100}}
    rb.add("m.room.power_levels", ALICE, high, "")
    refuse(rb, rb.build("m.room.power_levels", BOB, {**high, "events": {**high["events"], "m.room.tombstone": 10}}, ""),
           "power_levels.change_above_own")
    refuse(rb, rb.build("m.room.power_levels", BOB, {**high, "notifications": {"room": 70}}, ""), "power_levels.raise_above_own")
    allow(rb, rb.build("m.room.power_levels", BOB, {**high, "users": {**high["users"], BOB: 20}}, ""))  # demote self


def test_v12_creators() -> None:
    rb = RoomBuilder("12", create_content={"additional_creators": [BOB]}).standard("public")
    rb.add("m.room.member", BOB, {"membership": "join"}, BOB)
    pl = _pl(rb)
    assert ALICE not in pl["users"]
    allow(rb, rb.build("m.room.power_levels", BOB, {**pl, "events": {"m.room.power_levels": 100, "x": 1000}}, ""))
    refuse(rb, rb.build("m.room.power_levels", ALICE, {**pl, "users": {BOB: 100}}, ""), "power_levels.creator_listed")
    # Nobody can kick a creator.
    rb.add("m.room.member", CAROL, {"membership": "join"}, CAROL)
    refuse(rb, rb.build("m.room.member", CAROL, {"membership": "leave"}, ALICE), "member.kick.power")
    allow(rb, rb.build("m.room.member", BOB, {"membership": "ban"}, CAROL))


def test_sender_must_be_a_user_id() -> None:
    rb = RoomBuilder("10").standard()
    refuse(rb, rb.build("m.room.message", "not-a-user", {"body": "x"}), "sender.invalid")


def test_authoriser_must_be_a_user_id() -> None:
    rb = RoomBuilder("10").standard("restricted")
    refuse(rb, rb.build("m.room.member", BOB, {"membership": "join", "join_authorised_via_users_server": 5}, BOB),
           "member.bad_authoriser")
