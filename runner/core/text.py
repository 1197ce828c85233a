"""Text helpers shared by every layer."""

from __future__ import annotations


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes, with a note saying how much was cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    kept = raw[:limit].decode("utf-8", errors="ignore")
    return f"{kept}\n[output truncated: {len(raw):,} bytes, kept the first {limit:,}]"


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (runs of white space become one space), cut to ``limit``
    characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
