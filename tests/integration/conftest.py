"""Integration fixtures: the test MCP servers (stdio specs, HTTP and SSE processes on
127.0.0.1) and real git repositories in temp folders."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from runner.defs.config import McpServer
from tests.support.git import git
from tests.support.paths import SERVERS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(mode: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``servers.py MODE PORT`` until the block ends; yields its base URL and process."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVERS), mode, str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"test server {mode} exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """A streamable-HTTP test server shared by a module."""
    with serving("streamable-http") as (base, _):
        yield f"{base}/mcp"


@pytest.fixture(scope="module")
def sse_url() -> Iterator[str]:
    """An SSE test server shared by a module."""
    with serving("sse") as (base, _):
        yield f"{base}/sse"


@pytest.fixture
def own_http_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A streamable-HTTP test server for one test, which may kill it."""
    with serving("streamable-http") as (base, proc):
        yield f"{base}/mcp", proc


@pytest.fixture
def servers_script() -> Path:
    """The path of ``servers.py``, to run it as a script."""
    return SERVERS


@pytest.fixture
def unreachable_url() -> str:
    """An HTTP URL on 127.0.0.1 where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/mcp"


@pytest.fixture
def stdio_server() -> Callable[..., McpServer]:
    """``stdio_server(mode="stdio", **fields)``: the test server's executor entry."""

    def make(mode: str = "stdio", **fields: Any) -> McpServer:
        return McpServer(command=sys.executable, args=[str(SERVERS), mode], **fields)

    return make


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace folder for the built-in executor."""
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real git repository with one commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n", encoding="utf-8")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "first commit from the tests")
    (repo / "new.txt").write_text("untracked\n", encoding="utf-8")
    return repo
