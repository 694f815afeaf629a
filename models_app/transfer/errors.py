"""Why a transfer failed, as exception classes the caller can act on.

The Django task turns these into a ``ModelFile``'s state: ``TransientError`` was
already retried and may be retried later; ``Cancelled`` leaves a resumable partial
file; every other error is permanent until someone changes the source or the disk.
Messages are for people (they end up on the downloads page): they name the repo,
file and revision, never a token or a signed CDN URL.
"""

from __future__ import annotations

from models_app.retrying import TransientFailure


class TransferError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidSource(TransferError):
    """The repo id, file name, revision or URL is malformed (found before any request)."""


class NotFound(TransferError):
    """The hub or server says the thing does not exist (HTTP 404)."""


class RepoNotFound(NotFound):
    """No such repository, or a private one the token cannot see (the hub says the same)."""


class RevisionNotFound(NotFound):
    """The repository exists but the branch, tag or commit does not."""


class FileNotFound(NotFound):
    """The repository and revision exist but the file does not."""


class Unauthorized(TransferError):
    """HTTP 401/403: no token, a refused token, or a token without access."""


class GatedRepo(Unauthorized):
    """The repository is gated: its conditions must be accepted on the hub first."""


class AddressRefused(InvalidSource):
    """The URL (or a redirect) leads to an address gpufleet does not fetch from."""


class TransientError(TransferError, TransientFailure):
    """A transfer's failure worth retrying (``retrying.TransientFailure``): 5xx, 429, a
    dropped connection, a timeout. ``retry_after`` is the server's ``Retry-After`` in
    seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        TransientFailure.__init__(self, message, retry_after=retry_after)

    def gave_up(self, failures: int) -> TransientError:
        message = f"{self} (gave up after {failures} attempts in a row)"
        return TransientError(message, retry_after=self.retry_after)


class Unreachable(TransientError):
    """No connection to the hub: refused, host name not found, or no connection (or no
    answer) in time. The download engine retries it like any transient failure; a request
    someone waits on (adding a model, listing a repo) reports it at once."""


class RangeNotSatisfiable(TransferError):
    """HTTP 416 while the partial file is not the server's size: resuming cannot work."""


class VerificationFailed(TransferError):
    """The bytes are not the expected ones (size or sha256); the partial file is deleted."""


class Cancelled(TransferError):
    """``should_stop()`` said stop; the partial file is kept so the download can resume."""


class InsufficientSpace(TransferError):
    """The destination's file system cannot hold the remaining bytes plus the margin."""


class UnsafePath(TransferError):
    """A path leaves its storage root (``..``, an absolute path elsewhere, a symlink)."""
