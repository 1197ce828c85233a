"""Recording a finished attempt: its result files (the patch first, then the ``.json``
and ``.md``), then its row, and the day's model spend.

Order of writes for every finished run: result file first, then the row. A run whose
result file exists therefore counts as done even if the process died before the row
(see ``Store.resume``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from runner.core.clock import iso
from runner.core.states import Mode, RunState
from runner.dispatch.outcome import Finished, Outcome
from runner.reach.calls import GatewayOutcome, Via
from runner.state.results import RunResult, write_result
from runner.state.spend import DailySpend

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from pathlib import Path

    from runner.core.redaction import Redactor
    from runner.dispatch.agent import Transcript
    from runner.dispatch.isolation import Isolated
    from runner.state.interface import StateStore
    from runner.state.records import RunRecord

log = logging.getLogger(__name__)


class Recorder:
    """Writes finished attempts' result files and rows; keeps today's spend."""

    def __init__(
        self,
        *,
        store: StateStore,
        results_root: Path,
        redactor: Redactor,
        clock: Callable[[], datetime],
        mode_of: Callable[[], Mode] | None,
        result_file_bytes: int,
    ) -> None:
        """``mode_of``: the system mode now (``runner.dispatch.faults``), for result
        files; None: normal."""
        self._store = store
        self._results = results_root
        self._redactor = redactor
        self._clock = clock
        self._mode_of = mode_of
        self.spend = DailySpend(store, results_root, result_file_bytes)
        """Today's model spend, kept as runs finish."""

    def record(self, outcome: Outcome) -> Finished:
        """Write the result files (the patch first), then the row (no await: nothing
        interrupts it).

        When the files cannot be written (a name too long, a full disk, a read-only
        folder) the run ends ``failed`` with the reason in one line, and no file is left
        behind."""
        result = self._result(outcome)
        try:
            path = write_result(self._results, result, self._redactor, patch=self._patch(outcome))
        except OSError as exc:
            error = f"result file not written: {exc.strerror or type(exc).__name__}"
            log.error("run %s %s: %s", outcome.task.id, outcome.run.run_id, error)
            failed = Outcome(
                outcome.task,
                outcome.run,
                RunState.FAILED,
                error=error,
                executor=outcome.executor,
                transcript=outcome.transcript,
            )
            self.count_spend(outcome.transcript)
            return self._row(failed, self._result(failed), None)
        self.count_spend(outcome.transcript)
        return self._row(outcome, result, path)

    def count_spend(self, transcript: Transcript | None) -> None:
        """Add an attempt's model cost to today's running total."""
        if transcript is not None:
            self.spend.add(transcript.cost_usd, self._clock())

    def _patch(self, outcome: Outcome) -> bytes | None:
        """The patch kept beside the result: a completed run's accepted change, unless
        (whole) it still shows a secret."""
        isolated = outcome.isolated
        if isolated is None or isolated.proposal is None:
            return None
        patch = isolated.proposal.patch
        if not patch or outcome.state is not RunState.COMPLETED:
            return None
        text = patch.decode("utf-8", errors="replace")
        return patch if self._redactor.text(text) == text else None

    def _result(self, outcome: Outcome) -> RunResult:
        now = self._clock()
        run, started = outcome.run, outcome.started
        prompt: dict[str, Any] = {}
        mode = self._mode_of() if self._mode_of is not None else Mode.NORMAL
        if (transcript := outcome.transcript) is not None:
            # Extra result fields beside DESIGN's (the model allows them): `agent`, `note`.
            prompt = {
                "model": transcript.model,
                "tier": transcript.tier,
                "usage": transcript.usage(),
                "agent": transcript.as_dict(),
            }
            mode = _prompt_mode(outcome, transcript, mode)
        if outcome.note is not None:
            prompt["note"] = outcome.note
        if outcome.earlier:
            last = {"attempt": run.attempt, "error": outcome.error}
            prompt["attempts"] = [*outcome.earlier, last]
        if (isolated := outcome.isolated) is not None:
            # Extra fields (DESIGN §3, Trust): how the run was confined, what it changed.
            prompt["sandbox"] = isolated.sandbox
            prompt["changes"] = _changes(outcome, isolated, self._patch(outcome) is not None)
        return RunResult(
            task_id=outcome.task.id,
            run_id=run.run_id,
            task_hash=run.task_hash,
            slot=run.slot,
            state=outcome.state,
            attempt=run.attempt,
            executor=outcome.executor or run.executor,
            tool=outcome.task.spec.tool or (transcript.agent_tool if transcript else None),
            mode=mode,
            started_at=run.started_at or iso(now),
            finished_at=iso(now),
            duration_s=round(time.perf_counter() - started, 4) if started is not None else 0.0,
            output=outcome.output,
            error=None if outcome.error is None else self._redactor.text(outcome.error),
            **prompt,
        )

    def _row(self, outcome: Outcome, result: RunResult, path: Path | None) -> Finished:
        run = outcome.run
        final = self._store.transition(
            run,
            outcome.state,
            error=result.error,
            result_path=None if path is None else str(path),
            executor=result.executor,
            detail=result.error or outcome.note or _fallbacks(outcome.transcript) or "ok",
            **_model_fields(result, run),
            **({"note": outcome.note} if outcome.note is not None else {}),
        )
        return Finished(outcome.task, final, path)


