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
import binascii
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crewbox.errors import ArtifactError, RunNotFoundError, UserError
from crewbox.models import RUN_ID_PATTERN, Artifact, Event, Plan, Request, Result, RunSummary

RESULT_FILE = "result.json"

MAX_ARTIFACTS = 1000
"""Most artifacts one task may list (a task writing a thousand files is a runaway tool
loop, not a deliverable)."""

MAX_ARTIFACT_PATH_BYTES = 255
"""Longest artifact path (UTF-8 bytes, relative to the task folder): NAME_MAX of ext4 and
most Linux filesystems for one name, so no part of it can fail with ENAMETOOLONG."""

PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A persona name or task id used as one folder name under a run."""


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
        """Raises UserError when ``run_id`` is not a run id (RUN_ID_PATTERN): a folder
        outside ``results_dir`` is never opened."""
        if not re.fullmatch(RUN_ID_PATTERN, run_id):
            raise UserError(
                f"{run_id[:80]!r} is not a run id (letters, digits, '-' and '_', like "
                "20261121-193500-3fa2c1); `crewbox status` shows the latest run"
            )
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
        """The output folder of a task: ``<run>/<persona>/<task_id>/``.

        Raises:
            ArtifactError: ``persona`` or ``task_id`` is not one plain folder name.
        """
        for part in (persona, task_id):
            if not PATH_PART.fullmatch(part):
                raise ArtifactError(f"{part[:80]!r} is not a persona name or task id")
        return self.folder / persona / task_id

    def write_result(self, result: Result, max_bytes: int | None = None) -> Result:
        """Write the task's artifacts (when the result carries them) and its result.json,
        after :func:`check_artifacts` (``max_bytes``: the most carried content, in all).

        Returns the result as written: artifacts without their carried content.

        Raises:
            ArtifactError: an artifact is refused (see check_artifacts) or cannot be written
                where it says (a file where a folder must be, left by an earlier attempt);
                nothing of the result is written then.
        """
        folder = self.task_dir(result.persona, result.task_id)
        carried = check_artifacts(folder, result.artifacts, max_bytes)
        folder.mkdir(parents=True, exist_ok=True)
        for path, data in carried.items():
            _write_artifact(folder, path, data)
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
        """Artifacts of ``result`` that are missing, outside the task folder (after
        symlinks) or whose sha256 no longer matches."""
        problems = []
        for artifact in result.artifacts:
            path = self.artifact_file(result.persona, result.task_id, artifact.path)
            if path is None or sha256_hex(path.read_bytes()) != artifact.sha256:
                problems.append(f"{result.persona}/{result.task_id}/{artifact.path}")
        return problems

    def artifact_file(self, persona: str, task_id: str, path: str) -> Path | None:
        """The file of a task's artifact, resolved (symlinks followed), or None when it is
        not a regular file inside the task's folder: whatever a result says, nothing
        outside the run is read through it."""
        try:
            folder = self.task_dir(persona, task_id)
        except ArtifactError:
            return None
        return file_inside(folder, path)

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


def file_inside(root: Path, path: str) -> Path | None:
    """``root / path`` resolved (symlinks followed) when it is a regular file inside
    ``root`` (resolved too), else None (outside, missing, a folder, a NUL in the path)."""
    try:
        base = root.resolve()
        target = (base / path).resolve()
        inside = target.is_relative_to(base) and target.is_file()
    except (OSError, ValueError, RuntimeError):  # ValueError: NUL; RuntimeError: a loop
        return None
    return target if inside else None


def check_artifacts(
    folder: Path, artifacts: list[Artifact], max_bytes: int | None
) -> dict[str, bytes]:
    """Check the artifacts a result lists before anything of it is written or read: at most
    MAX_ARTIFACTS, each path safe (:func:`artifact_path_problem`) and inside ``folder``
    once resolved, no path twice, no path that is a folder of another (``x`` and ``x/y``),
    a valid sha256 and size; carried content valid base64 matching both, at most
    ``max_bytes`` in all; content not carried: the file is in ``folder`` and matches.

    Returns the carried content, decoded and checked, by artifact path.

    Raises:
        ArtifactError: the first problem, in one line naming the artifact.
    """
    if len(artifacts) > MAX_ARTIFACTS:
        raise ArtifactError(f"{len(artifacts)} artifacts; a task may send at most {MAX_ARTIFACTS}")
    paths = [a.path for a in artifacts]
    for path in paths:
        if problem := artifact_path_problem(path):
            raise ArtifactError(f"artifact path {path[:80]!r} refused: {problem}")
    _check_layout(paths)
    carried: dict[str, bytes] = {}
    total = 0
    for artifact in artifacts:
        _check_inside(folder, artifact.path)
        if artifact.content_b64 is None:
            _check_on_disk(folder, artifact)
            continue
        carried[artifact.path] = decoded_content(artifact)
        total += artifact.bytes
        if max_bytes is not None and total > max_bytes:
            raise ArtifactError(
                f"artifacts exceed CREWBOX_MAX_ARTIFACT_BYTES ({max_bytes} bytes) at "
                f"{artifact.path!r}"
            )
    return carried


def artifact_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be an artifact's path, or None: it must be relative, normalized
    POSIX (no empty, ``.`` or ``..`` part, no ``/`` at either end, no backslash), have no
    control character, no hidden part (``.x``), not be ``result.json``, and be at most
    MAX_ARTIFACT_PATH_BYTES in UTF-8."""
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if not path:
        return "empty"
    if size > MAX_ARTIFACT_PATH_BYTES:
        return f"{size} bytes long (at most {MAX_ARTIFACT_PATH_BYTES})"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in path):
        return "has a control character"
    if "\\" in path:
        return "has a backslash"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "not a normalized relative path (empty, '.' or '..' part, or a '/' at an end)"
    if any(part.startswith(".") for part in parts):
        return "a hidden file"
    if path == RESULT_FILE:
        return f"{RESULT_FILE} is the task's own"
    return None


