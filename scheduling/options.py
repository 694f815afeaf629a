"""Extra llama.cpp options a deployment may set: an allowed list with a type each.

Everything that decides memory or placement (context, GPU layers, split, cache types,
flash attention, batch sizes, mmap, slots, prompt cache) has its own field on
``Deployment``, so that the estimate and the process agree; the options here change how
the server runs, not where it fits. Each backend has its own list: for
llama-cpp-python's server the names are its flags without the leading ``--``; for
llama-server they are names of our own, which ``LLAMA_SERVER_FLAGS`` turns into its flags.
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


def _choice(*names: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in names:
            raise ValueError(f"must be one of {', '.join(names)}")
        return text

    return parse


# llama-cpp-python's server (backend "llama_cpp_python").
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


# llama-server (backend "llama_server"): option → its flag. Booleans are flags without a
# value ("true" adds the flag); ctx_checkpoints (kept per slot in host RAM for models with
# a sliding window) is 0 unless set, so that host memory does not depend on defaults.
LLAMA_SERVER_FLAGS = {
    "n_threads": "--threads",
    "n_threads_batch": "--threads-batch",
    "seed": "--seed",
    "rope_scaling": "--rope-scaling",
    "rope_freq_base": "--rope-freq-base",
    "rope_freq_scale": "--rope-freq-scale",
    "yarn_orig_ctx": "--yarn-orig-ctx",
    "chat_format": "--chat-template",
    "use_mlock": "--mlock",
    "ctx_checkpoints": "--ctx-checkpoints",
    "cache_reuse": "--cache-reuse",
}
LLAMA_SERVER_OPTIONS: dict[str, Callable[[Any], str]] = {
    "n_threads": _integer(1, 1024),
    "n_threads_batch": _integer(1, 1024),
    "seed": _integer(-1, 2**31 - 1),
    "rope_scaling": _choice("none", "linear", "yarn"),
    "rope_freq_base": _number(0, 1e9),
    "rope_freq_scale": _number(0, 100),
    "yarn_orig_ctx": _integer(0, 10_000_000),
    "chat_format": _chat_format,
    "use_mlock": _boolean,
    "ctx_checkpoints": _integer(0, 64),
    "cache_reuse": _integer(0, 1_000_000),
}
ALLOWED_BY_BACKEND = {"llama_cpp_python": ALLOWED_OPTIONS, "llama_server": LLAMA_SERVER_OPTIONS}


def clean_options(
    options: Mapping[str, Any], backend: str = "llama_cpp_python"
) -> tuple[dict[str, str], dict[str, str]]:
    """(the options, values as the backend's command line spells them; errors by name)."""
    if not isinstance(options, Mapping):
        return {}, {"extra_options": "Give an object of option name → value."}
    allowed_options = ALLOWED_BY_BACKEND.get(backend, {})
    cleaned: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, value in options.items():
        parse = allowed_options.get(str(name))
        if parse is None:
            allowed = ", ".join(sorted(allowed_options))
            errors[str(name)] = f"not an allowed option for {backend} (allowed: {allowed})"
            continue
        try:
            cleaned[str(name)] = parse(value)
        except ValueError as exc:
            errors[str(name)] = str(exc)
    return cleaned, errors
