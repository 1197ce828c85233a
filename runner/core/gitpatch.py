"""What the binary parts of a ``git diff --binary`` patch carry, in the clear.

A binary file's change is written as ``GIT binary patch`` hunks: ``literal N`` (the new
content) or ``delta N`` (instructions against the old one, whose inserted bytes are
literal), deflated and base85-encoded, a line each of up to 52 bytes. A secret in such a
file cannot be seen in the patch's text: a check for secrets reads these contents too.
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


def binary_contents(patch: bytes) -> list[bytes]:
    """The inflated data of every binary hunk in ``patch`` (new contents, or deltas whose
    inserts are the new bytes), in order; ``[]`` for a patch with none.

    Raises :class:`BinaryPatchError` for a hunk git would not have written."""
    found: list[bytes] = []
    data: list[bytes] | None = None
    for line in patch.split(b"\n"):
        if data is None:
            if _HUNK.match(line):
                data = []
            continue
        if line:
            data.append(_line_bytes(line))
            continue
        try:
            found.append(zlib.decompress(b"".join(data)))
        except zlib.error as exc:
            raise BinaryPatchError("a binary patch hunk that does not inflate") from exc
        data = None
    if data is not None:
        raise BinaryPatchError("a binary patch hunk without its closing empty line")
    return found
