"""Engines: who runs a task inside a worker (``builtin`` or ``claude-code``), behind one seam
(worker.engines.base)."""
