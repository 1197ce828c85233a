"""The one redaction path: split forms of a secret, URL userinfo, tracebacks in log
records, the CLI's output streams, and the store's free text."""

from __future__ import annotations

import base64
import io
import json
import logging
import warnings
from typing import TYPE_CHECKING

import pytest

from runner.app.logs import LogFormat, configure_logging
from runner.core.redaction import (
    RedactingWriter,
    Redactor,
    url_secrets,
    without_userinfo,
)
from runner.core.states import Mode, RunState
from runner.defs.config import Config
from runner.defs.environment import redactor_for
from runner.dispatch.repairs import Fault, repair_task_yaml
from runner.state.results import RunResult, write_result
from runner.state.store import Store

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SECRET = "sk-planted-0123456789abcdef"


WRAPPED = base64.encodebytes(SECRET.encode() * 3).decode()  # base64 wrapped at 76 columns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" ".join(SECRET), "[redacted]"),  # a space between every character
        ("-".join(SECRET.replace("-", "")), "[redacted]"),
        (f"key: {SECRET[:12]}\n      {SECRET[12:]}", "key: [redacted]"),  # halves on two lines
        (":".join(f"{b:02x}" for b in SECRET.encode()), "[redacted]"),  # hex with separators
        (WRAPPED, "[redacted][redacted][redacted]\n"),
    ],
)
def test_split_forms_are_redacted(text: str, expected: str) -> None:
    assert Redactor([SECRET]).text(f"before {text} after") == f"before {expected} after"


def test_split_matching_takes_the_whole_secret_and_nothing_else() -> None:
    redactor = Redactor([SECRET, "pa-ss-wo"])  # the second: too few letters to split-match
    text = "sk planted 0123 and p a s s w o and pa-ss-wo and " + " ".join(SECRET)
    assert redactor.text(text) == "sk planted 0123 and p a s s w o and [redacted] and [redacted]"


def test_url_userinfo_is_masked_known_or_not() -> None:
    redactor = Redactor([])
    assert (
        redactor.text("GET https://user:pw@example.com/x and ssh://tok3n@git.example.com/r.git")
        == "GET https://[redacted]@example.com/x and ssh://[redacted]@git.example.com/r.git"
    )
    assert redactor.text("mail me at a@b.c; http://example.com/@x") == (
        "mail me at a@b.c; http://example.com/@x"
    )
    assert (
        without_userinfo("http://user:pass@127.0.0.1:4000/v1?q=1") == "http://127.0.0.1:4000/v1?q=1"
    )
    assert without_userinfo("http://127.0.0.1:4000") == "http://127.0.0.1:4000"
    assert sorted(url_secrets("http://user:p%40ss-word@h")) == ["p%40ss-word", "p@ss-word"]
    assert url_secrets("https://ghp_token123@github.com/o/r") == ["ghp_token123"]
    assert url_secrets("ssh://git@github.com/o/r") == []  # too short to be a secret


def test_config_urls_hold_secrets() -> None:
    config = Config.model_validate(
        {
            "lite_llm_url": "http://omni:proxy-pass-1@127.0.0.1:4000",
            "mcp_servers": {"remote": {"url": "https://bot:mcp-pass-22@mcp.example.com/mcp"}},
            "sources": {"git": {"url": "https://ghp_gitsource333@github.com/o/tasks.git"}},
        }
    )
    assert {"proxy-pass-1", "mcp-pass-22", "ghp_gitsource333"} <= set(config.secret_values())
    shown = redactor_for(config, {}).text(
        "proxy-pass-1 " + base64.b64encode(b"mcp-pass-22").decode()
    )
    assert shown.startswith("[redacted] [redacted]")  # base64's last characters pad
    assert "proxy-pass-1" not in shown


