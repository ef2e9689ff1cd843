"""Which servers this one federates with, and where they are: the closed-federation settings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FederationPolicy:
    """``allowlist`` None means any server; otherwise only those named (in both directions).
    ``addresses`` and ``pinned_keys`` come from the static federation directory."""

    allowlist: frozenset[str] | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    pinned_keys: dict[str, dict[str, str]] = field(default_factory=dict)

    def allows(self, server_name: str) -> bool:
        return self.allowlist is None or server_name in self.allowlist
