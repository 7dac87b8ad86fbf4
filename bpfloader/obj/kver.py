"""Kernel versions as defs encode them: Android's KVER(a,b,c)."""

from __future__ import annotations

KVER_INF = 0xFFFFFFFF


def kver(major: int, minor: int, patch: int) -> int:
    """Android's KVER(a,b,c): the encoding of kernel versions in defs."""
    return (major << 24) + (minor << 16) + patch


def format_kver(value: int) -> str:
    if value == KVER_INF:
        return "inf"
    return f"{value >> 24}.{(value >> 16) & 0xFF}.{value & 0xFFFF}"
