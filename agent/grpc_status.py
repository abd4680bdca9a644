"""gRPC status codes and how a call's end reaches the agent (``StreamError``), with the
mappings gRPC defines from HTTP statuses and HTTP/2 stream resets."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import h2.errors


class StatusCode(enum.IntEnum):
    """gRPC status codes (the numbers on the wire)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# An HTTP status other than 200 (a proxy, or no gRPC server at all), as gRPC maps it.
HTTP_TO_GRPC = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}
# RST_STREAM error codes, as gRPC maps them.
RESET_TO_GRPC = {
    h2.errors.ErrorCodes.REFUSED_STREAM: StatusCode.UNAVAILABLE,
    h2.errors.ErrorCodes.CANCEL: StatusCode.CANCELLED,
    h2.errors.ErrorCodes.ENHANCE_YOUR_CALM: StatusCode.RESOURCE_EXHAUSTED,
    h2.errors.ErrorCodes.INADEQUATE_SECURITY: StatusCode.PERMISSION_DENIED,
}


class StreamError(Exception):
    """The stream ended: ``code`` and ``details`` as a gRPC client would report them, and the
    trailing metadata. A failure of the connection itself (refused, TLS, garbage, silence,
    GOAWAY) is ``UNAVAILABLE`` with ``transport`` set."""

    def __init__(
        self,
        code: StatusCode,
        details: str,
        trailers: Sequence[tuple[str, str]] = (),
        *,
        transport: bool = False,
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailers = tuple(trailers)
        self.transport = transport


def transport_error(details: str) -> StreamError:
    return StreamError(StatusCode.UNAVAILABLE, details, transport=True)
