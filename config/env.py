"""Typed parsers for settings read from the environment.

Every parser rejects values it does not understand with ``ImproperlyConfigured``
naming the variable, so a typo never silently becomes a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}
_UNITS |= {"g": 1024**3, "gib": 1024**3, "t": 1024**4, "tib": 1024**4}
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    return (os.environ if env is None else env).get(name)


def parse_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    raw = _raw(name, env)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")


def parse_int(
    name: str,
    default: int,
    env: Mapping[str, str] | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    raw = _raw(name, env)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected an integer") from None
    return _bounded(name, value, minimum, maximum)


def _bounded(name: str, value: int, minimum: int | None, maximum: int | None) -> int:
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value}: must be at most {maximum}")
    return value


def _split_number(name: str, raw: str) -> tuple[float, str]:
    text = raw.strip().lower()
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
    try:
        return float(digits), text[len(digits) :].strip()
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a number with a unit") from None


def parse_bytes(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    """Sizes like ``1GiB``, ``512M``, ``1073741824`` (binary units)."""
    raw = _raw(name, env)
    if raw is None or raw.strip() == "":
        return default
    number, unit = _split_number(name, raw)
    if unit not in _UNITS:
        raise ImproperlyConfigured(f"{name}={raw!r}: unknown unit {unit!r} (use B, KiB, MiB, GiB)")
    if number < 0:
        raise ImproperlyConfigured(f"{name}={raw!r}: must not be negative")
    return int(number * _UNITS[unit])


def parse_seconds(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    """Durations like ``15``, ``15s``, ``500ms``, ``2m``, ``1h``."""
    raw = _raw(name, env)
    if raw is None or raw.strip() == "":
        return default
    number, unit = _split_number(name, raw)
    if unit not in _DURATION_UNITS:
        raise ImproperlyConfigured(f"{name}={raw!r}: unknown unit {unit!r} (use ms, s, m, h)")
    if number <= 0:
        raise ImproperlyConfigured(f"{name}={raw!r}: must be positive")
    return number * _DURATION_UNITS[unit]


def parse_choice(
    name: str, default: str, choices: tuple[str, ...], env: Mapping[str, str] | None = None
) -> str:
    raw = _raw(name, env)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return value


def parse_list(name: str, default: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    raw = _raw(name, env)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_str(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    raw = _raw(name, env)
    return default if raw is None or raw.strip() == "" else raw.strip()
