"""The package's version, from its installed metadata (``omni --version``, the MCP
client's ``clientInfo``)."""

from __future__ import annotations

from functools import cache

DISTRIBUTION = "omni-orchestrator"


@cache
def omni_version() -> str:
    """The installed version of omni-orchestrator (``0+unknown`` when not installed)."""
    # pylint: disable-next=import-outside-toplevel  # importlib.metadata: only when asked
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