def _check_layout(paths: list[str]) -> None:
    seen = set(paths)
    if len(seen) != len(paths):
        twice = next(p for p in paths if paths.count(p) > 1)
        raise ArtifactError(f"artifact path {twice!r} listed twice")
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in seen:
                raise ArtifactError(f"artifact {parent!r} is a file and the folder of {path!r}")


def _check_inside(folder: Path, path: str) -> None:
    root = folder.resolve()
    if not (root / path).resolve().is_relative_to(root):
        raise ArtifactError(f"artifact path {path!r} leaves its task folder")


def _check_on_disk(folder: Path, artifact: Artifact) -> None:
    """An artifact that is not carried was written in place (embedded runs): it must be
    there, a regular file inside ``folder``, with its size and sha256."""
    target = (folder / artifact.path).resolve()
    if not target.is_file() or not target.is_relative_to(folder.resolve()):
        raise ArtifactError(f"artifact {artifact.path!r} is not a file in its task folder")
    data = target.read_bytes()
    if len(data) != artifact.bytes or sha256_hex(data) != artifact.sha256:
        raise ArtifactError(f"artifact {artifact.path!r}: the file does not match its sha256")


def decoded_content(artifact: Artifact) -> bytes:
    """A carried artifact's content, checked against its size and sha256.

    Raises:
        ArtifactError: not valid base64, or the content's size or sha256 differs.
    """
    try:
        data = base64.b64decode(artifact.content_b64 or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ArtifactError(f"artifact {artifact.path!r}: content is not base64 ({exc})") from exc
    if len(data) != artifact.bytes or sha256_hex(data) != artifact.sha256:
        raise ArtifactError(f"artifact {artifact.path!r}: content does not match its sha256")
    return data


def write_carried_artifact(folder: Path, artifact: Artifact) -> Path:
    """Decode a carried artifact into ``folder`` after checking its path and sha256.

    Raises:
        ArtifactError: the path is refused or escapes ``folder``, the content is not
            base64 or its sha256 or size differs, or a file stands where a folder of the
            path must be (or a folder where the file must be).
    """
    if problem := artifact_path_problem(artifact.path):
        raise ArtifactError(f"artifact path {artifact.path[:80]!r} refused: {problem}")
    _check_inside(folder, artifact.path)
    return _write_artifact(folder, artifact.path, decoded_content(artifact))


def _write_artifact(folder: Path, path: str, data: bytes) -> Path:
    """Write checked content to ``folder / path`` (atomically: a full disk leaves no empty
    or partial artifact); returns the file."""
    target = (folder / path).resolve()
    try:
        write_atomic(target, data)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise ArtifactError(f"artifact {path!r} cannot be written: {exc.strerror}") from exc
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
