"""Error kinds that cross every boundary (backend -> wire -> plug-in -> user) and the one exception type."""

from __future__ import annotations

from enum import Enum


class ErrorKind(str, Enum):
    """What went wrong, as a stable machine-readable word; the value travels on the wire."""

    BAD_REQUEST = "bad_request"  # malformed or inconsistent message (a bug in the sender)
    UNSUPPORTED_VERSION = "unsupported_version"  # plug-in and backend speak different protocol versions
    TOO_LARGE = "too_large"  # a size limit was exceeded (image, frame, header, queue of frames)
    BUSY = "busy"  # the backend's queue is full
    CANCELLED = "cancelled"  # the user (or a shutdown) cancelled the request
    TIMEOUT = "timeout"  # the request did not finish within the caller's total timeout
    BACKEND_UNAVAILABLE = "backend_unavailable"  # nothing answers, or the backend went away
    ACCESS_DENIED = "access_denied"  # a remote backend refused this client's keys, or the keys are unusable
    NO_WEIGHTS = "no_weights"  # the backend has no model weights to load
    OUT_OF_MEMORY = "out_of_memory"  # the device or host ran out of memory
    INTERNAL = "internal"  # an unexpected failure inside the backend (details in its log)

    @classmethod
    def from_wire(cls, value: object) -> ErrorKind:
        """The kind for a wire value; unknown values (from a newer backend) become INTERNAL."""
        try:
            return cls(value)
        except ValueError:
            return cls.INTERNAL


class HiFillError(Exception):
    """An error with a kind and a sentence a user understands (no traceback, no jargon)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"HiFillError({self.kind.name}, {self.message!r})"


class ProtocolError(HiFillError):
    """A message failed validation; request_id is the sender's id when it could be read (for the reply)."""

    def __init__(self, kind: ErrorKind, message: str, request_id: str | None = None) -> None:
        super().__init__(kind, message)
        self.request_id = request_id
