"""runner.core.gitpatch: the contents a ``git diff --binary`` patch carries."""

from __future__ import annotations

import base64
import random
import subprocess
import zlib
from typing import TYPE_CHECKING

import pytest

from runner.core.gitpatch import BinaryPatchError, binary_contents
from tests.support.git import git

if TYPE_CHECKING:
    from pathlib import Path

#: ``git diff --cached --binary`` of a new file holding ``CONTENT``.
PATCH = b"""diff --git a/a.bin b/a.bin
new file mode 100644
index 0000000000000000000000000000000000000000..b7f542cbcb5f73dcf5d919ecc4e89d4c292906b2
GIT binary patch
literal 57
dcmZQz%+JlsR7lFqODw8X$SBRr{?9;^5CBXD6^j4>

literal 0
HcmV?d00001

"""
CONTENT = b"\x00\x01omni binary hunk\xff" * 3


def test_each_hunk_is_inflated() -> None:
    assert binary_contents(PATCH) == [CONTENT, b""]


def test_a_text_patch_carries_no_binary_hunk() -> None:
    text = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+literal 3\n"
    assert binary_contents(text) == []


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (PATCH.replace(b"dcmZQz", b"dcmZQ\\"), "not base85"),
        (PATCH.replace(b"\ndcmZQz", b"\n!cmZQz"), "without its length character"),
        (PATCH.replace(b"6^j4>\n", b"6^j4\n"), "of the wrong length"),
        (PATCH.replace(b"dcmZQz", b"dcmZQy"), "does not inflate"),
        (PATCH.rstrip(b"\n"), "without its closing empty line"),
    ],
)
def test_a_hunk_git_would_not_write_is_an_error(bad: bytes, why: str) -> None:
    with pytest.raises(BinaryPatchError, match=why):
        binary_contents(bad)


def diff_of_a_changed_binary(tmp_path: Path, old: bytes, new: bytes) -> bytes:
    """``git diff --binary`` of a tracked binary file changed from ``old`` to ``new``."""
    git(tmp_path, "init", "-q", "-b", "main", "repo")
    repo = tmp_path / "repo"
    (repo / "logo.bin").write_bytes(old)
    git(repo, "add", "logo.bin")
    git(repo, "commit", "-q", "-m", "logo")
    (repo / "logo.bin").write_bytes(new)
    done = subprocess.run(
        ["git", "diff", "--binary", "--full-index"], cwd=repo, capture_output=True, check=True
    )
    return done.stdout


def test_a_secret_split_over_a_deltas_inserts_is_whole_again(tmp_path: Path) -> None:
    old = random.Random(7).randbytes(4000)
    secret = b"sk-" + b"a1b2c3d4e5" * 5  # inserts are at most 127 bytes: it spans two
    new = old[:2000] + b"\0" * 100 + secret + b"\0" * 100 + old[2000:]
    patch = diff_of_a_changed_binary(tmp_path, old, new)
    assert b"\ndelta " in patch  # git chose a delta (smaller than the new content)
    assert any(secret in part for part in binary_contents(patch))


def test_hunks_inflate_only_to_their_stated_size_and_the_limit() -> None:
    zeros = zlib.compress(b"\0" * 1_000_000, 9)  # ~1 kB that inflates to 1 MB
    lines = b"".join(encode_line(zeros[i : i + 52]) for i in range(0, len(zeros), 52))
    bomb = b"GIT binary patch\nliteral %d\n" + lines + b"\n"
    assert binary_contents(bomb % 1_000_000) == [b"\0" * 1_000_000]
    with pytest.raises(BinaryPatchError, match="inflate to its size"):
        binary_contents(bomb % 1_000)  # claims less than it inflates to
    with pytest.raises(BinaryPatchError, match="past the limit"):
        binary_contents(bomb % 1_000_000, limit=999_999)


def encode_line(chunk: bytes) -> bytes:
    """One binary patch line as git writes it: a length character, then base85."""
    size = len(chunk)
    head = chr(ord("A") + size - 1) if size <= 26 else chr(ord("a") + size - 27)
    padded = chunk + b"\0" * (-size % 4)
    return head.encode() + base64.b85encode(padded) + b"\n"
