"""Extra llama.cpp options a deployment may set: an allowed list with a type each.

Everything that decides memory or placement (context, GPU layers, split, cache types,
flash attention, batch sizes, mmap) has its own field on ``Deployment``, so that the
estimate and the process agree; the options here change how the server runs, not
where it fits. Names are llama-cpp-python server flags without the leading ``--``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_CHAT_FORMAT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _integer(low: int, high: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError("must be an integer") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return str(number)

    return parse


def _number(low: float, high: float) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return repr(number)

    return parse


def _boolean(value: Any) -> str:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return "true"
    if text in ("false", "0", "no", "off"):
        return "false"
    raise ValueError("must be true or false")


def _chat_format(value: Any) -> str:
    text = str(value).strip()
    if not _CHAT_FORMAT.match(text):
        raise ValueError("must be a chat format name such as chatml or llama-3")
    return text


ALLOWED_OPTIONS: dict[str, Callable[[Any], str]] = {
    "n_threads": _integer(1, 1024),
    "n_threads_batch": _integer(1, 1024),
    "seed": _integer(-1, 2**31 - 1),
    "rope_scaling_type": _integer(-1, 3),
    "rope_freq_base": _number(0, 1e9),
    "rope_freq_scale": _number(0, 100),
    "yarn_orig_ctx": _integer(0, 10_000_000),
    "chat_format": _chat_format,
    "use_mlock": _boolean,
    "mul_mat_q": _boolean,
    "last_n_tokens_size": _integer(1, 100_000),
    "cache": _boolean,
    "cache_size": _integer(0, 2**40),
}


def clean_options(options: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(the options as the server's command line spells them, errors by option name)."""
    if not isinstance(options, Mapping):
        return {}, {"extra_options": "Give an object of option name → value."}
    cleaned: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, value in options.items():
        parse = ALLOWED_OPTIONS.get(str(name))
        if parse is None:
            allowed = ", ".join(sorted(ALLOWED_OPTIONS))
            errors[str(name)] = f"not an allowed option (allowed: {allowed})"
            continue
        try:
            cleaned[str(name)] = parse(value)
        except ValueError as exc:
            errors[str(name)] = str(exc)
    return cleaned, errors
