"""runner.defs.config: defaults, ``${VAR}`` expansion, errors that name file/line/key, paths,
``mcp_servers_from`` and secrets (DESIGN §4 "Config")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.core.dsn import dsn_secrets, shown
from runner.core.errors import ConfigError
from runner.core.redaction import secret_env_values
from runner.defs.config import BUILTIN, Config, SandboxMode
from runner.defs.configload import load_config
from runner.defs.environment import config_path_from, redactor_for, resolve_paths


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return str(caught.value)


def assert_error(message: str, path: Path, line: int, key: str, *words: str) -> None:
    prefix = f"{path}:{line}: {key}: "
    assert message.startswith(prefix), f"{message!r} does not start with {prefix!r}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"


def assert_defaults(config: Config) -> None:
    assert config.router.default_executor == BUILTIN == "builtin"
    assert config.router.default_model == "free_then_paid"
    assert config.router.rules == []
    assert config.dispatch.concurrency == 4
    assert config.dispatch.output_limit_bytes == 65536
    fault = config.fault_handler
    assert (fault.lite_llm_timeout, fault.consecutive_failures) == (1.0, 2)
    assert (fault.check_interval, fault.cloud_check_timeout) == (30, 10)
    assert config.schedule.timezone == "UTC"
    assert config.schedule.misfire_grace == 3600
    assert (config.service.settle_ms, config.service.rescan_interval) == (100, 60)
    assert config.service.shutdown_grace == 30
    assert config.agent.max_turns == 10
    assert config.request_timeout == 600
    assert config.mcp_servers == {}
    assert config.lite_llm_key is None
    assert config.github_key is None


def test_no_file_gives_the_defaults(tmp_path: Path) -> None:
    assert_defaults(load_config(None, {}))
    assert_defaults(load_config(tmp_path / "config.yaml", {}))


@pytest.mark.parametrize("text", ["", "# nothing set yet\n"])
def test_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    assert_defaults(load_config(write(tmp_path, text), {}))


def test_required_file_that_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="config file not found") as caught:
        load_config(path, {}, required=True)
    assert str(path) in str(caught.value)


def test_env_expansion_in_nested_keys_and_list_items(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "lite_llm_url: ${GATEWAY:-http://localhost:4000}\n"
        "router:\n"
        "  rules:\n"
        "    - match: {words: ['${WORD}', fixed]}\n"
        "      executor: ${EXECUTOR}\n"
        "mcp_servers:\n"
        "  git:\n"
        "    command: ${GIT_SERVER:-mcp-server-git}\n"
        "    args: [--repository, '${REPO}/src']\n"
        "    env: {HOME_DIR: '${HOME_DIR:-}'}\n",
    )
    env = {"WORD": "deploy", "EXECUTOR": "claude_code", "REPO": "/srv/repo"}
    config = load_config(path, env)
    assert config.lite_llm_url == "http://localhost:4000"
    assert config.router.rules[0].match.words == ["deploy", "fixed"]
    assert config.router.rules[0].executor == "claude_code"
    git = config.mcp_servers["git"]
    assert git.command == "mcp-server-git"
    assert git.args == ["--repository", "/srv/repo/src"]
    assert git.env == {"HOME_DIR": ""}
    assert load_config(path, {**env, "GATEWAY": "http://gw:4000"}).lite_llm_url == (
        "http://gw:4000"
    )


def test_missing_variable_names_file_line_and_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "router:\n  rules:\n    - match: {kind: coding}\n      executor: ${CODING_EXECUTOR}\n",
    )
    assert_error(
        config_error(path),
        path,
        4,
        "router.rules[0].executor",
        "${CODING_EXECUTOR}",
        "not set",
        "${CODING_EXECUTOR:-default}",
    )


def test_missing_variable_in_a_list_item(tmp_path: Path) -> None:
    path = write(
        tmp_path, "mcp_servers:\n  git:\n    command: x\n    args:\n      - a\n      - ${B}\n"
    )
    assert_error(config_error(path), path, 6, "mcp_servers.git.args[1]", "${B}")


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        pytest.param(
            "agent: {max_turns: 5}\ndispatch: {concurrency: many}\n",
            2,
            "dispatch.concurrency",
            ["valid integer"],
            id="wrong-type",
        ),
        pytest.param(
            "dispatch:\n  concurrency: 0\n",
            2,
            "dispatch.concurrency",
            ["greater than or equal to 1"],
            id="too-small",
        ),
        pytest.param(
            "dispatch:\n  concurency: 8\n",
            2,
            "dispatch.concurency",
            ["unknown key", "did you mean `concurrency`?"],
            id="unknown-nested-key",
        ),
        pytest.param(
            "agent: {}\nfrobnicate: true\n", 2, "frobnicate", ["unknown key"], id="unknown"
        ),
        pytest.param(
            "mcp_servers:\n  git:\n    command: mcp-server-git\n"
            "    url: http://localhost:8000/mcp\n",
            2,
            "mcp_servers.git",
            ["exactly one of `command`", "`url`"],
            id="command-and-url",
        ),
        pytest.param(
            "mcp_servers:\n  git:\n    args: [x]\n",
            2,
            "mcp_servers.git",
            ["exactly one of `command`", "`url`"],
            id="neither-command-nor-url",
        ),
        pytest.param(
            "mcp_servers:\n  box:\n    url: ftp://example.com/mcp\n",
            3,
            "mcp_servers.box.url",
            ["not a URL", "http://", "wss://"],
            id="bad-url-scheme",
        ),
        pytest.param(
            "router:\n  rules:\n    - match: {kind: codeing}\n      executor: x\n",
            3,
            "router.rules[0].match.kind",
            ["'coding'"],
            id="bad-rule-kind",
        ),
        pytest.param(
            "schedule:\n  timezone: Mars/Base\n",
            2,
            "schedule.timezone",
            ["unknown time zone", "Europe/Berlin"],
            id="bad-timezone",
        ),
        pytest.param(
            "agent: {}\nmodel_list:\n  - model_name: fast\n",
            2,
            "model_list",
            ["model_list[0]", "litellm_params"],
            id="model-list-entry",
        ),
        pytest.param("- a\n- b\n", 1, "(file)", ["mapping", "list"], id="list"),
        pytest.param("a: [1,\n", 2, "(file)", ["invalid yaml"], id="malformed"),
    ],
)
def test_bad_config_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, words: list[str]
) -> None:
    path = write(tmp_path, text)
    assert_error(config_error(path), path, line, key, *words)


def test_valid_servers_of_each_kind(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mcp_servers:\n"
        "  git: {command: uvx, args: [mcp-server-git]}\n"
        "  web: {url: 'https://example.com/mcp', headers: {Authorization: Bearer x}}\n"
        "  old: {url: 'http://localhost:9000/sse', transport: sse}\n"
        "  claw: {url: 'wss://claw.example.workers.dev'}\n",
    )
    servers = load_config(path, {}).mcp_servers
    assert sorted(servers) == ["claw", "git", "old", "web"]
    assert servers["old"].transport == "sse"


def test_keys_from_the_environment_when_absent() -> None:
    env = {"GITHUB_LITELLM_KEY": "ghp-from-env", "LITELLM_API_KEY": "sk-from-env"}
    config = load_config(None, env)
    assert config.github_key is not None
    assert config.github_key.get_secret_value() == "ghp-from-env"
    assert config.lite_llm_key is not None
    assert config.lite_llm_key.get_secret_value() == "sk-from-env"


def test_keys_in_the_config_win_over_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "github_key: ghp-from-config\nlite_llm_key: sk-from-config\n")
    env = {"GITHUB_LITELLM_KEY": "ghp-from-env", "LITELLM_API_KEY": "sk-from-env"}
    config = load_config(path, env)
    assert config.github_key is not None
    assert config.github_key.get_secret_value() == "ghp-from-config"
    assert config.lite_llm_key is not None
    assert config.lite_llm_key.get_secret_value() == "sk-from-config"


def test_empty_env_key_is_no_key() -> None:
    config = load_config(None, {"GITHUB_LITELLM_KEY": "", "LITELLM_API_KEY": ""})
    assert config.github_key is None
    assert config.lite_llm_key is None


# --- mcp_servers_from ----------------------------------------------------------------


def test_mcp_servers_from_a_claude_code_file(tmp_path: Path) -> None:
    (tmp_path / ".mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "git": {"command": "uvx", "args": ["mcp-server-git", "--repository", "."]},
                    "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}},
                    "events": {"type": "sse", "url": "http://localhost:9000/sse"},
                    "mine": {"command": "from-json"},
                }
            }
        )
    )
    path = write(
        tmp_path, "mcp_servers_from: .mcp.json\nmcp_servers:\n  mine: {command: from-config}\n"
    )
    servers = load_config(path, {}).mcp_servers
    assert sorted(servers) == ["events", "git", "mine", "time"]
    assert servers["git"].args == ["mcp-server-git", "--repository", "."]
    assert servers["time"].env == {"TZ": "UTC"}
    assert servers["events"].transport == "sse"
    assert servers["mine"].command == "from-config"  # the config's own entry wins


def test_mcp_servers_from_broken_json_names_that_file(tmp_path: Path) -> None:
    broken = tmp_path / ".mcp.json"
    broken.write_text('{"mcpServers": {\n  "git": {"command": "uvx",}\n}}')
    path = write(tmp_path, "mcp_servers_from: .mcp.json\n")
    assert_error(config_error(path), broken, 2, "mcp_servers_from", "invalid json")


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ([1, 2], "mcpServers: expected a mapping"),
        ({"mcpServers": ["git"]}, "mcpServers: expected a mapping"),
        ({"mcpServers": {"git": "uvx mcp-server-git"}}, "mcpServers.git: expected a mapping"),
        ({"mcpServers": {"git": {"args": ["x"]}}}, "mcpServers.git: give exactly one of"),
    ],
)
def test_mcp_servers_from_wrong_shapes(tmp_path: Path, doc: object, words: str) -> None:
    (tmp_path / "servers.json").write_text(json.dumps(doc))
    path = write(tmp_path, "mcp_servers_from: servers.json\n")
    message = config_error(path)
    assert message.startswith(str(tmp_path / "servers.json"))
    assert words in message


def test_mcp_servers_from_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "mcp_servers_from: gone.json\n")
    message = config_error(path)
    assert message.startswith(f"{path}:")
    assert "cannot read" in message
    assert str(tmp_path / "gone.json") in message


# --- paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "var", "default"),
    [
        ("tasks", "OMNI_TASKS", "tasks"),
        ("results", "OMNI_RESULTS", "results"),
        ("state", "OMNI_STATE", ".omni/state.db"),
    ],
)
def test_resolve_paths_precedence(tmp_path: Path, name: str, var: str, default: str) -> None:
    plain = load_config(None, {})
    configured = load_config(write(tmp_path, f"paths:\n  {name}: from-config\n"), {})
    env = {var: "from-env"}
    flag = {name: Path("from-flag")}

    def resolved(config: Config, environ: dict[str, str], **flags: Path) -> Path:
        return getattr(resolve_paths(config, None, environ=environ, **flags), name)

    assert resolved(plain, {}) == Path(default)
    assert resolved(configured, {}) == Path("from-config")
    assert resolved(configured, env) == Path("from-env")
    assert resolved(configured, env, **flag) == Path("from-flag")
    assert resolved(plain, {var: ""}) == Path(default)  # an empty variable is unset


def test_resolve_paths_keeps_the_config_path(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert resolve_paths(load_config(None, {}), path, environ={}).config == path


def test_config_path_from() -> None:
    assert config_path_from(Path("flag.yaml"), {"OMNI_CONFIG": "env.yaml"}) == (
        Path("flag.yaml"),
        True,
    )
    assert config_path_from(None, {"OMNI_CONFIG": "env.yaml"}) == (Path("env.yaml"), True)
    assert config_path_from(None, {"OMNI_CONFIG": ""}) == (Path("config.yaml"), False)
    assert config_path_from(None, {}) == (Path("config.yaml"), False)


# --- secrets -------------------------------------------------------------------------

SECRETS_YAML = """\
lite_llm_key: sk-gateway-123456
github_key: ${GH_KEY}
model_list:
  - model_name: fast
    litellm_params: {model: openai/gpt-4o-mini, api_key: sk-model-abcdef}
