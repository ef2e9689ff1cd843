"""The contract's error shape: every failure is ``{"error": {"code", "message"}}`` with a fitting status.

Handlers and the store raise :class:`ApiError`; one middleware in ``app.py`` renders it, so no handler
formats an error by hand and the shape cannot drift from docs/eoffice-api.md.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A client-visible failure with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}


def validation(message: str, field: str | None = None) -> ApiError:
    """400 VALIDATION, naming the offending field so integrators can fix their request."""
    return ApiError(400, "VALIDATION", message, **({"field": field} if field else {}))


def not_found(what: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} not found")


def conflict(message: str) -> ApiError:
    return ApiError(409, "CONFLICT", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", message)


def note_final() -> ApiError:
    return ApiError(409, "NOTE_FINAL", "the note is final and can never be changed or deleted")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "TOO_LARGE", f"the document exceeds the limit of {limit} bytes")


def idempotency_mismatch() -> ApiError:
    return ApiError(422, "IDEMPOTENCY_MISMATCH",
                    "this Idempotency-Key was already used with a different request body")
