"""Typed parsers for settings read from the environment.

Every parser rejects values it does not understand with ``ImproperlyConfigured``
naming the variable, so a typo never silently becomes a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

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


def parse_checked_list(
    name: str,
    default: list[str],
    check: Callable[[str], object],
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """A comma-separated list whose every item ``check`` accepts (it raises ValueError
    with the reason otherwise), e.g. networks and host names."""
    items = parse_list(name, default, env)
    for item in items:
        try:
            check(item)
        except ValueError as error:
            raise ImproperlyConfigured(f"{name}: {error}") from None
    return items


def parse_str(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    raw = _raw(name, env)
    return default if raw is None or raw.strip() == "" else raw.strip()


_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def parse_header_name(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    """An HTTP header name like ``X-Forwarded-Proto`` → its ``request.META`` key
    (``HTTP_X_FORWARDED_PROTO``); '' when unset."""
    raw = _raw(name, env)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip()
    if not _HEADER_NAME.fullmatch(value):
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a header name like X-Forwarded-Proto")
    return "HTTP_" + value.upper().replace("-", "_")


def parse_port_range(
    name: str, default: tuple[int, int], env: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """``"39000-39999"`` → (39000, 39999); both ends in 1024–65535, low ≤ high."""
    raw = _raw(name, env)
    if raw is None or raw.strip() == "":
        return default
    low_text, dash, high_text = raw.strip().partition("-")
    try:
        low, high = int(low_text), int(high_text if dash else low_text)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={raw!r}: expected a port range like 39000-39999"
        ) from None
    if not 1024 <= low <= high <= 65535:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected 1024 ≤ low ≤ high ≤ 65535")
    return low, high


def parse_fraction(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    """A number in (0, 1], or a percentage (``90%``)."""
    raw = _raw(name, env)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a fraction like 0.9 or 90%") from None
    if not 0 < value <= 1:
        raise ImproperlyConfigured(f"{name}={raw!r}: must be above 0 and at most 1 (100%)")
    return value
