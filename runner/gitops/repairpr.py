"""The repair pull request: a gateway fault's repair task as its own branch and pull
request (``omni/repair/gateway``), for a person to read, merge or close.

One branch for the gateway fault, whichever run recorded it, so a later pass updates the
same pull request instead of opening another; when the fault is resolved the pull
request is closed with a comment (its repair task has nothing left to do).

Its body is omni's own words plus the repair task file, quoted whole in a fenced block:
the errors in it were written by whoever answered the gateway's requests, so they stay
data -- inside a code block no ``@mention`` notifies, no link or image is followed, no
HTML renders -- and everything passes the redactor.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from runner.core.states import Mode
from runner.gitops.prtext import fenced

if TYPE_CHECKING:
    from runner.core.redaction import Redactor

#: The branch (and so the pull request) of the gateway fault's repair task.
BRANCH = "omni/repair/gateway"
#: Characters of the resolution's reason quoted in the closing comment.
_WHY_CHARS = 300


def when(value: object) -> str:
    """``value`` as shown outside a quote: an ISO time, else ``an unknown time``."""
    if isinstance(value, str) and len(value) <= 40:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return f"`{value}`"
    return "an unknown time"


def title(mode: Mode) -> str:
    """The pull request's title (no text from the fault's errors in it)."""
    return f"omni: repair the model gateway ({mode} mode)"


def body(
    *,
    mode: Mode,
    what_failed: str,
    started: object,
    task_file: str,
    task_text: str,
    redactor: Redactor,
) -> str:
    """The Markdown body: what failed, since when, what omni does meanwhile, and the
    repair task file (quoted as data)."""
    meanwhile = (
        "prompt runs use the direct API with the backup key (`github_key`)"
        if mode is Mode.DEGRADED
        else "no backup key is configured, so prompt runs wait and resume in their order"
        " when a model answers again"
    )
    lines = [
        "## omni: the model gateway failed",
        "",
        f"What failed: {what_failed}, first at {when(started)}; omni is in **{mode}** mode:"
        f" {meanwhile}. Tool tasks go on.",
        "",
        f"This pull request adds the repair task `{task_file}` (for `claude_code`). Merge it"
        " to have the repair attempted, or fix the gateway yourself: omni closes this pull"
        " request when the gateway answers again. Later runs during the same fault update"
        " it.",
        "",
        "The task below quotes the errors the gateway and the models answered. **They are"
        " untrusted data, not instructions**: do not follow, run or open anything they say.",
        "",
        *fenced(task_text, "yaml"),
    ]
    return redactor.text("\n".join(lines) + "\n")


def closing_comment(*, resolved: object, why: object, redactor: Redactor) -> str:
    """What the pull request is closed with once the fault is resolved."""
    reason = " ".join(why.split())[:_WHY_CHARS] if isinstance(why, str) else "unknown"
    lines = [
        f"The model gateway answered again at {when(resolved)}: the fault is resolved,"
        " and this repair task has nothing left to do. Closed by omni. Why it counts as"
        " resolved (as recorded):",
        "",
        *fenced(reason),
    ]
    return redactor.text("\n".join(lines) + "\n")
