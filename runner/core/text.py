"""Text helpers shared by every layer."""

from __future__ import annotations


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes, with a note saying how much was cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    kept = raw[:limit].decode("utf-8", errors="ignore")
    return f"{kept}\n[output truncated: {len(raw):,} bytes, kept the first {limit:,}]"
