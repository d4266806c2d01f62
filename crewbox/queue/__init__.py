"""Task queue backends behind the :class:`~crewbox.queue.base.TaskQueue` protocol."""

from __future__ import annotations

from crewbox.config import Settings
from crewbox.queue.base import TaskQueue


def make_queue(settings: Settings, service: bool = False) -> TaskQueue:
    """The backend ``settings.queue`` names: ``files`` (under tasks_dir) or ``rq`` (Redis;
    ``service``: ride out a Redis restart instead of failing fast)."""
    if settings.queue == "rq":
        from crewbox.queue.rq import RQQueue

        return RQQueue.from_settings(settings, service)
    from crewbox.queue.files import FileQueue

    return FileQueue(settings.tasks_dir)
