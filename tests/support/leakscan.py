"""The session-wide leak scan (issue 13, "Done means"): after the suite, every planted
secret (:mod:`tests.support.planted`) is looked for in everything the suite's runs left
under pytest's basetemp, in each form omni redacts (plain, base64 at each alignment,
standard and URL-safe, hex in either case, URL-encoded: ``runner.core.redaction``'s
``encoded_forms``) and split by separators (a form's letters and digits with anything
between them: a wrapped line, a JSON escape).

Where it looks:

- every regular file (result files, ``.md``, patches, repair tasks, logs in both
  formats, CLI output a test saved, the ``gh`` stub's record of pull-request titles and
  bodies, git's own files: config, refs, the reflog in ``logs/``) as raw bytes; the
  contents carried by a patch's binary hunks (deflated, base85) in the clear;
- every SQLite file (the state database): its raw bytes, and every text and blob cell of
  every table (a long cell is cut by overflow pages in the raw file);
- every git repository and bare remote: every object, reachable or not, inflated
  (``git cat-file --batch-all-objects --batch``: each commit message, tree and file
  content of every branch, stash and dangling commit, which is all ``git log -p --all``
  can show, and more). Git's object files themselves are deflated and not read raw.

Not scanned: the inputs a test wrote on purpose, which :data:`PLANTED_INPUTS` lists, one
glob each with why (and git blobs whose content is that of such a file: the test
committed it); and Python virtual environments (a folder holding ``pyvenv.cfg``: the
workflow test's jobs install omni into one, hundreds of MB of packages and no output of
a run). A hit names the place, its kind and the form found; never the secret.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from runner.core.gitpatch import BinaryPatchError, binary_contents
from runner.core.redaction import encoded_forms

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping


@dataclass(frozen=True, slots=True)
class Planted:
    """An input a test wrote holding a planted secret on purpose: not a leak."""

    test: str
    """The test's name (without parameters): its ``tmp_path`` folders are this name, its
    non-word characters made ``_``, cut at 30 characters, then a number (pytest's rule)."""
    path: str
    """A glob (``fnmatch``: ``*`` crosses ``/``) on the path inside that folder."""
    why: str

    def covers(self, rel: str) -> bool:
        """True if ``rel`` (relative to basetemp) is this input, in any run of the test."""
        folder, _, inside = rel.partition("/")
        prefix = re.sub(r"\W", "_", self.test)[:30]
        number = folder.removeprefix(prefix)
        return number != folder and number.isdigit() and fnmatch.fnmatchcase(inside, self.path)


#: A hostile-model test's deployment (tests/integration/test_hostile_model.py).
_HOSTILE_MODEL_TESTS = (
    "test_a_hostile_model_stays_in_its_workspace_and_learns_no_secret",
    "test_with_run_listed_the_sandbox_holds",
    "test_the_network_is_off_for_a_model_run",
)

#: The only files not scanned: each an input some test planted a secret in on purpose.
PLANTED_INPUTS: tuple[Planted, ...] = (
    *(
        planted
        for test in _HOSTILE_MODEL_TESTS
        for planted in (
            Planted(test, "home/.git-credentials", "the credential a hostile model goes for"),
            Planted(test, "repo/.git/config", "the checkout's credential (extraheader)"),
            Planted(
                test,
                "repo/notes/committed-by-mistake.txt",
                "a secret the repository's owner committed; a hostile model reads it",
            ),
        )
    ),
    *(
        Planted(test, "config.yaml", "the test's config: a model_list api_key")
        for test in (
            "test_100_prompt_runs_on_a_healthy_model_change_no_mode_and_fail_none",
            "test_doctor_passes_20_times_out_of_20_on_healthy_models",
        )
    ),
    Planted(
        "test_a_sandboxed_run_cannot_write_or_read_outside_its_workspace",
        "outside/.git-credentials",
        "a credential beside the workspace, which the sandboxed run must not read",
    ),
    Planted(
        "test_publish_takes_in_an_artifact_checks_it_and_opens_pull_requests",
        "artifact/docs/01YYYYYYYYYYYYYYYYYYYYYYYY.json",
        "a tampered artifact's result holding the publish job's token (refused)",
    ),
    Planted(
        "test_a_secret_in_a_binary_file_of_a_patch_is_refused",
        "work/results/docs/*.patch",
        "a crafted patch whose binary file holds the key (refused)",
    ),
)

SQLITE_HEADER = b"SQLite format 3\0"
_NOT_ALNUM = bytes(b for b in range(256) if not (b < 128 and chr(b).isalnum()))
_JSON_ESCAPE = re.compile(rb"\\(?:u[0-9a-fA-F]{4}|.)")
#: Split forms are looked for only when this many letters and digits long (as redaction).
_MIN_SPLIT = 10
_GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


@dataclass(frozen=True, slots=True)
class Hit:
    """A planted secret found: where, in what kind of place, in which forms."""

    where: str
    kind: str
    found: str
    """Which secret (its name in :mod:`tests.support.planted`) and in which forms."""

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.found}"


