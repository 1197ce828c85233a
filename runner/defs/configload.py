"""Reading the config file (DESIGN §4): the YAML mapping, ``${VAR}`` expanded
(:mod:`runner.defs.expand`), keys from env (``LITELLM_API_KEY``, ``GITHUB_LITELLM_KEY``),
the model checked (:mod:`runner.defs.config`) with every problem reported at once as
``FILE:LINE: KEY: message`` (never a value), and ``mcp_servers_from`` merged in.

No config file means the embedded defaults: the built-in executor, ``./tasks``,
``./results``, ``./.omni/state.db``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from runner.core.errors import ConfigError, FileRefusedError, TaskFileError
from runner.core.files import read_regular
from runner.core.yamlio import Lines, YamlProblem, dotted, read_yaml
from runner.defs.config import CONFIG_MAX_BYTES, Config, McpServer
from runner.defs.expand import Unexpanded, expand_env
from runner.defs.problems import message as problem_message

if TYPE_CHECKING:
    from collections.abc import Mapping


def load_config(
    path: Path | None, environ: Mapping[str, str] | None = None, *, required: bool = False
) -> Config:
    """Load ``path``; ``None``, or a missing file that was not ``required``, gives the
    embedded defaults.

    Raises :class:`ConfigError` with every problem found, each naming the file, the
    line and the key.
    """
    env = os.environ if environ is None else environ
    shown = str(path) if path is not None else "(defaults)"
    data, text = _read_config(path, shown, required=required)
    unexpanded: list[Unexpanded] = []
    data = expand_env(data, env, unexpanded)
    lines = Lines(text)
    problems = [TaskFileError(shown, lines.of(u.loc), dotted(u.loc), u.message) for u in unexpanded]
    data.setdefault("lite_llm_key", env.get("LITELLM_API_KEY") or None)
    data.setdefault("github_key", env.get("GITHUB_LITELLM_KEY") or None)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        failed = {u.loc for u in unexpanded}
        for err in exc.errors():
            loc = tuple(err["loc"])
            if any(loc[: len(f)] == f for f in failed):
                continue  # already said: its variable is not set
            message = problem_message(Config, err, show_value=False)
            problems.append(TaskFileError(shown, lines.of(loc), dotted(loc), message))
    if (reason := _workspace_problem(data.get("workspace"), env)) is not None:
        problems.append(TaskFileError(shown, lines.of(("workspace",)), "workspace", reason))
    if problems or config is None:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    if config.mcp_servers_from:
        config = _add_servers_from(config, Path(config.mcp_servers_from), path)
    return config


def _read_config(path: Path | None, shown: str, *, required: bool) -> tuple[dict[str, Any], str]:
    """The config file's mapping and text (empty for no file); :class:`ConfigError` when
    it cannot be read or is not a mapping."""

    def problem(line: int | None, message: str) -> ConfigError:
        return ConfigError([TaskFileError(shown, line, "(file)", message)])

    if path is None or not path.exists():
        if required:
            raise problem(None, "config file not found")
        return {}, ""
    try:
        data, text = read_yaml(path, max_bytes=CONFIG_MAX_BYTES)
    except YamlProblem as exc:
        raise problem(exc.line, exc.message) from None
    except OSError as exc:
        raise problem(None, f"cannot read: {exc.strerror}") from None
    if data is None:
        return {}, text
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise problem(1, f"config must be a mapping of keys, got {kind}")
    return data, text


def _workspace_problem(value: Any, env: Mapping[str, str]) -> str | None:
    """Why ``workspace`` is refused: the whole file system or the home folder, where the
    built-in executor's tools (and a model's) could write anywhere."""
    if not isinstance(value, str) or not value:
        return None
    where = Path(value).absolute()
    home = env.get("HOME")
    if where == Path(where.anchor):
        return "may not be the root folder (/): its tools could write anywhere"
    if home and where == Path(home).absolute():
        return "may not be your home folder: use a project folder inside it"
    return None


def _read_servers_file(source: Path, config_path: Path | None) -> Any:
    """The JSON document of an ``mcp_servers_from`` file: a regular file of at most
    :data:`CONFIG_MAX_BYTES` (``/dev/zero`` or a FIFO is refused, not read)."""
    try:
        return json.loads(read_regular(source, CONFIG_MAX_BYTES).decode("utf-8"))
    except OSError as exc:
        raise ConfigError(
            [
                TaskFileError(
                    str(config_path),
                    None,
                    "mcp_servers_from",
                    f"cannot read {source}: {exc.strerror}",
                )
            ]
        ) from None
    except FileRefusedError as exc:
        raise ConfigError(
            [TaskFileError(str(config_path), None, "mcp_servers_from", str(exc))]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                TaskFileError(
                    str(source), None, "mcp_servers_from", f"not valid UTF-8 (byte {exc.start})"
                )
            ]
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [TaskFileError(str(source), exc.lineno, "mcp_servers_from", f"invalid JSON: {exc.msg}")]
        ) from None


def _add_servers_from(config: Config, source: Path, config_path: Path | None) -> Config:
    """Merge ``mcpServers`` of a Claude Code / Claude Desktop JSON file into the config."""
    if config_path is not None and not source.is_absolute():
        source = config_path.parent / source
    doc = _read_servers_file(source, config_path)
    found = doc.get("mcpServers") if isinstance(doc, dict) else None
    if not isinstance(found, dict):
        raise ConfigError(
            [TaskFileError(str(source), 1, "mcpServers", "expected a mapping of server names")]
        )
    servers = dict(config.mcp_servers)
    for name, raw in found.items():
        if name in servers:
            continue  # the config file's own entry wins
        if not isinstance(raw, dict):
            raise ConfigError(
                [TaskFileError(str(source), None, f"mcpServers.{name}", "expected a mapping")]
            )
        entry = {
            k: v for k, v in raw.items() if k in {"command", "args", "env", "cwd", "url", "headers"}
        }
        if raw.get("type") == "sse":
            entry["transport"] = "sse"
        try:
            servers[name] = McpServer.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(
                [
                    TaskFileError(
                        str(source),
                        None,
                        dotted(("mcpServers", name, *err["loc"])),
                        problem_message(McpServer, err, show_value=False),
                    )
                    for err in exc.errors()
                ]
            ) from None
    return config.model_copy(update={"mcp_servers": servers})
