"""``omni init``: scaffold ``config.yaml``, ``tasks/`` with examples, and the workflow.

The files come from ``runner/templates/``; the workflow is the one the README's "Run it
in GitHub Actions" shows, pinned to this omni's version (``{{version}}`` in the
template). Existing files are kept unless ``force`` is given; a file that cannot be
written is an :class:`~runner.core.errors.OmniError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import TYPE_CHECKING

from runner.core.errors import OmniError
from runner.core.version import omni_version

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
    """The text of ``runner/templates/<name>``, ``{{version}}`` replaced by this omni's."""
    text = resources.files("runner").joinpath("templates", name).read_text(encoding="utf-8")
    return text.replace("{{version}}", omni_version())


def init(root: Path, *, force: bool = False) -> list[Scaffolded]:
    """Write the scaffold under ``root``; never overwrite a file unless ``force``."""
    done: list[Scaffolded] = []
    for name, target in FILES:
        path = root / target
        existed = path.exists()
        if existed and not force:
            done.append(Scaffolded(path, Outcome.KEPT))
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(template(name), encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise OmniError(f"cannot write {path}: {reason}") from None
        done.append(Scaffolded(path, Outcome.REPLACED if existed else Outcome.CREATED))
    return done


def next_steps(root: Path) -> list[str]:
    """What to do after ``omni init`` in ``root``, printed once the files are written."""
    steps = ["next steps:"]
    if root.absolute() != root.cwd():
        steps.append(f"  cd {root}")
    steps += [
        "  omni validate                check the task files and the config",
        "  omni run --once --dry-run    see what would run, and why",
        "  omni run --once              run the due tasks; results land in results/",
        "  omni tasks                   every task, its schedule and its last run",
        "  replace OWNER in .github/workflows/omni.yml with where you keep omni,",
        "  then commit config.yaml, tasks/ and .github/ and push",
    ]
    return steps
