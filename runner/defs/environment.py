"""What the environment and the command line add to the config: the paths in force
(flag > env > config > default), the state in force (a SQLite file, or a PostgreSQL
ledger from ``OMNI_STATE_URL`` or ``state.url``), which config file to read, and the
redactor of every secret the config and the environment hold.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from runner.core.dsn import dsn_secrets, is_postgres_url
from runner.core.errors import ConfigError
from runner.core.redaction import Redactor, secret_env_values

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.defs.config import Config


#: The environment variable naming a PostgreSQL ledger (wins over ``state.url``).
STATE_URL_VARIABLE = "OMNI_STATE_URL"


def redactor_for(config: Config, environ: Mapping[str, str]) -> Redactor:
    """The redactor of every secret the config and the environment hold (DESIGN §4)."""
    in_url = dsn_secrets(environ.get(STATE_URL_VARIABLE, ""))
    return Redactor([*config.secret_values(), *secret_env_values(environ), *in_url])


class ResolvedPaths(BaseModel):
    """The folders and state file in force, after flag > env > config > default."""

    model_config = ConfigDict(frozen=True)

    config: Path | None
    tasks: Path
    results: Path
    state: Path
    state_url: str | None = Field(default=None, repr=False)
    """A PostgreSQL ledger (env ``OMNI_STATE_URL`` > ``state.url``); then ``state`` only
    places what lives beside it (the git source's clone). A secret: never in a repr;
    show :func:`runner.core.dsn.shown` of it."""


def resolve_paths(
    config: Config,
    config_path: Path | None,
    *,
    tasks: Path | None = None,
    results: Path | None = None,
    state: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedPaths:
    """Apply the precedence flag > env > config > default to each path; a ledger URL
    from env ``OMNI_STATE_URL`` or ``state.url`` (a bad one is a :class:`ConfigError`)."""
    env = os.environ if environ is None else environ
    url = env.get(STATE_URL_VARIABLE) or config.state.url
    if url and not is_postgres_url(url):
        raise ConfigError(
            f"{STATE_URL_VARIABLE}: want a postgresql:// URL (the SQLite file is OMNI_STATE)"
        )

    def pick(flag: Path | None, var: str, from_config: str | None, default: str) -> Path:
        if flag is not None:
            return flag
        if env.get(var):
            return Path(env[var])
        if from_config:
            return Path(from_config)
        return Path(default)

    return ResolvedPaths(
        config=config_path,
        tasks=pick(tasks, "OMNI_TASKS", config.paths.tasks, "tasks"),
        results=pick(results, "OMNI_RESULTS", config.paths.results, "results"),
        state=pick(state, "OMNI_STATE", config.paths.state, ".omni/state.db"),
        state_url=url or None,
    )


def config_path_from(
    flag: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """The config file to read and whether it was asked for by name (then it must exist):
    ``--config`` > ``OMNI_CONFIG`` > ``./config.yaml``."""
    env = os.environ if environ is None else environ
    if flag is not None:
        return flag, True
    if env.get("OMNI_CONFIG"):
        return Path(env["OMNI_CONFIG"]), True
    return Path("config.yaml"), False
