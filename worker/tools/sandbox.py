"""The path sandbox of a task: which files its tools may touch.

A task's tools may read paths inside its output folder (the working directory, where
relative paths resolve) and inside its persona's workspace, and write only inside the output
folder: the workspace is read-only to them, in embedded mode as in the cluster (where it is
mounted read-only), because a task's deliverables are its artifacts. Every path is resolved,
symlinks included, before the check, so ``..`` and links that point out are refused alike.

This is a path check, not an operating-system boundary: a path is checked, then opened, so a
process swapping a symlink in between could win the race. In the cluster the container is the
boundary; the check keeps the model's file tools honest and gives it errors it can act on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from crewbox.errors import ToolError

SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})
"""Version-control folders that Glob and Grep never descend into (as ripgrep by default)."""


class Sandbox:
    """The folders a task's tools may read, and the one they may write.

    Attributes:
        cwd: the task's output folder, resolved; relative paths resolve against it, and it
            is the only folder the tools write in.
        roots: resolved folders every path must stay inside: ``cwd``, then the read-only ones.
        read_only: resolved folders the tools may read but not write (the workspace).
    """

    def __init__(self, cwd: Path, read_only: list[Path] | None = None) -> None:
        """Build a sandbox.

        Args:
            cwd: the task's output folder (need not exist yet).
            read_only: folders the tools may read too, usually ``[workspace]``.
        """
        self.cwd = cwd.resolve()
        self.read_only = [root.resolve() for root in read_only or []]
        self.roots = list(dict.fromkeys([self.cwd, *self.read_only]))

    def contains(self, real: Path) -> bool:
        """True when the already-resolved absolute path ``real`` is inside one of the roots."""
        return any(_inside(real, root) for root in self.roots)

    def resolve(self, path: str) -> Path:
        """Turn a path the model gave into a resolved absolute path inside the sandbox.

        Relative paths resolve against ``cwd``; symlinks are followed, also in the parent
        chain of a file that does not exist yet.

        Raises:
            ToolError: the path is empty or malformed, or resolves outside every root.
        """
        if not path or "\0" in path:
            raise ToolError(f"invalid path {path!r}; {self._hint()}")
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.cwd / candidate
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
            raise ToolError(f"cannot resolve path {path}: {exc}") from exc
        if not self.contains(real):
            raise ToolError(f"path {_shown(path, real)} is outside the sandbox; {self._hint()}")
        return real

    def resolve_writable(self, path: str) -> Path:
        """As :meth:`resolve`, for a file the tool will write: it must be inside ``cwd``.

        Raises:
            ToolError: as :meth:`resolve`, or the path is in a read-only folder (the
                message says deliverables go in the working directory).
        """
        real = self.resolve(path)
        if not _inside(real, self.cwd):
            raise ToolError(
                f"path {_shown(path, real)} is in the read-only workspace; deliverables go "
                f"in the working directory {self.cwd} (write them by a relative path)"
            )
        return real

    def display(self, path: Path | str) -> str:
        """The string to show the model for ``path``: its absolute path."""
        shown = Path(path)
        return str(shown if shown.is_absolute() else self.cwd / shown)

    def walk_files(self, top: Path) -> Iterator[Path]:
        """Yield every file under the folder ``top`` whose real path is inside the sandbox.

        Symlinked folders are never entered; a symlinked file is yielded (under its own
        path) only when its target is inside the sandbox. Folders in ``SKIPPED_DIRS`` are
        skipped. Order: folders and files sorted by name. Unreadable folders are skipped.
        """
        for folder, dirs, files in os.walk(top, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                path = Path(folder, name)
                if not path.is_symlink() or self._link_inside(path):
                    yield path

    def _link_inside(self, link: Path) -> bool:
        try:
            real = link.resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        return self.contains(real) and real.is_file()

    def _hint(self) -> str:
        places = " or ".join(str(root) for root in self.roots)
        return f"use paths under {places}"


def _inside(real: Path, root: Path) -> bool:
    return real == root or real.is_relative_to(root)


def _shown(path: str, real: Path) -> str:
    return path if str(real) == path else f"{path} (resolves to {real})"
