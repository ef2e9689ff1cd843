"""TURN credentials for calls (/voip/turnServer).

With ``turn_shared_secret`` this is coturn's ``use-auth-secret`` scheme (the "TURN REST API"): the
username is ``<expiry in unix seconds>:<user ID>`` and the password is base64(HMAC-SHA1(secret,
username)). The TURN server recomputes the HMAC with the same secret and refuses the username once its
expiry has passed, so clients get credentials that work for ``turn_user_lifetime`` and the secret never
leaves the two servers. Without a secret, fixed ``turn_username``/``turn_password`` are handed out as
Synapse does. With neither (or no ``turn_uris``) the answer is ``{}``, as Synapse's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from homeserver.clock import Clock
from homeserver.config import Config


def turn_rest_password(secret: str, username: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode("ascii")


class VoipService:
    def __init__(self, config: Config, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    def turn_server(self, user_id: str) -> dict[str, Any]:
        cfg = self.config
        uris = list(cfg.turn_uris)
        lifetime_ms = int(cfg.turn_user_lifetime)
        if not uris:
            return {}
        if cfg.turn_shared_secret:
            expiry = (self.clock.time_ms() + lifetime_ms) // 1000
            username = f"{expiry}:{user_id}"
            password = turn_rest_password(cfg.turn_shared_secret, username)
        elif cfg.turn_username and cfg.turn_password:
            username, password = cfg.turn_username, cfg.turn_password
        else:
            return {}
        return {"username": username, "password": password, "uris": uris, "ttl": lifetime_ms // 1000}
