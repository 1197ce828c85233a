"""``omni init``: scaffold ``config.yaml``, ``tasks/`` with examples, and the workflow.

The files come from ``runner/templates/``; the workflow is the one the README's "Run it
in GitHub Actions" shows. Existing files are kept unless ``force`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

#: (template name, where it goes under the repository).
FILES: tuple[tuple[str, str], ...] = (
    ("config.yaml", "config.yaml"),
    ("hello.yaml", "tasks/hello.yaml"),
    ("hourly.yaml", "tasks/hourly.yaml"),
    ("omni.yml", ".github/workflows/omni.yml"),
)


class Outcome(StrEnum):
    """What ``init`` did with one file."""

    CREATED = "created"
    KEPT = "kept"
    """It existed and ``--force`` was not given."""
    REPLACED = "replaced"


@dataclass(frozen=True, slots=True)
class Scaffolded:
    """One file ``init`` looked at."""

    path: Path
    outcome: Outcome


def template(name: str) -> str:
    """The text of ``runner/templates/<name>``."""
    return resources.files("runner").joinpath("templates", name).read_text(encoding="utf-8")


def init(root: Path, *, force: bool = False) -> list[Scaffolded]:
    """Write the scaffold under ``root``; never overwrite a file unless ``force``."""
    done: list[Scaffolded] = []
    for name, target in FILES:
        path = root / target
        existed = path.exists()
        if existed and not force:
            done.append(Scaffolded(path, Outcome.KEPT))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template(name), encoding="utf-8")
        done.append(Scaffolded(path, Outcome.REPLACED if existed else Outcome.CREATED))
    return done
