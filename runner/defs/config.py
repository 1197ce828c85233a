"""The config model (DESIGN §4): every section and key, its default and its checks.

Read by :mod:`runner.defs.configload` (the file, ``${VAR}`` expansion, every problem at
once); what the environment and the command line add (paths, the state in force, the
redactor) is :mod:`runner.defs.environment`'s.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from runner.core.clock import check_timezone
from runner.core.dsn import dsn_secrets, is_postgres_url
from runner.core.pathglob import compile_glob
from runner.core.redaction import (
    is_secret_header,
    is_secret_name,
    url_secrets,
)

#: The name of the executor shipped in the package (``runner/builtin``).
BUILTIN = "builtin"


_MASK = "**********"
#: The largest size cap ``limits`` may set for any file: 64 MiB.
MAX_FILE_CAP = 64 * 1_048_576
#: The config file, and the ``mcp_servers_from`` file, are read up to this size.
CONFIG_MAX_BYTES = 1_048_576


def check_url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``value`` if it is a URL with one of ``schemes`` and a host, else ``ValueError``
    (whose message never repeats the value: a URL may carry a token)."""
    try:
        parts = urlsplit(value)
        ok = parts.scheme in schemes and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        wanted = ", ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"not a URL: want {wanted} and a host, like https://example.com")
    return value


class SandboxMode(StrEnum):
    """``sandbox:``: how model-driven runs' executors are confined (DESIGN §3, Trust)."""

    AUTO = "auto"
    """Use bubblewrap when it works; otherwise run unsandboxed with a warning."""
    REQUIRED = "required"
    """Refuse model-driven runs when bubblewrap does not work."""
    OFF = "off"
    """Never sandbox (each run still gets its own scratch workspace)."""


class _Strict(BaseModel):
    # allow_inf_nan=False: a timeout of .inf (or .nan) would wait for ever.
    # No use_attribute_docstrings: no schema of the config is printed, and reading
    # the docstrings from the source costs every command a few hundredths of a second.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def secret_values(self) -> list[str]:
        """Every secret this part of the config holds, for redaction (never to print)."""
        return []

    def __repr__(self) -> str:
        return self._redact(super().__repr__())

    def __str__(self) -> str:
        return self._redact(super().__str__())

    def _redact(self, text: str) -> str:
        """``text`` with every secret of this part masked, however deeply nested."""
        for secret in sorted(set(self.secret_values()), key=len, reverse=True):
            text = text.replace(repr(secret), repr(_MASK)).replace(secret, _MASK)
        return text


