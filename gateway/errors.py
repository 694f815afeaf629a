"""Errors in OpenAI's shape, with the statuses the official client maps to its exception
classes (401 AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError,
400 BadRequestError, 413/422 APIStatusError, 429 RateLimitError, 5xx InternalServerError)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout",
}


@dataclass
class GatewayError(Exception):
    """An answer the gateway gives itself instead of a backend's."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        error = {
            "message": self.message,
            "type": TYPES.get(self.status, "api_error"),
            "param": self.param,
            "code": self.code,
        }
        return json.dumps({"error": error}).encode()


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)