def test_a_result_with_a_split_secret_or_a_url_password_is_redacted(tmp_path: Path) -> None:
    result = RunResult(
        task_id="t",
        run_id="01JD0000000000000000000000",
        task_hash="h",
        state=RunState.COMPLETED,
        attempt=1,
        started_at="2026-11-21T10:00:00Z",
        finished_at="2026-11-21T10:00:01Z",
        duration_s=1.0,
        output={"spaced": " ".join(SECRET), "url": "fetched https://u:hunter2@h/x"},
    )
    path = write_result(tmp_path, result, Redactor([SECRET]))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["output"] == {"spaced": "[redacted]", "url": "fetched https://[redacted]@h/x"}
    markdown = path.with_suffix(".md").read_text(encoding="utf-8")
    assert "hunter2" not in markdown and "9 a b c" not in markdown


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    text = io.StringIO()
    yield text
    root.handlers[:], level = saved
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.parametrize("log_format", list(LogFormat))
def test_tracebacks_in_logs_are_redacted(log_format: LogFormat, stream: io.StringIO) -> None:
    configure_logging(log_format, Redactor([SECRET]), stream)
    try:
        raise RuntimeError(f"the server said {SECRET}")
    except RuntimeError:
        logging.getLogger("runner.test").exception("run t: unexpected error")
    written = stream.getvalue()
    assert SECRET not in written
    assert "RuntimeError: the server said [redacted]" in (
        written if log_format is LogFormat.TEXT else json.loads(written)["exception"]
    )


def test_warnings_are_log_records_and_redacted(stream: io.StringIO) -> None:
    configure_logging(LogFormat.TEXT, Redactor([SECRET]), stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the test run turns warnings into errors
        warnings.warn(f"the server said {SECRET}", UserWarning, stacklevel=1)
    assert "UserWarning: the server said [redacted]" in stream.getvalue()
    assert SECRET not in stream.getvalue()


def test_the_cli_streams_redact_whole_lines() -> None:
    inner = io.StringIO()
    out = RedactingWriter(inner, Redactor([SECRET]))
    out.write(SECRET[:10])
    assert inner.getvalue() == ""  # half a line waits for the rest
    out.write(SECRET[10:] + " end\nnext ")
    out.write("http://u:p@h/\n")
    out.write("tail " + SECRET)
    out.flush()
    assert inner.getvalue() == "[redacted] end\nnext http://[redacted]@h/\ntail [redacted]"
    assert out.isatty() is False  # the rest is the wrapped stream's


def test_the_store_redacts_every_text_it_writes(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db", redactor=Redactor([SECRET])) as store:
        run = store.create_run("t", "h", max_attempts=2)
        run = store.claim(run, executor="x", tool="y", detail=f"x.y with {SECRET}") or run
        run = store.transition(run, RunState.FAILED, error=f"bad {SECRET}", detail=SECRET)
        store.set_note(run.run_id, f"note {SECRET}")
        store.set_mode(Mode.DEGRADED, f"gateway https://u:{SECRET}@h failed")
        details = [e["detail"] for e in store.events(run.run_id)]
        final = store.get_run(run.run_id)
        why = store.mode().why
    assert final is not None
    assert (final.error, final.note) == ("bad [redacted]", "note [redacted]")
    assert details == ["created", "claimed, attempt 1", "x.y with [redacted]", "[redacted]"]
    assert why == "gateway https://[redacted]@h failed"
    for path in tmp_path.glob("state.db*"):
        assert SECRET.encode() not in path.read_bytes()


def test_a_repair_task_never_holds_the_proxy_credentials() -> None:
    config = Config.model_validate({"lite_llm_url": "http://omni:proxy-pass-1@127.0.0.1:4000"})
    text = repair_task_yaml(config, Fault(started_at="2026-11-21T10:00:00Z"), Mode.BRAINSTEM)
    assert "the LiteLLM proxy at http://127.0.0.1:4000 (lite_llm_url)" in text
    assert "proxy-pass-1" not in text and "omni:" not in text
