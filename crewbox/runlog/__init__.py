"""The run log: the source of truth of a run, behind the :class:`RunLog` protocol.

``files`` keeps it in ``results/<run_id>/`` (embedded mode); ``redis`` in Redis (the
cluster), where the orchestrator also mirrors it into ``results/`` for the user.
"""

from __future__ import annotations

from crewbox.config import Settings
from crewbox.runlog.base import RunLog


def make_run_log(settings: Settings, service: bool = False) -> RunLog:
    """The run log of ``settings.queue``: Redis for ``rq`` (``service``: ride out a Redis
    restart), results/ for ``files``."""
    from crewbox.runlog.files import FileRunLog

    files = FileRunLog(settings.results_dir)
    if settings.queue != "rq":
        return files
    from crewbox.redis_client import CLIENT_RETRIES, SERVICE_RETRIES, connect
    from crewbox.runlog.redis import RedisRunLog

    return RedisRunLog(connect(settings, SERVICE_RETRIES if service else CLIENT_RETRIES))
