"""Error types raised by the GGUF header parser.

Every problem with a file, a shard set or a remote server is reported as a
``GGUFError`` subclass, so callers can catch one type and show its message.
"""

from __future__ import annotations


class GGUFError(Exception):
    """Base class: the header could not be read or does not make sense."""


class GGUFFormatError(GGUFError):
    """The bytes are not a well-formed GGUF header (bad magic, bad type, bad shape...)."""


class GGUFUnsupportedError(GGUFError):
    """A well-formed file that this parser does not support (GGUF v1, unknown versions)."""


class GGUFLimitError(GGUFError):
    """A declared count or length is larger than the parser's safety limits allow."""


class GGUFIncompleteError(GGUFError):
    """The header runs past the bytes that are available (truncated or still downloading).

    ``needed_bytes`` is a lower bound on the bytes the file must have for the
    parser to go further; ``available_bytes`` is what it has now.
    """

    def __init__(self, source_name: str, needed_bytes: int, available_bytes: int) -> None:
        self.source_name = source_name
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        super().__init__(
            f"incomplete: {source_name} needs at least {needed_bytes} bytes, "
            f"only {available_bytes} available"
        )


class GGUFTooShortError(GGUFIncompleteError):
    """A complete file (not one still downloading) that ends before its header does: not a
    GGUF file, or a truncated one. Waiting or reading again will not help."""

    def __init__(self, source_name: str, needed_bytes: int, available_bytes: int) -> None:
        super().__init__(source_name, needed_bytes, available_bytes)
        self.args = (
            f"{source_name} is not a GGUF file or is too short ({available_bytes} bytes): "
            f"its header needs at least {needed_bytes} bytes, only {available_bytes} available",
        )


class GGUFSplitError(GGUFError):
    """The shards given do not form one split model (wrong count, order or numbering)."""


class GGUFRemoteError(GGUFError):
    """A remote file could not be read with HTTP Range requests."""
