"""Thin aiohttp handlers: parse and validate input, authenticate, call a service, return JSON."""

from __future__ import annotations

from homeserver.api.http import Routes


def mount_all(routes: Routes) -> None:
    """Every handler module's routes; the app and the docs test both use this one list."""
    from homeserver.api import account, admin, appservice, admin_audit, admin_media, admin_usage, delayed_events, media, devices, dehydrated_devices, directory, keys, room_keys, presence, search, user_directory, login, profile, push_rules, pushers, register, relations, rooms, sync, user_data, versions, voip

    for module in (versions, register, login, account, devices, profile, rooms, relations, directory, sync, user_data, push_rules, pushers, voip, user_directory, search, presence, keys, room_keys, dehydrated_devices, admin, admin_media, admin_audit, admin_usage, delayed_events, media, appservice):
        module.setup(routes)
