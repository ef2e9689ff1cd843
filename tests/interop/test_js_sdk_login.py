"""matrix-js-sdk (npm) logs in, reads whoami and devices, renames its device and logs out."""

from __future__ import annotations

from tests.interop.jsdk import run_js
from tests.support.servers import RunningServer


async def test_js_sdk_login_devices_logout(server: RunningServer) -> None:
    user = await server.create_user("officer", "long-enough-pw")
    result = await run_js("login.mjs", {"baseUrl": server.base_url, "user": "officer", "password": "long-enough-pw"})
    device = result["login"]["device_id"]
    assert result["login"]["user_id"] == user and result["login"]["has_token"]
    assert "v1.16" in result["versions"]
    assert result["whoami"] == {"user_id": user, "device_id": device, "is_guest": False}
    assert {"device_id": device, "display_name": "renamed by js-sdk"} in result["devices"]
    assert result["after_logout"] == "M_UNKNOWN_TOKEN"
    assert await server.hs.storage.devices.get_device(user, device) is None
