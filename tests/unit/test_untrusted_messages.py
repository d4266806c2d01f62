"""Every message a worker sends is untrusted: parsing, the checks of events, usage, run ids
and artifacts, and a run on the files backend that hostile messages do not end."""

from __future__ import annotations

import base64
import os
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from crewbox.config import Settings
from crewbox.errors import ArtifactError, UserError
from crewbox.llm.pricing import Price, price_table
from crewbox.models import (
    MAX_CALL_TOKENS,
    MAX_CALL_USD,
    Artifact,
    Event,
    LLMCall,
    RejectedMessage,
    Request,
    Result,
    Task,
    TaskSpec,
    Usage,
    WorkerEvent,
)
from crewbox.personas import load_personas, load_role_prompt
from crewbox.progress import ProgressPrinter
from crewbox.queue.base import parse_message
from crewbox.queue.files import RUNS_DIR, TMP_DIR, FileQueue
from crewbox.runlog.files import FileRunLog
from crewbox.store import MAX_ARTIFACTS, RunStore, check_artifacts, sha256_hex
from crewbox.testing import ScriptedLLM
from orchestrator.run import ActiveRun, AttemptState, trusted_result, worker_payload
from orchestrator.service import MAX_REJECTED_LOGGED, Orchestrator
from orchestrator.synthesize import results_digest
from tests.conftest import ROOT, scripted_settings
from tests.hostile import (
    OWN,
    SECRET,
    SECRET_FILE,
    assert_contained,
    hostile_messages,
    own_result,
    plan_request,
    script,
)
from worker.service import TaskRunner

# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00not json {", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object but a list"),
        (b'{"kind": "run_failed", "run_id": "r"}', "not a valid Result"),
        (b'{"attempt": 1, "token": "t", "event": {"kind": "x", "run_id": "r"}}', "WorkerEvent"),
        (b'{"attempt": 1, "token": "t", "event": {"kind": "llm_call", "run_id": "."}}', "run_id"),
        (b'{"attempt": 1, "token": "t", "extra": 1, "event": {}}', "WorkerEvent"),
    ],
)
def test_a_message_that_does_not_parse_is_rejected_not_raised(raw: bytes, reason: str) -> None:
    message = parse_message(raw)
    assert isinstance(message, RejectedMessage)
    assert reason in message.reason and message.size_bytes == len(raw)


def test_a_huge_bad_message_is_rejected_without_quoting_it() -> None:
    raw = b'{"run_id": "r", "summary": "' + b"A" * 1_000_000 + b'", "status": "nope"}'
    message = parse_message(raw)
    assert isinstance(message, RejectedMessage)
    assert len(message.reason) < 300 and "AAAA" not in message.reason


def test_results_and_worker_events_parse() -> None:
    result = Result(run_id="r", task_id="t", persona="marie", status="succeeded")
    event = WorkerEvent(attempt=1, token="k", event=Event(kind="task_started", run_id="r"))
    assert parse_message(result.model_dump_json()) == result
    assert parse_message(event.model_dump_json()) == event


@pytest.mark.parametrize("cost", ["NaN", "Infinity", "-1"])
def test_costs_that_are_not_finite_or_negative_do_not_parse(cost: str) -> None:
    raw = '{"run_id": "r", "task_id": "t", "persona": "m", "status": "failed", '
    raw += f'"usage": {{"cost_usd": {cost}}}}}'
    assert isinstance(parse_message(raw), RejectedMessage)


# -- usage -----------------------------------------------------------------------------


def test_usage_is_never_negative() -> None:
    with pytest.raises(ValidationError):
        Usage(input_tokens=-1)
    with pytest.raises(ValidationError):
        Usage(cost_usd=Decimal("-0.01"))


def test_one_call_usage_is_bounded() -> None:
    assert Usage(input_tokens=150_000, output_tokens=64_000, calls=1).one_call_problem() is None
    assert "tokens in one call" in (Usage(input_tokens=10**9, calls=1).one_call_problem() or "")
    assert "for one call" in (Usage(cost_usd=Decimal(4499), calls=1).one_call_problem() or "")
    assert "calls counted as one" in (Usage(calls=7).one_call_problem() or "")


