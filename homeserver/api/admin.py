"""Synapse-compatible admin API (written next)."""
from homeserver.api.http import Routes


def setup(routes: Routes) -> None:
    pass