mcp_servers:
  tool:
    command: run-tool
    env: {API_TOKEN: tok-env-987654, PLAIN_SETTING: visible-value}
  web:
    url: https://example.com/mcp
    headers: {Authorization: "Bearer hdr-555555", X-Api-Key: hdr-key-777777, Accept: text/x}
"""
SECRETS = [
    "sk-gateway-123456",
    "ghp-github-424242",
    "sk-model-abcdef",
    "tok-env-987654",
    "Bearer hdr-555555",
    "hdr-key-777777",
]


def test_secret_values_collects_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SECRETS_YAML), {"GH_KEY": "ghp-github-424242"})
    assert sorted(config.secret_values()) == sorted(SECRETS)


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SECRETS_YAML), {"GH_KEY": "ghp-github-424242"})
    shown = [repr(config), str(config), repr(config.mcp_servers), str(config.mcp_servers["web"])]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
            assert secret.split()[-1] not in text
    assert "visible-value" in repr(config)  # only secrets are masked
    assert "**********" in repr(config)


def test_a_wrongly_typed_secret_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "lite_llm_key: [sk-oops-123456]\n")
    message = config_error(path)
    assert_error(message, path, 1, "lite_llm_key", "valid string")
    assert "sk-oops-123456" not in message


def test_secret_env_values() -> None:
    env = {
        "MY_API_KEY": "k-123456",
        "GH_TOKEN": "t-123456",
        "DB_PASSWORD": "p-123456",
        "SHORT_KEY": "abc",
        "PATH": "/usr/bin",
        "CLIENT_SECRET": "s-123456",
    }
    assert sorted(secret_env_values(env)) == ["k-123456", "p-123456", "s-123456", "t-123456"]


# --- every problem at once, never a value (issue 15) -----------------------------------


def all_problems(path: Path, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ)
    return caught.value.lines()


def test_every_problem_at_once_each_with_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "lite_llm_url: 'not a url'\n"
        "request_timeout: .inf\n"
        "dispatch:\n"
        "  concurency: 2\n"
        "router:\n"
        "  default_model: ${NOPE}\n",
    )
    assert all_problems(path, {}) == [
        f"{path}:1: lite_llm_url: not a URL: want http://, https:// and a host,"
        " like https://example.com",
        f"{path}:2: request_timeout: Input should be a finite number",
        f"{path}:4: dispatch.concurency: unknown key; did you mean `concurrency`?",
        f"{path}:6: router.default_model: environment variable ${{NOPE}} is not set"
        " (set it, or write ${NOPE:-default})",
    ]


def test_no_problem_points_to_a_file_an_init_user_lacks(tmp_path: Path) -> None:
    path = write(tmp_path, "frobnicate: true\nagent: {max_turn: 3}\n")
    lines = all_problems(path, {})
    assert lines == [
        f"{path}:1: frobnicate: unknown key; allowed keys: " + ", ".join(Config.model_fields),
        f"{path}:2: agent.max_turn: unknown key; did you mean `max_turns`?",
    ]
    assert not any("config.yaml.example" in line for line in lines)


@pytest.mark.parametrize(
    "text",
    [
        "mcp_servers:\n  x:\n    command: a\n    env: 'OPENAI_API_KEY=${OPENAI_API_KEY}'\n",
        "router:\n  default_executor: [${OPENAI_API_KEY}]\n",
        "lite_llm_url: ${OPENAI_API_KEY}\n",
        "schedule:\n  timezone: ${OPENAI_API_KEY}\n",
        "mcp_servers:\n  x:\n    url: 'https://${OPENAI_API_KEY}'\n    command: b\n",
    ],
)
def test_an_expanded_secret_is_never_echoed(tmp_path: Path, text: str) -> None:
    secret = "sk-expanded-secret-4242"
    lines = all_problems(write(tmp_path, text), {"OPENAI_API_KEY": secret})
    assert lines
    for line in lines:
        assert secret not in line
        assert "4242" not in line


@pytest.mark.parametrize("workspace", ["/", "HOME"])
def test_workspace_may_not_be_the_root_or_the_home_folder(tmp_path: Path, workspace: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    value = str(home) if workspace == "HOME" else workspace
    path = write(tmp_path, f"workspace: {value}\n")
    [line] = all_problems(path, {"HOME": str(home)})
    where = "the root folder (/)" if workspace == "/" else "your home folder"
    assert line.startswith(f"{path}:1: workspace: may not be {where}")
    assert load_config(write(tmp_path, f"workspace: {home / 'project'}\n"), {"HOME": str(home)})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lite_llm_url", "'not a url'"),
        ("lite_llm_url", "localhost:4000"),
        ("direct_api", "{api_base: 'ftp://models.example'}"),
    ],
)
def test_urls_are_checked(tmp_path: Path, key: str, value: str) -> None:
    [line] = all_problems(write(tmp_path, f"{key}: {value}\n"), {})
    assert "not a URL" in line


@pytest.mark.parametrize(
    "text",
    [
        "request_timeout: .inf\n",
        "fault_handler: {lite_llm_timeout: .nan}\n",
        "mcp_servers: {x: {command: a, timeout: .inf}}\n",
        "service: {shutdown_grace: .inf}\n",
    ],
)
def test_timeouts_are_finite(tmp_path: Path, text: str) -> None:
    [line] = all_problems(write(tmp_path, text), {})
    assert "finite number" in line


@pytest.mark.parametrize(
    ("value", "env", "expanded"),
    [
        ("cost: 5$ $$HOME", {"HOME": "/root"}, "cost: 5$ $HOME"),  # a lone $ stays
        ("a$$$${X}b", {"X": "x"}, "a$${X}b"),
        ("${A:-${B}}", {"B": "b"}, "b"),
        ("${A:-}${B:-${C:-c}}", {}, "c"),
        ("${A:-${B}}", {"A": "a"}, "a"),  # B unset but not needed
        ("${A:-x$$y}", {}, "x$y"),
    ],
)
def test_dollar_escapes_and_nested_defaults(
    tmp_path: Path, value: str, env: dict[str, str], expanded: str
) -> None:
    path = write(tmp_path, f"paths: {{tasks: '{value}'}}\n")
    assert load_config(path, env).paths.tasks == expanded


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${A:-${B}}", "environment variable ${B} is not set"),
        ("${A", "${A is not closed"),
        ("${A:-x", "has no closing `}`"),
        ("${1}", "must be followed by a variable name"),
    ],
)
def test_bad_expansions_name_the_key(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, f"paths:\n  tasks: '{value}'\n")
    [line] = all_problems(path, {})
    assert line.startswith(f"{path}:2: paths.tasks: ")
    assert message in line


# --- sandbox and protected paths ---------------------------------------------------------


def test_sandbox_defaults_to_auto_and_takes_the_three_modes(tmp_path: Path) -> None:
    assert load_config(None, {}).sandbox is SandboxMode.AUTO
    for mode in ("auto", "required", "off"):
        assert load_config(write(tmp_path, f"sandbox: {mode}\n"), {}).sandbox == mode
    message = config_error(write(tmp_path, "workspace: .\nsandbox: maybe\n"))
    assert_error(message, tmp_path / "config.yaml", 2, "sandbox", "auto", "required", "off")


def test_protected_paths_and_executor_sandbox_keys(tmp_path: Path) -> None:
    text = (
        "protected_paths: ['secrets/**', deploy.sh]\n"
        "mcp_servers:\n"
        "  git:\n"
        "    command: mcp-server-git\n"
        "    args: [--repository, '{workspace}']\n"
        "    network: true\n"
        "    sandbox_paths: [/opt/git-tools]\n"
    )
    config = load_config(write(tmp_path, text), {})
    assert config.protected_paths == ["secrets/**", "deploy.sh"]
    git = config.mcp_servers["git"]
    assert (git.network, git.sandbox_paths, git.opt_in_tools) == (True, ["/opt/git-tools"], [])
    bad = config_error(write(tmp_path, "protected_paths: ['../up']\n"))
    assert_error(bad, tmp_path / "config.yaml", 1, "protected_paths", "inside the repository")
    relative = "mcp_servers:\n  x:\n    command: x\n    sandbox_paths: [opt/x]\n"
    message = config_error(write(tmp_path, relative))
    assert_error(message, tmp_path / "config.yaml", 4, "mcp_servers.x.sandbox_paths", "absolute")


# -- the PostgreSQL ledger -----------------------------------------------------------------


def test_a_ledger_url_from_env_wins_over_the_config_and_its_password_is_a_secret(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "state:\n  url: postgresql://omni:${DB_PW}@db:5432/omni\n")
    config = load_config(path, {"DB_PW": "from-config-pw"})
    assert config.state.lease_seconds == 30
    assert "from-config-pw" in config.secret_values()
    assert "from-config-pw" not in repr(config)
    paths = resolve_paths(config, path, environ={})
    assert paths.state_url == "postgresql://omni:from-config-pw@db:5432/omni"
    assert "from-config-pw" not in repr(paths) + str(paths)

    env = {"OMNI_STATE_URL": "postgres://ops@other/ledger?password=env-url-pw&sslmode=require"}
    assert resolve_paths(config, path, environ=env).state_url == env["OMNI_STATE_URL"]
    redactor = redactor_for(config, env)
    line = f"{env['OMNI_STATE_URL']} and from-config-pw"
    assert "env-url-pw" not in redactor.text(line)
    assert "from-config-pw" not in redactor.text(line)


def test_a_ledger_url_that_is_not_postgresql_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "paths: {}\nstate:\n  url: ./state.db\n")
    assert_error(config_error(path), path, 3, "state.url", "postgresql://")
    with pytest.raises(ConfigError, match="OMNI_STATE_URL: want a postgresql:// URL"):
        resolve_paths(Config(), None, environ={"OMNI_STATE_URL": "sqlite:///x.db"})


def test_the_shown_form_of_a_url_masks_every_password() -> None:
    assert shown("postgresql://u:p%40ss@h:1/db?password=q&sslmode=require") == (
        "postgresql://u:***@h:1/db?password=***&sslmode=require"
    )
    assert shown("postgresql://h/db") == "postgresql://h/db"
    assert dsn_secrets("postgresql://u:p%40ss@h/db?password=q%26w") == ["p%40ss", "p@ss", "q&w"]