def test_the_cost_bound_covers_every_priced_model_at_the_token_bound() -> None:
    def rates(price: Price | None) -> list[Decimal]:
        if price is None:
            return []
        own = [
            price.input_usd_per_mtok,
            price.output_usd_per_mtok,
            price.cache_write_usd_per_mtok,
            price.cache_read_usd_per_mtok,
        ]
        return own + rates(price.long_context)

    top = max(rate for price in price_table().prices.values() for rate in rates(price))
    assert top * MAX_CALL_TOKENS / 1_000_000 <= MAX_CALL_USD


# -- worker events ---------------------------------------------------------------------


def event(kind: str, data: dict[str, object]) -> Event:
    return Event(kind=kind, run_id="r", task_id="t", persona="marie", data=data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "data", "problem"),
    [
        ("run_failed", {}, "may not send run_failed"),
        ("plan_ready", {}, "may not send plan_ready"),
        ("run_finished", {}, "may not send run_finished"),
        ("task_succeeded", {}, "may not send task_succeeded"),
        ("message_rejected", {}, "may not send"),
        ("task_started", {"attempt": 2}, "about attempt 2"),
        ("task_started", {}, "does not fit"),
        ("llm_call", {"stage": "planner", "usage": {}, "attempt": 1}, "a planner call"),
        ("llm_call", {"stage": "tasks", "usage": {}, "attempt": 3}, "of attempt 3"),
        ("llm_call", {"stage": "tasks", "usage": {"input_tokens": -5}, "attempt": 1}, "fit"),
        (
            "llm_call",
            {"stage": "tasks", "usage": {"cost_usd": 4499, "calls": 1}, "attempt": 1},
            "usage refused",
        ),
    ],
)
def test_worker_events_describe_only_their_attempt(
    kind: str, data: dict[str, object], problem: str
) -> None:
    payload, why = worker_payload(event(kind, data), attempt=1)
    assert payload is None and problem in why


def test_a_worker_call_within_bounds_is_kept() -> None:
    data = {"stage": "tasks", "usage": {"input_tokens": 5, "calls": 1}, "attempt": 1}
    payload, why = worker_payload(event("llm_call", data), attempt=1)
    assert isinstance(payload, LLMCall) and why == ""


# -- run ids as paths ------------------------------------------------------------------


