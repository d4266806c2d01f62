"""Run state on disk: the ``results/<run_id>/`` layout and its append-only ``events.jsonl``.

Layout of one run folder::

    results/<run_id>/request.json       the Request
    results/<run_id>/plan.json          the Plan that was dispatched
    results/<run_id>/events.jsonl       one Event per line, append-only
    results/<run_id>/<persona>/<task_id>/   the task's artifacts and its result.json
    results/<run_id>/final.md           the synthesis
    results/<run_id>/summary.json       the RunSummary

JSON files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crewbox.errors import ArtifactError, RunNotFoundError
from crewbox.models import Artifact, Event, Plan, Request, Result, RunSummary

RESULT_FILE = "result.json"


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8) or bytes to ``path`` through a temporary file and a rename
    (atomic on POSIX): a failed write (a full disk) leaves neither ``path`` nor the
    temporary file.

    Raises:
        OSError: the write failed (ENOSPC: no space left on the device).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(text.encode() if isinstance(text, str) else text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked_json(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON object in ``path`` (``{}`` when there is none), held under an exclusive
    ``flock`` on ``<path>.lock`` for the block, so processes update it one at a time; it is
    written back (atomically) only when the block changed it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        data: dict[str, Any] = json.loads(before) if before else {}
        yield data
        after = json.dumps(data)
        if after != before:
            write_atomic(path, after)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class RunStore:
    """One run's folder under ``results_dir``; every write of a run goes through here."""

    def __init__(self, results_dir: Path, run_id: str) -> None:
        self.run_id = run_id
        self.folder = results_dir / run_id
        self._lock = threading.Lock()

    @classmethod
    def open(cls, results_dir: Path, run_id: str) -> RunStore:
        """An existing run.

        Raises:
            RunNotFoundError: no folder ``results_dir/run_id``.
        """
        store = cls(results_dir, run_id)
        if not store.folder.is_dir():
            raise RunNotFoundError(
                f"no run {run_id!r} under {results_dir}/; `ls {results_dir}` lists the runs"
            )
        return store

    def create(self, request: Request) -> None:
        """Make the run folder and write ``request.json``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / "request.json", request.model_dump_json(indent=2))

    def write_plan(self, plan: Plan) -> None:
        """Write ``plan.json``: the plan that is dispatched."""
        write_atomic(self.folder / "plan.json", plan.model_dump_json(indent=2))

    def append_event(self, event: Event) -> None:
        """Append one line to ``events.jsonl`` (one write call per line)."""
        line = (event.model_dump_json() + "\n").encode()
        with self._lock:
            append_whole(self.folder / "events.jsonl", line)

    def events(self) -> list[Event]:
        """Every event so far, in order; an empty list before the first."""
        path = self.folder / "events.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [Event.model_validate_json(line) for line in lines if line.strip()]

    def task_dir(self, persona: str, task_id: str) -> Path:
        """The output folder of a task: ``<run>/<persona>/<task_id>/``."""
        return self.folder / persona / task_id

    def write_result(self, result: Result) -> Result:
        """Write the task's artifacts (when the result carries them) and its result.json.

        Returns the result as written: artifacts without their carried content. Raises
        ArtifactError when carried content does not match its sha256 or a path leaves the
        task folder.
        """
        folder = self.task_dir(result.persona, result.task_id)
        folder.mkdir(parents=True, exist_ok=True)
        for artifact in result.artifacts:
            if artifact.content_b64 is not None:
                write_carried_artifact(folder, artifact)
        stripped = [a.model_copy(update={"content_b64": None}) for a in result.artifacts]
        on_disk = result.model_copy(update={"artifacts": stripped})
        write_atomic(folder / RESULT_FILE, on_disk.model_dump_json(indent=2))
        return on_disk

    def read_result(self, persona: str, task_id: str) -> Result | None:
        """The task's result.json, or None when it is missing or unreadable."""
        path = self.task_dir(persona, task_id) / RESULT_FILE
        try:
            return Result.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            return None

    def artifact_problems(self, result: Result) -> list[str]:
        """Artifacts of ``result`` that are missing or whose sha256 no longer matches."""
        folder = self.task_dir(result.persona, result.task_id)
        problems = []
        for artifact in result.artifacts:
            path = folder / artifact.path
            if not path.is_file() or sha256_hex(path.read_bytes()) != artifact.sha256:
                problems.append(f"{result.persona}/{result.task_id}/{artifact.path}")
        return problems

    def write_final(self, text: str) -> Path:
        """Write ``final.md`` and return its path."""
        path = self.folder / "final.md"
        write_atomic(path, text)
        return path

    def write_summary(self, summary: RunSummary) -> None:
        """Write ``summary.json``."""
        write_atomic(self.folder / "summary.json", summary.model_dump_json(indent=2))

    def summary(self) -> RunSummary | None:
        """The run's summary, or None while the run has not finished."""
        path = self.folder / "summary.json"
        if not path.exists():
            return None
        return RunSummary.model_validate_json(path.read_text(encoding="utf-8"))

    def request(self) -> Request:
        """The run's Request."""
        return Request.model_validate_json((self.folder / "request.json").read_text("utf-8"))


def write_carried_artifact(folder: Path, artifact: Artifact) -> Path:
    """Decode a carried artifact into ``folder`` after checking its path and sha256.

    Raises:
        ArtifactError: the path escapes ``folder``, or the content's sha256 or size differs.
    """
    target = (folder / artifact.path).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ArtifactError(f"artifact path {artifact.path!r} leaves its task folder")
    data = base64.b64decode(artifact.content_b64 or "")
    if sha256_hex(data) != artifact.sha256 or len(data) != artifact.bytes:
        raise ArtifactError(f"artifact {artifact.path!r}: content does not match its sha256")
    write_atomic(target, data)  # a full disk leaves no empty or partial artifact
    return target


def append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` in one write, or not at all: a short or failed write (a
    full disk) is cut off again, so no half line is left.

    Raises:
        OSError: the write failed (ENOSPC for a short write).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def list_artifacts(
    folder: Path, *, carry: bool = False, max_bytes: int | None = None
) -> list[Artifact]:
    """The files under ``folder`` (result.json and hidden files excluded), sorted by path.

    ``carry``: embed each file's content (base64) for a result that travels to another host.

    Raises:
        ArtifactError: with ``carry``, when the files add up to more than ``max_bytes``.
    """
    artifacts: list[Artifact] = []
    total = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        if rel == RESULT_FILE or any(part.startswith(".") for part in Path(rel).parts):
            continue
        data = path.read_bytes()
        total += len(data)
        if carry and max_bytes is not None and total > max_bytes:
            raise ArtifactError(
                f"artifacts exceed CREWBOX_MAX_ARTIFACT_BYTES ({max_bytes} bytes) at {rel!r}; "
                "write smaller files or raise the limit"
            )
        content = base64.b64encode(data).decode() if carry else None
        artifacts.append(
            Artifact(path=rel, bytes=len(data), sha256=sha256_hex(data), content_b64=content)
        )
    return artifacts
