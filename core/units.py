"""Byte sizes: the one definition used by every app, script and test."""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