class McpServer(_Strict):
    """One executor: an MCP server reached over stdio, HTTP, SSE or an OpenClaw gateway."""

    command: str | None = None
    """Program to start for a stdio server, e.g. ``claude`` or ``mcp-server-git``."""
    args: list[str] = Field(default_factory=list)
    """Arguments for ``command``."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment for the stdio child (it inherits only HOME, PATH and a few more)."""
    cwd: str | None = None
    """Working folder for the stdio child; default the current folder."""
    url: str | None = None
    """``http(s)://`` for streamable HTTP (or SSE with ``transport: sse``); ``ws(s)://``
    for an OpenClaw gateway, reached through ``openclaw mcp serve --url URL``."""
    transport: Literal["streamable_http", "sse"] = "streamable_http"
    """For an ``http(s)://`` URL: the MCP transport the server speaks."""
    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP headers sent with every request (e.g. ``Authorization``)."""
    token_env: str = "OPENCLAW_GATEWAY_TOKEN"
    """For a ``ws(s)://`` gateway: the environment variable holding its token, passed
    to the bridge as ``--token-file`` (a temp file only this user can read) when set."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds a call may take when the task sets no ``timeout``."""
    max_concurrency: int = Field(default=4, ge=1)
    """Calls in flight at once on this server."""
    agent_tool: str | None = None
    """A tool that takes a whole prompt (e.g. an agent); prompt tasks go to it directly."""
    max_message_bytes: int = Field(default=16 * 1_048_576, ge=65536)
    """The largest message taken from the server; a larger answer fails its call."""
    opt_in_tools: list[str] = Field(default_factory=list)
    """Tools a model is offered only when the task's ``tools:`` names them (the
    built-in executor's ``run`` always is one)."""
    network: bool = False
    """Sandboxed starts of this executor (model-driven runs) may reach the network."""
    sandbox_paths: list[str] = Field(default_factory=list)
    """Absolute paths a sandboxed start of this executor may read (read-only), e.g. the
    folder a server is installed in; the command itself and omni's Python are always
    readable."""

    @field_validator("sandbox_paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not Path(path).is_absolute():
                raise ValueError(f"sandbox_paths entries must be absolute paths: {path}")
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of `command` (stdio) or `url` (http, sse, ws)")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, ("http", "https", "ws", "wss"))

    def secret_values(self) -> list[str]:
        """Values of secret-named ``env`` entries and headers, of ``Authorization``, and
        the credentials in ``url``."""
        values = [v for k, v in self.env.items() if is_secret_name(k)]
        values.extend(v for k, v in self.headers.items() if is_secret_header(k))
        values.extend(url_secrets(self.url))
        return [v for v in values if v]


class FaultHandler(_Strict):
    """When the gateway counts as down, and how often to probe (DESIGN §3)."""

    lite_llm_timeout: float = Field(default=1.0, gt=0)
    """Seconds a proxy call may go without response headers before the proxy's liveliness
    check decides whether it hangs (also that check's timeout)."""
    consecutive_failures: int = Field(default=2, ge=1)
    """Gateway failures in a row that leave normal mode (for degraded with a backup key,
    else brainstem)."""
    check_interval: float = Field(default=30.0, gt=0)
    """Seconds between probes while not in normal mode."""
    cloud_check_timeout: float = Field(default=10.0, gt=0)
    """Seconds the direct API may take to start answering before the runner enters
    brainstem mode; also the bound of an in-process model's probe."""


class RuleMatch(_Strict):
    """What a routing rule matches; every given part must match."""

    kind: Literal["coding", "general", "always_on"] | None = None
    """The task's ``kind``."""
    words: list[str] = Field(default_factory=list)
    """Any of these words in the description or prompt (case-insensitive)."""


class Rule(_Strict):
    """A routing rule: tasks matching ``match`` go to ``executor``."""

    match: RuleMatch
    """What the task must look like."""
    executor: str
    """The executor (a key of ``mcp_servers``, or ``builtin``)."""


class ModelTiers(_Strict):
    """Model names (``model_list`` entries) by price, each tier tried in listed order."""

    free: list[str] = Field(default_factory=list)
    """Free models, tried first under ``free`` and ``free_then_paid``."""
    paid: list[str] = Field(default_factory=list)
    """Paid models, tried under ``paid`` and after the free ones under ``free_then_paid``."""


class Budget(_Strict):
    """Spend caps in US dollars, from LiteLLM's cost figures; unset means no cap."""

    per_run_usd: float | None = Field(default=None, ge=0)
    """A run that would spend more stops ``failed``."""
    per_day_usd: float | None = Field(default=None, ge=0)
    """Runs stop ``failed`` once today's (UTC) spend reaches this."""


#: The longest a model is skipped after an HTTP 429, whatever its ``Retry-After`` says.
MAX_RATE_LIMIT_S = 86_400.0


class Router(_Strict):
    """How a task finds its executor and its model."""

    rules: list[Rule] = Field(default_factory=list)
    """Checked in order before the built-in rules; the first match wins."""
    default_executor: str = BUILTIN
    """The executor for tasks no rule matches."""
    model_tiers: ModelTiers = Field(default_factory=ModelTiers)
    """Free and paid model names."""
    default_model: str = "free_then_paid"
    """``free``, ``paid``, ``free_then_paid`` or a model name, for tasks without ``model``."""
    budget: Budget = Field(default_factory=Budget)
    """Spend caps."""
    rate_limited_for: float = Field(default=60.0, ge=0)
    """Seconds a model that answered HTTP 429 without ``Retry-After`` is skipped."""


class DirectApi(_Strict):
    """The provider reached directly with ``github_key`` in degraded mode."""

    model: str = "github/gpt-4o-mini"
    """A LiteLLM model string (GitHub Models: ``github/<model>``)."""
    api_base: str = "https://models.github.ai/inference"
    """The provider's endpoint."""

    @field_validator("api_base")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)


class Agent(_Strict):
    """Prompt tasks' tool-use loop."""

    max_turns: int = Field(default=10, ge=1)
    """Model turns a prompt task may take when it sets no ``max_turns``."""


