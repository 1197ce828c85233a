"""What the binary parts of a ``git diff --binary`` patch carry, in the clear.

A binary file's change is written as ``GIT binary patch`` hunks: ``literal N`` (the new
content) or ``delta N`` (instructions against the old one: copies of its bytes and
inserts of new ones, at most 127 bytes an insert), deflated to N bytes and
base85-encoded, a line each of up to 52 bytes. A secret in such a file cannot be seen in
the patch's text: a check for secrets reads these contents too, a delta's inserts joined
(a secret split over two inserts is whole again).

Inflating is bounded: a hunk must inflate to exactly its stated size, and all of a
patch's hunks together to at most ``limit`` bytes (a small patch may not inflate into
gigabytes).
"""

from __future__ import annotations

import base64
import re
import zlib

_HUNK = re.compile(rb"^(literal|delta) (\d+)$")


class BinaryPatchError(ValueError):
    """A binary hunk that is not what git writes (bad base85, bad length, not deflate)."""


def _line_bytes(line: bytes) -> bytes:
    """One data line: a length character (``A``-``Z`` 1-26, ``a``-``z`` 27-52), then
    base85 in groups of five characters."""
    head = line[:1]
    if b"A" <= head <= b"Z":
        size = head[0] - ord("A") + 1
    elif b"a" <= head <= b"z":
        size = head[0] - ord("a") + 27
    else:
        raise BinaryPatchError("a binary patch line without its length character")
    body = line[1:]
    if len(body) != -(-size // 4) * 5:
        raise BinaryPatchError("a binary patch line of the wrong length")
    try:
        return base64.b85decode(body)[:size]
    except ValueError as exc:
        raise BinaryPatchError("a binary patch line that is not base85") from exc


#: Bytes all binary hunks of one patch may inflate to, by default.
INFLATED_LIMIT = 64 << 20


def binary_contents(patch: bytes, *, limit: int = INFLATED_LIMIT) -> list[bytes]:
    """The new bytes of every binary hunk in ``patch``, in order: a literal's content, a
    delta's inserts joined; ``[]`` for a patch with none.

    Raises :class:`BinaryPatchError` for a hunk git would not have written, or for
    hunks that inflate past ``limit`` bytes together."""
    found: list[bytes] = []
    hunk: tuple[bytes, int] | None = None  # (kind, stated size)
    data: list[bytes] = []
    for line in patch.split(b"\n"):
        if hunk is None:
            if (head := _HUNK.match(line)) is not None:
                hunk, data = (head[1], int(head[2])), []
            continue
        if line:
            data.append(_line_bytes(line))
            continue
        kind, size = hunk
        limit -= size
        if limit < 0:
            raise BinaryPatchError("binary patch hunks that inflate past the limit")
        inflated = _inflate(b"".join(data), size)
        found.append(_inserts(inflated) if kind == b"delta" else inflated)
        hunk = None
    if hunk is not None:
        raise BinaryPatchError("a binary patch hunk without its closing empty line")
    return found


def _inflate(raw: bytes, size: int) -> bytes:
    """``raw`` inflated, which must give exactly ``size`` bytes (never more are made)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, size + 1)
    except zlib.error as exc:
        raise BinaryPatchError("a binary patch hunk that does not inflate") from exc
    if len(out) != size or not inflater.eof:
        raise BinaryPatchError("a binary patch hunk that does not inflate to its size")
    return out


def _varint(delta: bytes, at: int) -> int:
    """Where the size varint starting at ``at`` ends (7 bits a byte, high bit: more)."""
    while at < len(delta) and delta[at] & 0x80:
        at += 1
    if at >= len(delta):
        raise BinaryPatchError("a binary delta cut short")
    return at + 1


def _inserts(delta: bytes) -> bytes:
    """A git delta's inserted bytes, joined: after the old and new sizes, an opcode
    with its high bit set copies from the old file (its low 7 bits say which offset
    and size bytes follow); another opcode (1-127) inserts that many bytes."""
    at = _varint(delta, _varint(delta, 0))
    inserted: list[bytes] = []
    while at < len(delta):
        opcode = delta[at]
        at += 1
        if opcode & 0x80:
            at += (opcode & 0x7F).bit_count()
        elif opcode:
            inserted.append(delta[at : at + opcode])
            at += opcode
        else:
            raise BinaryPatchError("a binary delta with a reserved opcode")
    if at > len(delta):
        raise BinaryPatchError("a binary delta cut short")
    return b"".join(inserted)
