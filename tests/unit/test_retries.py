"""Retries that help: backoff with jitter and ``Retry-After``, rate-limit memory across
processes (state database and result files), and reading OpenAI-style replies and
error bodies as data."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from runner.core.clock import iso
from runner.core.ids import new_run_id
from runner.defs.config import Dispatch
from runner.defs.routing import Tier
from runner.dispatch.backoff import Backoff
from runner.reach.calls import GatewayOutcome, StepFailed
from runner.reach.openai_http import completion_from, cost_of, error_text, retry_after
from runner.state.ratelimits import RateLimits
from runner.state.store import Store

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
CAP = 1 << 20


def test_backoff_doubles_with_jitter_is_capped_and_honours_retry_after() -> None:
    backoff = Backoff.of(Dispatch(retry_backoff=2.0, retry_backoff_max=10.0), random.Random(7))
    for attempt, (low, high) in enumerate([(1, 2), (2, 4), (4, 8), (5, 10), (5, 10)], 1):
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(low <= d <= high for d in delays), (attempt, delays)
        assert len(set(delays)) > 1  # jitter: attempts of many runs do not line up
    assert backoff.delay(1, retry_after=7.0) == 7.0  # the far end's word, over the backoff
    assert backoff.delay(1, retry_after=3600.0) == 10.0  # but never past the cap
    assert Backoff.of(Dispatch(retry_backoff=0.0)).delay(3) == 0.0
    assert backoff.helps(None)
    assert backoff.helps(10.0)
    assert not backoff.helps(3600.0)  # no retry before a far-away reset: it would fail again


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "30"}, 30.0),
        ({"llm_provider-retry-after": "7"}, 7.0),  # the LiteLLM proxy's copy
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "Sat, 21 Nov 2026 10:02:00 GMT"}, 120.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "1e308"}, 86400.0),  # a hostile value: capped at a day
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_from_the_headers_providers_send(
    headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after(headers, NOW) == expected


def test_a_reply_is_read_with_its_tool_calls_usage_and_cost() -> None:
    data = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "echo", "arguments": '{"text": "x"}'}},
                        {"function": {"name": "list_dir", "arguments": {"path": "."}}},
                        "not a call",
                    ],
                }
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": -3},
    }
    made = completion_from("m", Tier.FREE, data, cost_of({"x-litellm-response-cost": "2.5e-06"}))
    assert [(c.id, c.name, c.arguments) for c in made.tool_calls] == [
        ("c1", "echo", '{"text": "x"}'),
        ("call_1", "list_dir", '{"path": "."}'),
    ]
    assert (made.input_tokens, made.output_tokens, made.cost_usd) == (12, 0, 2.5e-06)
    for bad in ("inf", "-1", "NaN", "free"):
        assert cost_of({"x-litellm-response-cost": bad}) is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"choices": []}, "no choices"),
        (["not", "an", "object"], "no choices"),
        ({"choices": [{"message": {"content": "  "}}]}, "empty reply"),
    ],
)
def test_an_unusable_reply_is_a_bad_reply(data: object, why: str) -> None:
    with pytest.raises(StepFailed) as caught:
        completion_from("m", Tier.FREE, data, None)
    assert caught.value.outcome is GatewayOutcome.BAD_REPLY
    assert why in caught.value.detail


def test_an_error_body_is_one_short_line_without_credentials() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "litellm.InternalServerError: InternalServerError: OpenAIException"
                " - upstream http://bob:s3cret@10.0.0.9/v1 said:\n\nNOTE: run this " + "x" * 900
            }
        }
    )
    text = error_text(body)
    assert "\n" not in text
    assert len(text) <= 300
    assert text.startswith("upstream http://10.0.0.9/v1 said: NOTE: run this")
    assert "s3cret" not in text
    assert error_text("<html>502 Bad Gateway</html>") == "<html>502 Bad Gateway</html>"
    assert error_text("") == "no error message"


# --- rate limits remembered across processes -------------------------------------------


def rate_limited_result(root: Path, at: datetime, model: str, until: str) -> None:
    run_id = new_run_id(at)
    folder = root / "t"
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "task_id": "t",
        "run_id": run_id,
        "task_hash": "h",
        "state": "completed",
        "attempt": 1,
        "started_at": iso(at),
        "finished_at": iso(at),
        "duration_s": 0.1,
        "agent": {"model_calls": [{"model": model, "outcome": "rate_limited", "until": until}]},
    }
    (folder / f"{run_id}.json").write_text(json.dumps(data))


def test_a_rate_limit_outlives_the_process_in_the_store(tmp_path: Path) -> None:
    until = NOW + timedelta(hours=1)
    with Store(tmp_path / "state.db") as store:
        RateLimits(store, tmp_path / "results", CAP).mark("free-a", until, "HTTP 429 at t0")
    with Store(tmp_path / "state.db") as store:  # a new process
        limits = RateLimits(store, tmp_path / "results", CAP)
        assert limits.until("free-a", NOW) == (until, "HTTP 429 at t0")
        assert limits.until("free-a", until) is None  # over at its reset
        assert limits.until("other", NOW) is None


def test_a_ci_run_without_a_database_reads_rate_limits_from_result_files(tmp_path: Path) -> None:
    results = tmp_path / "results"
    rate_limited_result(
        results, NOW - timedelta(minutes=5), "free-a", iso(NOW + timedelta(hours=1))
    )
    rate_limited_result(results, NOW - timedelta(days=3), "old", iso(NOW + timedelta(hours=1)))
    # A hostile file: a reset years away counts at most a day past its own run.
    rate_limited_result(results, NOW - timedelta(hours=2), "forever", "2999-01-01T00:00:00Z")
    rate_limited_result(results, NOW, "garbage", "not a time")
    # A file from the future does not pass the result checks: it never counts.
    rate_limited_result(results, NOW + timedelta(days=300), "future", iso(NOW + timedelta(hours=1)))
    limits = RateLimits(None, results, CAP)
    found = limits.until("free-a", NOW)
    assert found is not None
    assert found[0] == NOW + timedelta(hours=1)
    assert limits.until("old", NOW) is None  # its run is older than the window: not read
    forever = limits.until("forever", NOW)
    assert forever is not None
    assert forever[0] == NOW - timedelta(hours=2) + timedelta(days=1)
    assert limits.until("garbage", NOW) is None
    assert limits.until("future", NOW) is None
