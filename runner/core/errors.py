"""The project's own small error hierarchy.

Library errors (MCP, LiteLLM, git, YAML, SQLite) are translated into these where they
enter, so callers handle one family and every message names what it is about.
"""

from __future__ import annotations


class OmniError(Exception):
    """Base of every error the runner raises on purpose."""

    retryable: bool = False
    """Whether another attempt of the same run could help (the dispatcher's one rule)."""


class UsageError(OmniError):
    """The command was asked for something that is not there (an unknown ``--task``, a
    missing tasks folder) or an option that does not apply; the CLI exits 2."""


class TaskFileError(OmniError):
    """One problem in one task file (or the config file), reported as
    ``PATH:LINE: FIELD: message``."""

    def __init__(self, path: str, line: int | None, field: str, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        """The one-line form used by ``omni validate`` and the loader."""
        line = self.line if self.line is not None else 1
        return f"{self.path}:{line}: {self.field}: {self.message}"


class ConfigError(OmniError):
    """The config file or environment is wrong: every problem found, each naming the
    file, the line and the key (never the value: it may be a secret)."""

    def __init__(self, problems: str | list[TaskFileError]) -> None:
        self.problems = [] if isinstance(problems, str) else list(problems)
        """Each problem; empty when the error is one sentence (e.g. ``OMNI_NOW``)."""
        text = problems if isinstance(problems, str) else "\n".join(self.lines())
        super().__init__(text)

    def lines(self) -> list[str]:
        """One ``PATH:LINE: KEY: message`` line a problem (or the sentence)."""
        return [p.render() for p in self.problems] or [str(self)]


class InvalidTaskFile(OmniError):
    """A task file with one or more problems; each is a :class:`TaskFileError`."""

    def __init__(self, problems: list[TaskFileError]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class FileRefusedError(OmniError):
    """A file omni will not read: not a regular file (a FIFO, a device, a folder, a
    symbolic link where none is allowed), or larger than its size cap."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ResultFileError(OmniError):
    """A result file that does not pass the checks every result file passes before it
    counts (``runner.state.resultcheck``); ``where`` is its path under the results folder."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class StoreError(OmniError):
    """The state database cannot be used (newer schema, corrupt file, locked)."""


class StaleRunError(StoreError):
    """A run moved from a record that no longer matches its row (someone else moved it)."""


class IllegalTransitionError(StoreError):
    """A run or mode change that the transition tables in ``states.py`` forbid."""


class ExecutorError(OmniError):
    """An executor problem; names the executor and, where there is one, the tool."""

    retryable = True

    def __init__(self, executor: str, message: str, tool: str | None = None) -> None:
        self.executor = executor
        self.tool = tool
        where = f"executor {executor!r}" + (f", tool {tool!r}" if tool else "")
        super().__init__(f"{where}: {message}")


class ExecutorUnavailableError(ExecutorError):
    """The executor could not be started or reached, or its connection died."""


class ToolError(ExecutorError):
    """The tool does not exist or refused its arguments: the same call would fail again."""

    retryable = False


class ToolReportedError(ExecutorError):
    """The tool ran and answered with an error (``is_error``); another attempt may pass."""


class ExecutorTimeoutError(ExecutorError):
    """The call got no answer within its timeout; the connection stays usable."""


class ModelError(OmniError):
    """A model call failed; names the model and, where known, its tier."""

    retryable = True

    def __init__(
        self,
        model: str | None,
        message: str,
        tier: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.model = model
        self.tier = tier
        self.retry_after = retry_after
        """Seconds the far end asked to wait before trying again (``Retry-After``)."""
        where = f"model {model!r}" + (f" ({tier})" if tier else "") if model else "model"
        super().__init__(f"{where}: {message}")


class ModelUnavailableError(ModelError):
    """No model of the task's choice answered usably (each step's reason is listed)."""

    def __init__(
        self,
        model: str | None,
        message: str,
        tier: str | None = None,
        *,
        retry_after: float | None = None,
        gateway_down: bool = False,
    ) -> None:
        super().__init__(model, message, tier, retry_after=retry_after)
        self.gateway_down = gateway_down
        """True when nothing answered at all: every model asked failed by connection,
        5xx or timeout (or the proxy itself is down) -- a gateway failure (DESIGN §3)."""


class CloudsDownError(ModelError):
    """Brainstem mode: neither the gateway nor the direct API answers; the run waits."""


class TaskTimeoutError(OmniError):
    """A run took longer than its task's ``timeout``."""

    retryable = True


class BudgetExceededError(OmniError):
    """A run stopped because it would pass ``router.budget.per_run_usd`` or ``per_day_usd``."""


class AgentError(OmniError):
    """A prompt task's agent loop stopped without an answer (e.g. ``max_turns``), or its
    task asks for tools its executor does not offer."""


class GitOpsError(OmniError):
    """A git step (fetch, commit, push) failed; the message says what and what to do.

    Raised after the runs it concerns have written their result files, which stay on disk.
    """


class SourceError(OmniError):
    """A task source failed (the watched folder, or the git source's clone, fetch or
    checkout); the message names the source. The service logs it and keeps running."""


class ServiceError(OmniError):
    """Service mode cannot start (e.g. another service already uses the state file)."""


class SandboxUnavailableError(OmniError):
    """``sandbox: required``, and no sandbox works on this machine; the message names the
    cause and the fix. Not retried: the machine will not change within a run."""


class WorkspaceError(OmniError):
    """A model-driven run's own workspace could not be made or read (a git step failed);
    the message says which."""