@pytest.mark.parametrize("run_id", [".", "..", "r/marie", "../x", "", "a b", "r.1", "x" * 65])
def test_run_ids_that_are_not_one_plain_name_are_refused(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(ValidationError):
        Event(kind="task_started", run_id=run_id)
    with pytest.raises(UserError, match="is not a run id"):
        RunStore(tmp_path, run_id)


def test_task_folders_are_one_plain_name_each(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "r")
    for persona, task_id in (("..", "t"), ("marie", "../x"), ("a/b", "t"), ("marie", "")):
        with pytest.raises(ArtifactError):
            store.task_dir(persona, task_id)


# -- artifacts -------------------------------------------------------------------------


def carried(path: str, data: bytes = b"x", content: str | None = None) -> Artifact:
    b64 = base64.b64encode(data).decode() if content is None else content
    return Artifact(path=path, bytes=len(data), sha256=sha256_hex(data), content_b64=b64)


def named(path: str) -> Artifact:
    """An artifact with no content carried, as a forged result would name the secret."""
    return Artifact(path=path, bytes=10, sha256="0" * 64)


@pytest.mark.parametrize(
    ("artifacts", "problem"),
    [
        ([named("../../../../run/secrets/orchestrator_key")], "not a normalized"),
        ([named("/run/secrets/orchestrator_key")], "not a normalized"),
        ([carried("a/../b.md")], "not a normalized"),
        ([carried("./a.md")], "not a normalized"),
        ([carried("a//b.md")], "not a normalized"),
        ([carried("a/")], "not a normalized"),
        ([carried("")], "empty"),
        ([carried("a\x00b.md")], "control character"),
        ([carried("a\nb.md")], "control character"),
        ([carried("a\\..\\b.md")], "backslash"),
        ([carried("x" * 300)], "bytes long"),
        ([carried("\ud800.md")], "not valid UTF-8"),
        ([carried(".env")], "hidden"),
        ([carried("result.json")], "the task's own"),
        ([carried("a.md", content="%%% not base64 %%%")], "not base64"),
        ([carried("a.md"), carried("a.md")], "listed twice"),
        ([carried("x"), carried("x/y")], "is a file and the folder of"),
        ([carried("x/y"), carried("x")], "is a file and the folder of"),
        ([carried("big.bin", b"y" * 2000)], "CREWBOX_MAX_ARTIFACT_BYTES (1000 bytes)"),
        ([carried("a.bin", b"y" * 600), carried("b.bin", b"y" * 600)], "MAX_ARTIFACT_BYTES"),
        ([named("missing.md")], "not a file in its task folder"),
        ([carried(f"f{i}") for i in range(MAX_ARTIFACTS + 1)], "at most"),
    ],
)
def test_bad_artifacts_are_refused_before_anything_is_written(
    tmp_path: Path, artifacts: list[Artifact], problem: str
) -> None:
    store = RunStore(tmp_path, "r")
    result = Result(run_id="r", task_id="t", persona="marie", status="succeeded")
    with pytest.raises(ArtifactError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        store.write_result(result.model_copy(update={"artifacts": artifacts}), max_bytes=1000)
    assert not (store.task_dir("marie", "t") / "result.json").exists()


def test_a_carried_artifact_cannot_go_out_through_a_symlink(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "results", "r")
    folder = store.task_dir("marie", "t")
    folder.mkdir(parents=True)
    (folder / "out").symlink_to(tmp_path)
    with pytest.raises(ArtifactError, match="leaves its task folder"):
        check_artifacts(folder, [carried("out/evil.md")], None)


def test_an_artifact_in_place_is_checked_against_its_sha256(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a.md").write_bytes(b"hello")
    good = Artifact(path="a.md", bytes=5, sha256=sha256_hex(b"hello"))
    check_artifacts(folder, [good], 1)  # the limit counts carried content only
    with pytest.raises(ArtifactError, match="does not match"):
        check_artifacts(folder, [good.model_copy(update={"bytes": 6})], None)


def test_a_file_where_a_folder_must_be_fails_the_write_not_the_process(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "r")
    base = Result(run_id="r", task_id="t", persona="marie", status="succeeded")
    store.write_result(base.model_copy(update={"artifacts": [carried("x")]}))
    with pytest.raises(ArtifactError, match="cannot be written"):
        store.write_result(base.model_copy(update={"artifacts": [carried("x/y")]}))


# -- reading artifacts -----------------------------------------------------------------


def test_the_synthesis_reads_no_file_outside_the_run_folder(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text(SECRET)
    run_folder = tmp_path / "results" / "r"
    folder = run_folder / "marie" / "t"
    folder.mkdir(parents=True)
    (folder / "link.md").symlink_to(tmp_path / SECRET_FILE)
    (folder / "ok.md").write_text("fine")
    artifacts = [named(f"../../../../{SECRET_FILE}"), named("link.md"), named("ok.md")]
    result = Result(
        run_id="r", task_id="t", persona="marie", status="succeeded", artifacts=artifacts
    )
    outside = result.model_copy(update={"persona": "../../.."})
    digest = results_digest([result, outside], run_folder, 10_000)
    assert SECRET not in digest
    assert "fine" in digest and digest.count("not readable") == 5


def test_resume_does_not_read_an_artifact_outside_its_task_folder(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text(SECRET)
    store = RunStore(tmp_path / "results", "r")
    store.task_dir("marie", "t").mkdir(parents=True)
    (store.task_dir("marie", "t") / "link").symlink_to(tmp_path / SECRET_FILE)
    secret_sha = sha256_hex(SECRET.encode())
    artifacts = [
        Artifact(path=f"../../../../{SECRET_FILE}", bytes=len(SECRET), sha256=secret_sha),
        Artifact(path="link", bytes=len(SECRET), sha256=secret_sha),
    ]
    result = Result(
        run_id="r", task_id="t", persona="marie", status="succeeded", artifacts=artifacts
    )
    assert len(store.artifact_problems(result)) == 2


# -- a run on the files backend --------------------------------------------------------


def test_hostile_messages_mid_run_neither_end_the_run_nor_leak_on_files(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text(SECRET)
    settings = scripted_settings(
        tmp_path,
        task_retries=0,
    )
    llm = ScriptedLLM(script())
    queue = FileQueue(settings.tasks_dir)
    personas = load_personas(settings.prompts_dir)
    stop = threading.Event()
    for name in ("marie", "anga"):
        runner = TaskRunner(settings, personas[name], llm, f"test:{name}")
        kwargs = {"worker_id": f"test-{name}", "stop": stop}
        threading.Thread(
            target=queue.serve, args=(name, runner), kwargs=kwargs, daemon=True
        ).start()
    request = plan_request()
    sent: list[tuple[int, str]] = []

    def inject(raw: bytes) -> None:
        tmp = settings.tasks_dir / TMP_DIR / uuid.uuid4().hex
        tmp.write_bytes(raw)
        os.rename(
            tmp, settings.tasks_dir / RUNS_DIR / request.run_id / f"0-{uuid.uuid4().hex}.json"
        )

    def on_event(e: Event) -> None:
        events.append(e)
        if e.kind == "task_started" and e.task_id == OWN and not sent:
            claimed = next((settings.tasks_dir / "marie" / "claimed").glob("*/*.json"))
            own = Task.model_validate_json(claimed.read_bytes())
            hostile = hostile_messages(request.run_id, own)
            for _, raw in hostile:
                inject(raw)
            inject(own_result(request.run_id, own))
            sent.append((len(hostile), own.token))

    events: list[Event] = []
    orch = Orchestrator(
        settings,
        llm,
        queue,
        personas,
        load_role_prompt(settings.prompts_dir, "orchestrator"),
        load_role_prompt(settings.prompts_dir, "synthesizer"),
        FileRunLog(settings.results_dir),
        on_event=on_event,
    )
    try:
        summary = orch.run(request)
    finally:
        stop.set()
    assert sent, "the hostile messages were never sent"
    (n_hostile, token), run_folder = sent[0], settings.results_dir / request.run_id
    assert_contained(summary, events, llm, settings.results_dir, n_hostile)
    assert token not in (run_folder / "events.jsonl").read_text()  # the token is never logged
    assert token not in (run_folder / "summary.json").read_text()


def test_a_rejected_message_is_shown_to_whoever_follows_the_run() -> None:
    rejected = Event(kind="message_rejected", run_id="r", message="result refused: wrong token")
    assert "message rejected" in (ProgressPrinter().line(rejected) or "")


@pytest.mark.parametrize(
    ("budget_usd", "claimed", "kept"),
    [
        (None, "run", ""),
        (Decimal(1), "run", "run"),
        (None, "persona:marie", "persona:marie"),
        (None, "persona:anga", ""),
    ],
)
def test_a_result_names_only_a_budget_its_task_has(
    budget_usd: Decimal | None, claimed: str, kept: str
) -> None:
    spec = TaskSpec(id="t", persona="marie", title="t", instructions="x")
    task = Task(run_id="r", spec=spec, request_text="x", budget_usd=budget_usd)
    result = Result(
        run_id="r", task_id="t", persona="marie", status="budget_exceeded", budget_scope=claimed
    )
    assert trusted_result(result, AttemptState(task=task)).budget_scope == kept


def test_a_flood_of_bad_messages_logs_a_bounded_number_of_events(tmp_path: Path) -> None:
    settings = Settings(provider="scripted", prompts_dir=ROOT / "prompts", results_dir=tmp_path)
    events: list[Event] = []
    orch = Orchestrator(
        settings,
        ScriptedLLM([]),
        FileQueue(tmp_path / "tasks"),
        load_personas(settings.prompts_dir),
        load_role_prompt(settings.prompts_dir, "orchestrator"),
        load_role_prompt(settings.prompts_dir, "synthesizer"),
        FileRunLog(tmp_path),
        on_event=events.append,
    )
    request = Request(text="flood")
    run = ActiveRun(request=request, store=RunStore(tmp_path, request.run_id))
    orch.log.create(request)
    for _ in range(MAX_REJECTED_LOGGED + 50):
        orch._on_message(run, parse_message(b"junk"))
    assert len(events) == MAX_REJECTED_LOGGED == run.rejected - 50
    assert "dropped without an event" in events[-1].message