@dataclass(slots=True)
class Scan:
    """What a scan looked at, and what it found."""

    hits: list[Hit] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    databases: int = 0
    repositories: int = 0
    objects: int = 0
    environments: int = 0
    """Python virtual environments not read (installed packages, no run's output)."""
    unreadable: list[str] = field(default_factory=list)
    """Repositories or databases that could not be read (their raw files still were)."""
    skipped: list[str] = field(default_factory=list)
    """Planted inputs left out, relative to the root."""
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: what was scanned, how long it took, how many hits."""
        return (
            f"leak scan: {self.files} files ({self.bytes / 1e6:.1f} MB), {self.databases} "
            f"SQLite databases, {self.objects} git objects in {self.repositories} "
            f"repositories, {len(self.unreadable)} unreadable, {len(self.skipped)} planted "
            f"inputs and {self.environments} virtual environments left out, in "
            f"{self.seconds:.2f} s: {len(self.hits)} hits"
        )


class Needles:
    """Every form of every secret, as bytes, with a name that does not show it."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self.forms: dict[bytes, str] = {}
        for name, secret in secrets.items():
            raw = secret.encode()
            named = {secret: "plain", raw.hex(): "hex", raw.hex().upper(): "hex"}
            named |= {f: "base64" for f in encoded_forms(secret) if f not in named}
            named.setdefault(quote(secret, safe=""), "URL-encoded")
            for form, how in named.items():
                self.forms.setdefault(form.encode(), f"{name} ({how})")
        self.split = {
            form.translate(None, _NOT_ALNUM): f"{what[:-1]}, split)"
            for form, what in self.forms.items()
            if len(form.translate(None, _NOT_ALNUM)) >= _MIN_SPLIT
        }

    def find(self, data: bytes) -> list[str]:
        """The names of the forms ``data`` holds, sorted."""
        found = {what for form, what in self.forms.items() if form in data}
        if not found and self.split:
            flat = data
            if b"\\" in flat:
                flat = _JSON_ESCAPE.sub(b"", flat)
            flat = flat.translate(None, _NOT_ALNUM)
            found = {what for letters, what in self.split.items() if letters in flat}
        return sorted(found)


def kind_of(rel: str, data: bytes) -> str:
    """What kind of output the file at ``rel`` (relative to the root) is."""
    parts = rel.split("/")
    name = parts[-1]
    in_git = any(p == ".git" or p.endswith(".git") for p in parts[:-1])
    checks = (
        (data.startswith(SQLITE_HEADER), "SQLite database"),
        (name.endswith(("-wal", "-journal", "-shm")), "SQLite journal"),
        (in_git and "logs" in parts, "git reflog"),
        (in_git, "git metadata"),
        ("repair" in parts[:-1] and "tasks" in parts[:-1], "repair task"),
        (name.endswith(".patch"), "patch"),
        (name.endswith(".md"), "Markdown"),
        ("results" in parts[:-1] and name.endswith(".json"), "result file"),
        ("results" in parts[:-1], "results folder"),
        (name.startswith("gh") and name.endswith(".json"), "gh stub record (PR titles, bodies)"),
        (name.endswith((".log", ".jsonl")) or ".log." in name, "log"),
        (name.endswith((".out", ".err")), "saved CLI output"),
    )
    return next((kind for hit, kind in checks if hit), "other file")


