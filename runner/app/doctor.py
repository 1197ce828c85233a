"""``omni doctor``: can omni reach what it needs? One check a line, never a secret.

Checks, in order: each key (present or not, never its value: ``lite_llm_key``,
``github_key``, the ``os.environ/NAME`` keys in ``model_list``, an OpenClaw gateway's
``token_env``), the gateway (the proxy's ``/health/liveliness`` and a one-token
completion, or the in-process router's completion), the direct API (a one-token
completion with ``github_key``), each executor (starts, lists its tools), and the
sandbox (bubblewrap starts the built-in executor in a throwaway workspace). A check is
``ok``, ``warn`` (works, but not as it should: a backup key missing, or model-driven
runs unsandboxed under ``sandbox: auto``), ``fail``, or ``skip`` (not configured, so not
needed); only a ``fail`` means exit 1. Each check shows how long it took; the gateway's
time is the probe's own, after LiteLLM is loaded (the in-process router's import is
shown apart and never fails the check).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.redaction import without_userinfo
from runner.defs.config import BUILTIN, Config, SandboxMode
from runner.dispatch.faults import probe_models
from runner.reach.executors import ExecutorPool
from runner.reach.modelclient import LlmClient
from runner.reach.sandbox import Confinement, omni_read_paths, probe

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.core.redaction import Redactor
    from runner.reach.calls import ProbeResult

_SHOWN_TOOLS = 6


class Status(StrEnum):
    """How one check went."""

    OK = "ok"
    WARN = "warn"
    """Works, but not as it should (does not change the exit code)."""
    FAIL = "fail"
    SKIP = "skip"
    """Not configured, so not needed."""


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    took_ms: float = 0.0
    """How long the check itself took."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Every check, in order."""

    checks: list[Check]

    @property
    def exit_code(self) -> int:
        """1 when any check failed, else 0."""
        return int(any(c.status is Status.FAIL for c in self.checks))

    def as_json(self) -> dict[str, Any]:
        """``--json``: the checks (each with ``took_ms``) and whether none failed."""
        checks = [asdict(c) | {"status": c.status.value} for c in self.checks]
        return {"ok": self.exit_code == 0, "checks": checks}


def _uses_models(config: Config) -> bool:
    return bool(config.lite_llm_url or config.model_list)


def key_checks(config: Config, environ: Mapping[str, str]) -> list[Check]:
    """Whether each key omni may need is present (values are never looked at twice)."""
    checks = []

    def key(name: str, env: str, present: bool, wanted: bool, why: str) -> None:
        where = f" (env {env})" if environ.get(env) else " (config)"
        if present:
            checks.append(Check(f"key {name}", Status.OK, "set" + where))
        elif wanted:  # optional keys: omni works without them, with less
            detail = f"not set (config or env {env}): {why}"
            checks.append(Check(f"key {name}", Status.WARN, detail))
        else:
            checks.append(Check(f"key {name}", Status.SKIP, f"not set; not needed: {why}"))

    proxy, models = bool(config.lite_llm_url), _uses_models(config)
    key(
        "lite_llm_key",
        "LITELLM_API_KEY",
        config.lite_llm_key is not None,
        proxy,
        "a proxy with a master key refuses calls without it" if proxy else "no lite_llm_url",
    )
    key(
        "github_key",
        "GITHUB_LITELLM_KEY",
        config.github_key is not None,
        models,
        "no backup: while the gateway is down prompt runs wait (brainstem mode)"
        if models
        else "no models configured",
    )
    for entry in config.model_list:
        value = (entry.get("litellm_params") or {}).get("api_key")
        if isinstance(value, str) and value.startswith("os.environ/"):
            env = value.removeprefix("os.environ/")
            ok = bool(environ.get(env))
            checks.append(
                Check(
                    f"key {env}",
                    Status.OK if ok else Status.FAIL,
                    f"{'set' if ok else 'not set'} (model_list {entry.get('model_name')!r})",
                )
            )
    for name, server in sorted(config.mcp_servers.items()):
        if server.url and server.url.startswith(("ws://", "wss://")):
            ok = bool(environ.get(server.token_env))
            checks.append(
                Check(
                    f"key {server.token_env}",
                    Status.OK if ok else Status.WARN,
                    f"{'set' if ok else 'not set; a gateway with a token refuses the bridge'}"
                    f" (executor {name!r}, an OpenClaw gateway)",
                )
            )
    return checks


def _probe(name: str, result: ProbeResult, note: str = "") -> Check:
    status = Status.OK if result.ok else Status.FAIL
    return Check(name, status, result.detail + note, round(result.took_s * 1000, 1))


