"""crewbox's benchmarks (`make bench`, `python -m bench`): its own overhead next to raw RQ and
to the ideal, every figure measured side by side in one run on one machine.

Modules: ``stats`` (the arithmetic), ``machine`` (what ran it), ``redis_server`` (a Redis to
measure on), ``pipeline`` (crewbox's real orchestrator and worker processes with a scripted
LLM), ``raw_rq`` (a bare RQ SimpleWorker on the same Redis), ``startup`` (``crewbox run``'s
start-up), ``cluster`` (``make up`` and a submit, with a Docker engine), ``report`` (the
table and ``bench/results.json``).
"""
