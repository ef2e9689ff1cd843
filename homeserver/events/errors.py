"""Exceptions raised by the event core.

They carry a machine-readable ``rule``/``reason`` so that the federation layer can decide what to do
(drop, store redacted, reject) and the audit verifier can report *why* an event failed.
"""

from __future__ import annotations


class EventError(Exception):
    """Base for every failure the event core reports about an event."""


class EventFormatError(EventError):
    """The event is not a well-formed PDU for its room version (missing or mistyped keys, bad integers)."""


class SignatureError(EventError):
    """A required signature is missing, made with an unknown/expired key, or does not verify."""


class HashMismatch(EventError):
    """The content hash does not match: per the spec the event must be redacted before use."""


class AuthError(EventError):
    """The event is refused by the authorization rules.

    ``rule`` names the rule that refused it (for example ``"member.join.banned"``) so callers and
    auditors can report it without parsing the message.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message
