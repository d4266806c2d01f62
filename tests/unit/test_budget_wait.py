"""A call that waits for other calls' spend holds has that wait taken from its timeout."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from crewbox.budget import BudgetedLLM, to_nano
from crewbox.llm.base import Message, SystemBlock
from crewbox.models import Request
from crewbox.runlog.base import SpendHold
from crewbox.runlog.files import FileRunLog
from crewbox.testing import ScriptedLLM


class TimeoutRecorder:
    """The scripted model, noting the ``timeout_s`` each call was given."""

    def __init__(self) -> None:
        self.inner = ScriptedLLM([{"text": "ok"}])
        self.model = self.inner.model
        self.timeouts: list[float | None] = []

    def complete(self, **call: Any) -> Any:
        self.timeouts.append(call.get("timeout_s"))
        return self.inner.complete(**call)


def test_the_time_spent_waiting_for_a_hold_is_not_given_to_the_call(tmp_path: Path) -> None:
    log = FileRunLog(tmp_path)
    request = Request(text="r")
    log.create(request)
    limit = Decimal("0.01")
    other = SpendHold("run", "other", to_nano(limit), to_nano(limit), ttl_s=60)
    assert log.reserve_spend(request.run_id, other) == "reserved"
    threading.Timer(0.5, lambda: log.settle_spend(request.run_id, other, 0)).start()
    inner = TimeoutRecorder()
    llm = BudgetedLLM(inner, log, request.run_id, [("run", limit)])
    started = time.monotonic()
    llm.complete(
        system=[SystemBlock(text="s")], messages=[Message(role="user", content="m")],
        max_tokens=16, timeout_s=5.0,
    )  # fmt: skip
    waited = time.monotonic() - started
    (given,) = inner.timeouts
    assert waited >= 0.5 and given is not None
    assert given <= 5.0 - 0.45  # what was left, not the whole 5 s
