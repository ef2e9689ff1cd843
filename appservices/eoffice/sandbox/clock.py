"""Time and identifiers, in one place so the formats match the contract everywhere.

Timestamps are milliseconds since the epoch (the project-wide convention); webhook signatures use
whole seconds because that is what receivers compare against their own clocks.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time


def now_ms() -> int:
    return int(time.time() * 1000)


def current_year() -> int:
    return dt.datetime.now(dt.timezone.utc).year


def new_id(prefix: str) -> str:
    """Opaque, unguessable resource ids (``fil_…``); file numbers stay attributes, never path segments."""
    return f"{prefix}_{secrets.token_hex(8)}"
