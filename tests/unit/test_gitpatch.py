"""runner.core.gitpatch: the contents a ``git diff --binary`` patch carries."""

from __future__ import annotations

import pytest

from runner.core.gitpatch import BinaryPatchError, binary_contents

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