def _prompt_mode(outcome: Outcome, transcript: Transcript, now: Mode) -> Mode:
    """The mode a prompt run's model calls were made in: brainstem while it waits,
    degraded when its last answer came from the direct API, normal from the gateway,
    else (no model call: an agent tool) the mode now."""
    if outcome.state is RunState.WAITING:
        return Mode.BRAINSTEM
    answered = [c for c in transcript.model_calls if c.outcome is GatewayOutcome.OK]
    if not answered:
        return now
    return Mode.DEGRADED if answered[-1].via is Via.DIRECT else Mode.NORMAL


def spent_fields(run: RunRecord, transcript: Transcript | None) -> dict[str, Any]:
    """``cost_usd`` for the row: earlier attempts' spend plus this attempt's, so the daily
    cap counts a retried run's every attempt (the result file has the last one's)."""
    if transcript is None or transcript.cost_usd is None:
        return {}
    return {"cost_usd": (run.cost_usd or 0.0) + transcript.cost_usd}


def _model_fields(result: RunResult, run: RunRecord) -> dict[str, Any]:
    """The row's model columns for a prompt run (none for a tool run)."""
    if result.model is None and result.usage.cost_usd is None:
        return {}
    cost = result.usage.cost_usd
    if cost is not None:
        cost += run.cost_usd or 0.0
    return {"model": result.model, "tier": result.tier, "cost_usd": cost}


def _changes(outcome: Outcome, isolated: Isolated, kept: bool) -> dict[str, Any] | None:
    """The result's ``changes``: the patch file's name, the paths in it, the refused and
    the unpublished ones."""
    proposal = isolated.proposal
    if proposal is None:
        return None
    changes = proposal.as_dict()
    changes["patch"] = f"{outcome.run.run_id}.patch" if kept else None
    if proposal.files and not kept:
        changes["not_published"] = [*changes["not_published"], *changes["files"]]
        changes["files"] = []
        changes["note"] = "the run did not complete: its change is not kept"
    return changes


def _fallbacks(transcript: Transcript | None) -> str:
    """The fallback steps a prompt run took, for its event row ("" when none)."""
    if transcript is None:
        return ""
    failed = [f"{c.model} ({c.tier}) {c.outcome}" for c in transcript.model_calls if c.detail]
    if not failed:
        return ""
    return f"ok; fell back past {', '.join(failed)}; answered by {transcript.model}"