async def model_checks(config: Config) -> list[Check]:
    """The gateway and the direct API, each probed as the fault monitor probes them."""
    checks = []
    async with LlmClient(config) as llm:
        if config.lite_llm_url or config.model_list:
            started = time.perf_counter()
            await llm.ready()  # the in-process router's import: shown, never timed
            loaded = time.perf_counter() - started
            note = f" (LiteLLM loaded first in {loaded:.1f} s, not timed)" if loaded > 0.05 else ""
            name = (
                f"gateway {without_userinfo(config.lite_llm_url)}"
                if config.lite_llm_url
                else "gateway (in-process router)"
            )
            checks.append(_probe(name, await llm.probe_gateway(probe_models(config)), note))
        else:
            checks.append(Check("gateway", Status.SKIP, "no lite_llm_url and no model_list"))
        name = f"direct API {without_userinfo(config.direct_api.api_base)}"
        if config.github_key is None:
            checks.append(Check(name, Status.SKIP, "github_key is not set"))
        else:
            checks.append(_probe(name, await llm.probe_direct()))
    return checks


async def executor_checks(
    config: Config, environ: Mapping[str, str], workspace: Path
) -> list[Check]:
    """Each executor: start it (or connect) and list its tools, all at once."""
    pool = ExecutorPool(config.mcp_servers, workspace=workspace, environ=environ)
    names = sorted({BUILTIN, *config.mcp_servers})

    async def one(name: str) -> Check:
        limit = config.mcp_servers[name].timeout if name in config.mcp_servers else 60.0
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                tools = await pool.list_tools(name)
        except TimeoutError:
            took = round((time.perf_counter() - started) * 1000, 1)
            detail = f"no tool list within {limit:g} s"
            return Check(f"executor {name}", Status.FAIL, detail, took)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # reported, not raised
            took = round((time.perf_counter() - started) * 1000, 1)
            return Check(f"executor {name}", Status.FAIL, " ".join(str(exc).split())[:300], took)
        took = round((time.perf_counter() - started) * 1000, 1)
        shown = ", ".join(sorted(t.name for t in tools)[:_SHOWN_TOOLS])
        more = f", … {len(tools) - _SHOWN_TOOLS} more" if len(tools) > _SHOWN_TOOLS else ""
        return Check(f"executor {name}", Status.OK, f"{len(tools)} tools: {shown}{more}", took)

    checks: list[Check] = []
    try:
        async with pool:
            checks = list(await asyncio.gather(*(one(n) for n in names)))
    except ExceptionGroup:
        pass  # connections that failed while open: each is a failed check already
    return checks


async def sandbox_check(config: Config, environ: Mapping[str, str]) -> Check:
    """Whether bubblewrap works here, proven by starting the built-in executor under it
    (in a throwaway workspace) and listing its tools; the cause and the fix when not."""
    mode = config.sandbox
    name = f"sandbox ({mode.value})"
    if mode is SandboxMode.OFF:
        return Check(name, Status.SKIP, "sandbox: off: model-driven runs are not sandboxed")
    found = probe(environ)
    bad = Status.FAIL if mode is SandboxMode.REQUIRED else Status.WARN
    if not found.available or found.bwrap is None:
        unsandboxed = (
            "model-driven runs are refused"
            if mode is SandboxMode.REQUIRED
            else "model-driven runs go unsandboxed, with a warning in each result"
        )
        return Check(name, bad, f"{found.explain()} ({unsandboxed})")
    with tempfile.TemporaryDirectory(prefix="omni-doctor-") as tmp:
        sandbox = Confinement(found.bwrap, Path(tmp), omni_read_paths())
        pool = ExecutorPool({}, workspace=Path(tmp), environ=environ, sandbox=sandbox)
        started = time.perf_counter()
        try:
            async with pool, asyncio.timeout(60):
                tools = await pool.list_tools(BUILTIN)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # reported, not raised
            detail = " ".join(str(exc).split())[:300]
            return Check(name, bad, f"bwrap runs, but the built-in executor fails in it: {detail}")
    took = (time.perf_counter() - started) * 1000
    return Check(
        name,
        Status.OK,
        f"{found.explain()}; the built-in executor starts in it "
        f"({len(tools)} tools in {took:.0f} ms)",
    )


async def diagnose(
    config: Config, *, environ: Mapping[str, str], workspace: Path, redactor: Redactor
) -> Diagnosis:
    """Every check; details redacted."""
    checks = key_checks(config, environ)
    found = await asyncio.gather(
        model_checks(config),
        executor_checks(config, environ, workspace),
        sandbox_check(config, environ),
    )
    checks += [*found[0], *found[1], found[2]]
    return Diagnosis([Check(c.name, c.status, redactor.text(c.detail), c.took_ms) for c in checks])