def blob_id(data: bytes) -> str:
    """The git (SHA-1) object id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _is_git_dir(folder: Path, names: Iterable[str]) -> bool:
    listed = set(names)
    return "HEAD" in listed and "objects" in listed and (folder / "objects").is_dir()


def _walk(root: Path) -> Iterator[tuple[Path, bool | None]]:
    """Every regular file under ``root`` (``True`` with it), every git folder
    (``False``) and every virtual environment (``None``); neither git's object folders
    nor virtual environments are entered."""
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if "pyvenv.cfg" in files:
            yield here, None
            dirs.clear()
            continue
        if _is_git_dir(here, [*dirs, *files]):
            yield here, False
            dirs.remove("objects")
        dirs.sort()
        for name in sorted(files):
            path = here / name
            if path.is_file() and not path.is_symlink():
                yield path, True


class Scanner:
    """One scan of one folder (pytest's basetemp) for ``secrets`` (name -> value)."""

    def __init__(
        self,
        root: Path,
        secrets: Mapping[str, str],
        planted: Iterable[Planted] = PLANTED_INPUTS,
    ) -> None:
        self.root = root
        self.needles = Needles(secrets)
        self.planted = tuple(planted)
        self.report = Scan()
        self._planted_blobs: set[str] = set()
        self._seen_objects: set[str] = set()

    def run(self) -> Scan:
        """Scan every file, database and repository under the root."""
        started = time.perf_counter()
        git_dirs = []
        for path, is_file in _walk(self.root):
            if is_file:
                self._file(path)
            elif is_file is None:
                self.report.environments += 1
            else:
                git_dirs.append(path)
        for git_dir in git_dirs:
            self._repository(git_dir)
        self.report.seconds = time.perf_counter() - started
        return self.report

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _hit(self, where: str, kind: str, data: bytes) -> None:
        if found := self.needles.find(data):
            self.report.hits.append(Hit(where, kind, ", ".join(found)))

    def _file(self, path: Path) -> None:
        rel = self._rel(path)
        try:
            data = path.read_bytes()
        except OSError:
            self.report.unreadable.append(rel)
            return
        if any(p.covers(rel) for p in self.planted):
            self.report.skipped.append(rel)
            self._planted_blobs.add(blob_id(data))
            return
        self.report.files += 1
        self.report.bytes += len(data)
        kind = kind_of(rel, data)
        self._hit(rel, kind, data)
        if kind == "patch" or b"\nGIT binary patch\n" in data:
            try:
                for content in binary_contents(data):
                    self._hit(rel, f"{kind} (a binary hunk, inflated)", content)
            except BinaryPatchError:
                self.report.unreadable.append(rel)
        if kind == "SQLite database":
            self._database(path, rel)

    def _database(self, path: Path, rel: str) -> None:
        self.report.databases += 1
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                listed = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                for table in [r[0] for r in listed]:
                    self._table(db, rel, table)
        except sqlite3.Error:
            self.report.unreadable.append(rel)

    def _table(self, db: sqlite3.Connection, rel: str, table: str) -> None:
        """Every text and blob cell of ``table`` (looked at together first: fast)."""
        quoted = table.replace('"', '""')
        columns = [c[1] for c in db.execute(f'PRAGMA table_info("{quoted}")')]
        cells = [
            (column, value.encode() if isinstance(value, str) else value)
            for row in db.execute(f'SELECT * FROM "{quoted}"')  # our own names
            for column, value in zip(columns, row, strict=True)
            if isinstance(value, str | bytes)
        ]
        if self.needles.find(b"\0".join(cell for _, cell in cells)):
            for column, cell in cells:
                self._hit(f"{rel}: table {table}, column {column}", "SQLite cell", cell)

    def _repository(self, git_dir: Path) -> None:
        rel = self._rel(git_dir)
        done = subprocess.run(
            ["git", "--git-dir", str(git_dir), "cat-file", "--batch-all-objects", "--batch"],
            capture_output=True,
            env=_GIT_ENV,
            check=False,
        )
        if done.returncode != 0:
            self.report.unreadable.append(rel)
            return
        self.report.repositories += 1
        out, offset = done.stdout, 0
        while offset < len(out):
            end = out.index(b"\n", offset)
            oid, kind, size = out[offset:end].decode().split(" ")
            content = out[end + 1 : end + 1 + int(size)]
            offset = end + 1 + int(size) + 1
            if oid in self._seen_objects:
                continue
            self._seen_objects.add(oid)
            self.report.objects += 1
            if kind == "blob" and oid in self._planted_blobs:
                continue
            self._hit(f"{rel}: {kind} {oid}", f"git {kind}", content)


def scan(
    root: Path, secrets: Mapping[str, str], planted: Iterable[Planted] = PLANTED_INPUTS
) -> Scan:
    """Look for ``secrets`` (name -> value) everywhere under ``root`` (see the module
    docstring)."""
    return Scanner(root, secrets, planted).run()
