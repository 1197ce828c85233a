"""The one stand-in the prompt-task tests allow: a scripted OpenAI-compatible upstream.

:class:`ScriptedUpstream` answers ``POST /v1/chat/completions`` (and
``/chat/completions``) on 127.0.0.1 with replies scripted per model name, and keeps the
requests it got so a test can check what the model was told. :class:`LiteLLMProxy`
starts a real ``litellm`` proxy process in front of it. ``bench/prompt.py`` uses both.

A script is a list of replies, consumed in order; the last one repeats (so one
tool-call reply is an endless tool-call loop). A reply is a dict:

- ``{"content": "text"}``: a final answer (``""`` is an empty reply);
- ``{"tool_calls": [(name, arguments), ...]}``: arguments a dict (sent as JSON) or a
  raw string (sent as is, so malformed JSON can be scripted);
- ``{"status": 500}``: an HTTP error with an OpenAI-style error body (``"message"`` sets
  its text);
- ``"headers": {...}`` in any reply: extra response headers (e.g. ``Retry-After``);
- ``"delay": seconds`` in any reply: wait first (a hung upstream);
- a callable: called with the request body, returns one of the above (a model that
  reacts to what its tools answered, e.g. one following injected instructions).

:attr:`ScriptedUpstream.busy_s` adds up the time the upstream spent on requests, from
reading each one to sending its reply (its "own time", for the bench).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from types import TracebackType

#: Token counts every scripted reply reports.
PROMPT_TOKENS = 100
COMPLETION_TOKENS = 20
#: Prices the proxy's deployment is given, so its cost figures are known.
INPUT_COST = 0.000001
OUTPUT_COST = 0.000002
#: The proxy's master key in tests (never a real secret).
MASTER_KEY = "sk-omni-test-master"


def free_port() -> int:
    """A port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _completion(model: str, reply: dict[str, Any], seq: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    finish = "stop"
    if calls := reply.get("tool_calls"):
        finish = "tool_calls"
        message["tool_calls"] = [
            {
                "id": f"call_{seq}_{i}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for i, (name, args) in enumerate(calls)
        ]
    return {
        "id": f"chatcmpl-{seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


class _Server(ThreadingHTTPServer):
    """A threading HTTP server with a listen backlog for a hundred callers at once (the
    default, 5, drops connections and delays them by SYN retries)."""

    request_queue_size = 256


class ScriptedUpstream:
    """An OpenAI-compatible chat server on 127.0.0.1 with per-model scripted replies."""

    def __init__(self, port: int = 0) -> None:
        """``port``: 0 for a free one; an earlier upstream's port to come back on it."""
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Any]] = {}
        self._served: dict[str, int] = defaultdict(int)
        self._requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._seq = 0
        self.busy_s = 0.0
        """Seconds spent answering so far, over all requests."""
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, model: str, replies: list[Any]) -> None:
        """Replace ``model``'s script and forget its requests."""
        with self._lock:
            self._scripts[model] = list(replies)
            self._served[model] = 0
            self._requests[model] = []

    def requests(self, model: str) -> list[dict[str, Any]]:
        """The request bodies ``model`` got, oldest first."""
        with self._lock:
            return list(self._requests[model])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def next_reply(self, body: dict[str, Any]) -> tuple[str, dict[str, Any] | None, int]:
        """Record a request; its model, its scripted reply (None: no script), a sequence no."""
        model = str(body.get("model", "")).removeprefix("openai/")
        with self._lock:
            self._requests[model].append(body)
            script = self._scripts.get(model)
            self._seq += 1
            if not script:
                return model, None, self._seq
            index = min(self._served[model], len(script) - 1)
            self._served[model] += 1
            reply, seq = script[index], self._seq
        return model, reply(body) if callable(reply) else reply, seq

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            """Answers chat completions from the scripts."""

            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's algorithm and
            # delayed ACKs add ~40 ms to every reply on a kept-alive connection.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read requests through :meth:`ScriptedUpstream.requests`."""

            # pylint: disable-next=invalid-name  # http.server's naming
            def do_POST(self) -> None:
                started = time.perf_counter()
                try:
                    self._answer()
                finally:
                    with upstream._lock:  # pylint: disable=protected-access  # its own server
                        upstream.busy_s += time.perf_counter() - started

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                model, reply, seq = upstream.next_reply(json.loads(raw or b"{}"))
                if reply is None:
                    self._send(404, {"error": {"message": f"model {model!r} has no script"}})
                    return
                if delay := reply.get("delay"):
                    time.sleep(float(delay))
                headers = reply.get("headers") or {}
                if status := reply.get("status"):
                    message = reply.get("message", f"scripted {status}")
                    error = {"message": message, "type": "server_error"}
                    self._send(int(status), {"error": error}, headers)
                    return
                self._send(200, _completion(model, reply, seq), headers)

            def _send(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


class LiteLLMProxy:
    """A real ``litellm`` proxy process on 127.0.0.1 in front of ``upstream_url``.

    Every model name is passed through to the upstream (a ``*`` deployment), priced at
    :data:`INPUT_COST` / :data:`OUTPUT_COST` a token.
    """

    def __init__(self, upstream_url: str, *, ready_timeout: float = 60.0) -> None:
        self.port = free_port()
        self._upstream = upstream_url
        self._ready_timeout = ready_timeout
        # Removed in __exit__, with the process.
        # pylint: disable-next=consider-using-with
        self._dir = tempfile.TemporaryDirectory(prefix="omni-litellm-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        path = Path(self._dir.name) / "proxy.yaml"
        deployment = {
            "model_name": "*",
            "litellm_params": {
                "model": "openai/*",
                "api_base": self._upstream,
                "api_key": "sk-upstream-test",
                "input_cost_per_token": INPUT_COST,
                "output_cost_per_token": OUTPUT_COST,
            },
        }
        config = {
            "model_list": [deployment],
            "litellm_settings": {"num_retries": 0, "request_timeout": 30},
        }
        path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        return path

    def __enter__(self) -> Self:
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        command = [str(Path(sys.executable).with_name("litellm")), "--config", str(self._config())]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        log = (Path(self._dir.name) / "proxy.log").open("wb")
        # Kept open until __exit__, which terminates it.
        # pylint: disable-next=consider-using-with
        self._proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            self._wait_ready()
            self._warm_up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _warm_up(self) -> None:
        """One completion (of a model the upstream does not know): a fresh proxy's first
        completion loads parts of LiteLLM, its event loop stalls for a second or more
        meanwhile, and a test's first call would meet that stall, not the proxy's
        normal behaviour."""
        request = urllib.request.Request(
            f"{self.url}/chat/completions",
            data=json.dumps(
                {"model": "omni-warm-up", "messages": [{"role": "user", "content": "hi"}]}
            ).encode(),
            headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._ready_timeout):
                pass
        except OSError:
            pass  # an error answer is expected: the warm-up is the work before it

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._ready_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                raise RuntimeError(f"litellm proxy exited with {code}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health/liveliness", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                waited = self._ready_timeout
                raise TimeoutError(f"litellm proxy not ready in {waited} s:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        """The proxy's output so far (for failure messages)."""
        path = Path(self._dir.name) / "proxy.log"
        return path.read_text(encoding="utf-8", errors="replace")[-4000:] if path.exists() else ""

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._dir.cleanup()
