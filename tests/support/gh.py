"""A recording stand-in for the GitHub CLI: GitHub cannot be reached from the tests.

Every call is appended to the JSON file ``$GH_LOG``; ``gh pr list --head H`` answers
pull request 7 once a ``gh pr create --head H`` was recorded, else none, and none again
once that pull request was closed (a ``gh pr close`` right after listing ``H``, as omni
does) until another is created. The title and body (the ``--body-file``'s text, read when
called) of every ``gh pr create`` and ``gh pr edit`` go to ``gh-texts.json`` beside it:
what GitHub would show, for the session-wide leak scan and for tests to read
(:func:`texts`).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

STUB = """#!PYTHON
import json, os, sys
log = os.environ["GH_LOG"]
calls = json.load(open(log)) if os.path.exists(log) else []
calls.append(sys.argv[1:])
json.dump(calls, open(log, "w"))
args = sys.argv[1:]
if "--body-file" in args:
    texts_path = os.path.join(os.path.dirname(log), "gh-texts.json")
    texts = json.load(open(texts_path)) if os.path.exists(texts_path) else []
    body = open(args[args.index("--body-file") + 1], encoding="utf-8").read()
    title = args[args.index("--title") + 1] if "--title" in args else None
    texts.append({"call": args[:2], "title": title, "body": body})
    json.dump(texts, open(texts_path, "w"))
if sys.argv[1:3] == ["pr", "list"]:
    head = sys.argv[sys.argv.index("--head") + 1]
    is_open = False
    for before, call in zip([[]] + calls, calls):
        if call[:2] == ["pr", "create"] and call[call.index("--head") + 1] == head:
            is_open = True
        listed = before[:2] == ["pr", "list"] and before[before.index("--head") + 1] == head
        if call[:2] == ["pr", "close"] and listed:
            is_open = False
    print(json.dumps([{"number": 7}] if is_open else []))
"""


def install(folder: Path) -> Path:
    """Write the stub as ``folder/gh``; returns ``folder`` (to put first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    stub = folder / "gh"
    stub.write_text(STUB.replace("PYTHON", sys.executable, 1), encoding="utf-8")
    stub.chmod(0o755)
    return folder


def calls(log: Path) -> list[list[str]]:
    """The recorded calls, oldest first."""
    found: list[list[str]] = json.loads(log.read_text()) if log.exists() else []
    return found


def texts(log: Path) -> list[dict[str, str | None]]:
    """The title and body of every ``gh pr create`` and ``gh pr edit``, oldest first."""
    path = log.with_name("gh-texts.json")
    found: list[dict[str, str | None]] = json.loads(path.read_text()) if path.exists() else []
    return found