class Dispatch(_Strict):
    """How runs are executed."""

    concurrency: int = Field(default=4, ge=1)
    """Runs in flight at once."""
    output_limit_bytes: int = Field(default=65536, ge=1024)
    """Output kept in a result; the rest is cut with a note."""
    retry_backoff: float = Field(default=2.0, ge=0)
    """Seconds before a failed run's first retry (its task's ``retries``); doubled for
    each later one, with full jitter (a random share of it)."""
    retry_backoff_max: float = Field(default=60.0, ge=0)
    """The longest wait between two attempts of a run, a ``Retry-After`` included."""


class Schedule(_Strict):
    """Defaults for ``schedule:`` in task files."""

    timezone: str = "UTC"
    """IANA time zone for cron schedules that set none."""
    misfire_grace: float = Field(default=3600.0, ge=0)
    """Seconds after a missed slot within which it still runs (once) after downtime."""

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)


class Service(_Strict):
    """Long-running mode (``omni run``)."""

    settle_ms: int = Field(default=100, ge=0)
    """A changed task file is read only after this long without change."""
    rescan_interval: float = Field(default=60.0, gt=0)
    """Seconds between full rescans of the tasks folder (catches missed events)."""
    shutdown_grace: float = Field(default=30.0, ge=0)
    """Seconds running tasks get to finish after SIGTERM before they return to idle."""


class GitSource(_Strict):
    """A git repository whose task files are pulled on an interval."""

    url: str
    """Clone URL or local path."""
    branch: str = "main"
    """Branch to follow."""
    poll_interval: float = Field(default=60.0, gt=0)
    """Seconds between pulls."""


class Sources(_Strict):
    """Where task files come from besides the tasks folder."""

    git: GitSource | None = None
    """A git source; unset means none."""


class Paths(_Strict):
    """Where the runner reads and writes; flags and env override these."""

    tasks: str | None = None
    """Task files (default ``./tasks``; env ``OMNI_TASKS``)."""
    results: str | None = None
    """Result files (default ``./results``; env ``OMNI_RESULTS``)."""
    state: str | None = None
    """The SQLite state file (default ``./.omni/state.db``; env ``OMNI_STATE``)."""


class StateDb(_Strict):
    """Where runs are kept: the SQLite file (``paths.state``) unless ``url`` names a
    shared PostgreSQL ledger."""

    url: str | None = None
    """``postgresql://user@host:port/db``: one ledger for services and ``run --once``
    shards on several machines (env ``OMNI_STATE_URL`` wins). Give the password as
    ``${VAR}`` or in env ``PGPASSWORD``, never in the file; it is masked in every output."""
    lease_seconds: float = Field(default=30.0, gt=0)
    """PostgreSQL: how long a claimed run stays an instance's without a heartbeat (sent
    every third of it); after that another instance settles it."""

    @field_validator("url")
    @classmethod
    def _postgres(cls, value: str | None) -> str | None:
        if value is not None and not is_postgres_url(value):
            raise ValueError("want a postgresql:// URL (the SQLite file is paths.state)")
        return value

    def secret_values(self) -> list[str]:
        """The password in ``url``, if any."""
        return dsn_secrets(self.url) if self.url else []


class Limits(_Strict):
    """Caps on input from outside (each bounded itself: a cap is no cap if it is huge)."""

    task_file_bytes: int = Field(default=1_048_576, ge=1, le=MAX_FILE_CAP)
    """Task files larger than this are refused before parsing."""
    result_file_bytes: int = Field(default=4_194_304, ge=65_536, le=MAX_FILE_CAP)
    """Result files (``results/**/<run-id>.json``, on disk or on the results branch)
    larger than this are skipped with a warning; keep it well above
    ``dispatch.output_limit_bytes``."""
    patch_bytes: int = Field(default=1_048_576, ge=1024, le=MAX_FILE_CAP)
    """A model-driven run's proposed change (its ``.patch``) larger than this is not
    kept; the result says so."""


