"""Helpers for the fault-handling tests and bench (no tests here): a real LiteLLM proxy
the tests kill, hang and restart on a fixed port; gateways that never answer or answer
slowly; and a git-backed project for ``run --once``."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Self

from runner.app.once import OnceOptions, OnceReport, run_once
from tests.support.paths import paths_under
from tests.support.planted import SECRET
from tests.support.service import git
from tests.support.upstream import MASTER_KEY, LiteLLMProxy

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from runner.defs.config import Config

__all__ = ["KillableProxy", "Project", "SilentGateway", "SlowBodyGateway", "fault_config", "git"]


class KillableProxy(LiteLLMProxy):
    """A real ``litellm`` proxy that keeps its port: :meth:`kill` (SIGKILL) and
    :meth:`restart` it, or :meth:`hang` (SIGSTOP: the kernel still accepts connections,
    nothing answers) and :meth:`unhang` it."""

    # The process is the parent's `_proc`, made in its __init__ and set in __enter__.
    # pylint: disable=access-member-before-definition,attribute-defined-outside-init

    def kill(self) -> None:
        """SIGKILL the process; the port refuses connections until :meth:`restart`."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        """Start the proxy again on the same port; returns once it is ready (~10 s)."""
        self.kill()
        self.__enter__()  # pylint: disable=unnecessary-dunder-call  # the same object again

    def hang(self) -> None:
        """Stop the process (SIGSTOP): connections are accepted, never answered."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def unhang(self) -> None:
        """Let the stopped process go on (SIGCONT)."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
        super().__exit__(kind, exc, tb)


class SilentGateway:
    """A 127.0.0.1 port that accepts TCP connections (the kernel's backlog) and never
    answers: a hung gateway."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()


class SlowBodyGateway:
    """An OpenAI-compatible gateway on 127.0.0.1 that sends a reply's headers at once and
    its body ``delay`` seconds later, and never answers ``/health/liveliness``."""

    def __init__(self, delay: float, text: str = "slow but here") -> None:
        self._delay = delay
        self._text = text
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.requests = 0

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                data = conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length:
                    body += conn.recv(65536)
                if not head.startswith(b"POST"):
                    self._stop.wait(30)  # liveliness: no answer
                    return
                self.requests += 1
                reply = json.dumps(
                    {
                        "id": "slow-1",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": json.loads(body or b"{}").get("model", "slow"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": self._text},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                size = str(len(reply)).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: " + size + b"\r\n\r\n"
                )
                self._stop.wait(self._delay)
                conn.sendall(reply)
            except OSError:
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


class Project:
    """A git repository with ``tasks/``, ``results/`` and ``.omni/state.db``, for
    ``run --once`` and the service."""

    def __init__(self, root: Path, *, with_git: bool = True) -> None:
        self.root = root
        self.paths = paths_under(root)
        self.paths.tasks.mkdir(parents=True, exist_ok=True)
        if with_git:
            git(root, "init", "-q", "-b", "main")
            (root / ".gitignore").write_text(".omni/\nresults/\n", encoding="utf-8")
            git(root, "add", ".gitignore")
            git(root, "commit", "-q", "-m", "start")

    def task(self, task_id: str, text: str) -> None:
        """Write ``tasks/<task_id>.yaml``."""
        path = self.paths.tasks / f"{task_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    async def run(self, config: Config, environ: dict[str, str] | None = None) -> OnceReport:
        """``omni run --once`` on this project."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(environ or {})}
        return await run_once(config, self.paths, OnceOptions(), environ=env)

    def results(self, task_id: str) -> list[dict[str, Any]]:
        """The task's JSON result files, oldest first."""
        folder = self.paths.results.joinpath(*task_id.split("/"))
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows from the state database (read-only)."""
        with sqlite3.connect(f"file:{self.paths.state}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql, params).fetchall()]

    def modes(self) -> list[tuple[str, str]]:
        """The mode history, oldest first: (from, to)."""
        rows = self.query("SELECT from_mode, to_mode FROM modes ORDER BY id")
        return [(r["from_mode"], r["to_mode"]) for r in rows]


def fault_config(
    gateway_url: str, direct_base: str, *, free: list[str], **more: Any
) -> dict[str, Any]:
    """A config with a gateway, a direct API (``github/direct-model`` at ``direct_base``)
    and fast fault handling; ``more`` overrides top-level keys."""
    handler = {
        "lite_llm_timeout": 0.5,
        "consecutive_failures": 2,
        "check_interval": 0.3,
        "cloud_check_timeout": 2,
    }
    return {
        "lite_llm_url": gateway_url,
        "lite_llm_key": MASTER_KEY,
        "github_key": SECRET,
        "direct_api": {"model": "github/direct-model", "api_base": direct_base},
        "fault_handler": handler | more.pop("fault_handler", {}),
        "router": {"model_tiers": {"free": free}},
        **more,
    }