class Config(_Strict):
    """The whole ``config.yaml``. Every key is optional."""

    model_list: list[dict[str, Any]] = Field(default_factory=list)
    """LiteLLM's own ``model_list`` (``model_name``, ``litellm_params``, ``model_info``)."""
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    """LiteLLM's own ``litellm_settings`` (e.g. ``allowed_fails``, ``num_retries``)."""
    lite_llm_url: str | None = None
    """A LiteLLM proxy; unset means an in-process router over ``model_list``."""
    lite_llm_key: SecretStr | None = None
    """The proxy's key (env ``LITELLM_API_KEY`` when unset)."""
    request_timeout: float = Field(default=600.0, gt=0)
    """Seconds a whole model call may take."""
    github_key: SecretStr | None = None
    """Backup key for the direct API in degraded mode (env ``GITHUB_LITELLM_KEY``)."""
    direct_api: DirectApi = Field(default_factory=DirectApi)
    """The provider used with ``github_key``."""
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict)
    """Executors by name; ``builtin`` is always there unless you redefine it."""
    mcp_servers_from: str | None = None
    """A Claude Code ``.mcp.json`` or Claude Desktop config whose ``mcpServers`` are added."""
    fault_handler: FaultHandler = Field(default_factory=FaultHandler)
    """Gateway failure detection and probing."""
    router: Router = Field(default_factory=Router)
    """Executor rules, model tiers, budget."""
    agent: Agent = Field(default_factory=Agent)
    """Prompt tasks."""
    dispatch: Dispatch = Field(default_factory=Dispatch)
    """Concurrency and output limits."""
    workspace: str | None = None
    """The built-in executor's root folder (the repository); default the current folder."""
    sandbox: SandboxMode = SandboxMode.AUTO
    """Model-driven runs' executors under bubblewrap: ``auto``, ``required`` or ``off``."""
    protected_paths: list[str] = Field(default_factory=list)
    """Globs (relative to ``workspace``) the built-in executor's file tools refuse and no
    proposed change may touch, besides ``.git``, ``.github``, ``.omni``, the tasks and
    results folders and the config file."""
    schedule: Schedule = Field(default_factory=Schedule)
    """Schedule defaults."""
    service: Service = Field(default_factory=Service)
    """Service mode."""
    sources: Sources = Field(default_factory=Sources)
    """Extra task sources."""
    paths: Paths = Field(default_factory=Paths)
    """Folders and the state file."""
    state: StateDb = Field(default_factory=StateDb)
    """A shared PostgreSQL ledger instead of the SQLite file."""
    limits: Limits = Field(default_factory=Limits)
    """Input caps."""

    @field_validator("lite_llm_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("sandbox", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (and `on` as true).
        if value is False:
            return SandboxMode.OFF
        if value is True:
            raise ValueError("write `auto` or `required` (a bare `on` reads as true)")
        return value

    @field_validator("protected_paths")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            compile_glob(pattern)  # a ValueError names the pattern
        return value

    @field_validator("model_list")
    @classmethod
    def _check_model_list(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, entry in enumerate(value):
            params = entry.get("litellm_params")
            if not isinstance(entry.get("model_name"), str) or not isinstance(params, dict):
                raise ValueError(
                    f"model_list[{i}] needs `model_name` and a `litellm_params` mapping"
                )
            if not isinstance(params.get("model"), str):
                raise ValueError(f"model_list[{i}].litellm_params needs `model`")
        return value

    @model_validator(mode="after")
    def _room_for_results(self) -> Config:
        # A run's output is at most output_limit_bytes, but its result file holds more
        # (JSON escapes, the agent's transcript): leave room, or runs could write result
        # files that every reader then skips as too large.
        if self.limits.result_file_bytes < 4 * self.dispatch.output_limit_bytes:
            raise ValueError(
                "limits.result_file_bytes must be at least 4 times dispatch.output_limit_bytes"
                f" ({4 * self.dispatch.output_limit_bytes:,})"
            )
        return self

    def secret_values(self) -> list[str]:
        """Every secret this config knows, for redaction (never to print)."""
        values = [s.get_secret_value() for s in (self.lite_llm_key, self.github_key) if s]
        for entry in self.model_list:
            key = entry.get("litellm_params", {}).get("api_key")
            if isinstance(key, str):
                values.append(key)
        for server in self.mcp_servers.values():
            values.extend(server.secret_values())
        git = self.sources.git
        for url in (self.lite_llm_url, self.direct_api.api_base, git.url if git else None):
            values.extend(url_secrets(url))
        values.extend(self.state.secret_values())
        return [v for v in values if v]
