"""A persona with ``engine: claude-code`` in the compose cluster, as `make up` starts it: its
service runs ``<project>:claude-code`` (Dockerfile.claude-code on the project's image, built
by `make up`), hardened like every worker; a one-task plan for it comes back with the file
Claude Code's Write tool made, and summary.json's usage equals the scripted ledger.

The LLM (the only fake) is ScriptedLLM in the worker (``CREWBOX_PROVIDER=scripted``): the
real Claude Code CLI calls the worker's Messages gateway, which makes each call through the
worker's client, as it would the Anthropic API; every answered call is recorded on the host.

The cluster is a copy of the project (the persona added to the copy's prompts/) under its
own compose project (``CREWBOX_TEST_PROJECT_SUFFIX`` honoured), started with
`make up PERSONAS=cody`. Measured on 2 cores: 36 s with the claude-code image built anew
(pip installs claude-agent-sdk, a 430 MB layer, in about 6 s from a near package index; its
base's apt and pip layers cached), 18 s warm (both images from Docker's layer cache). With
no cache at all, add crewbox's own image build and a slower index: minutes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from crewbox.models import RunSummary, Usage
from crewbox.testing import recorded_calls
from tests.e2e.chaos import ChaosCluster, scripted_override, task
from tests.e2e.cluster import compose_answers, copy_project, project_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

PROJECT = project_name("crewbox-engine-cluster")
PERSONA = "cody"
MARKER = "CCE2E-5150"
"""In the task's instructions: the scripted steps of its calls match it."""
REQUEST = "claude-code in the cluster"
CONTENT = "hello from Claude Code\n"

SERVICES = ("orchestrator", PERSONA)
OVERRIDE = scripted_override(SERVICES)

STEPS = [
    {
        "match": MARKER,
        "text": "Writing hello.md.",
        "tool_uses": [{"name": "Write", "input": {"file_path": "hello.md", "content": CONTENT}}],
        "usage": {"input_tokens": 1200, "output_tokens": 80},
    },
    {
        "match": MARKER,
        "text": "Wrote hello.md.",
        "usage": {"input_tokens": 1500, "output_tokens": 30},
    },
    {"match": f"## Request\\n\\n{REQUEST}", "text": "cody wrote hello.md."},
]
"""Claude Code's two calls (Write, then its final text) and the orchestrator's synthesis."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    """The copied project, up with cody only (and the core services); down -v afterwards."""
    if not compose_answers():
        pytest.skip("needs Docker with Compose v2 (.ci/run starts one)")
    folder = copy_project(tmp_path_factory.mktemp("engine-cluster"))
    (folder / "prompts" / f"{PERSONA}.md").write_text(
        f"---\nname: {PERSONA}\ndescription: Writes files with Claude Code\n"
        "tools: Read, Write\nengine: claude-code\n---\nWrite what you are asked to.\n"
    )
    cluster = ChaosCluster(folder, PROJECT)
    (folder / "chaos.yml").write_text(yaml.safe_dump(OVERRIDE))
    for sub in ("record/steps", "record/calls"):
        (cluster.chaos / sub).mkdir(parents=True, exist_ok=True)
    for path in [cluster.chaos, *cluster.chaos.rglob("*")]:
        path.chmod(0o777)
    (cluster.chaos / "script.yaml").write_text(yaml.safe_dump(STEPS))
    plan = {"request": REQUEST, "tasks": [task("c1", PERSONA)]}
    plan["tasks"][0]["instructions"] = f"{MARKER}: write hello.md."
    (folder / "workflows" / "claude-code.yaml").write_text(yaml.safe_dump(plan))
    try:
        done = cluster.make("up", f"PERSONAS={PERSONA}", timeout_s=1500)
        assert done.returncode == 0, f"make up: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        yield cluster
    finally:
        cluster.compose("--profile", "llm", "--profile", "client", "down", "-v", "--remove-orphans")


def test_a_claude_code_persona_runs_its_task_in_its_hardened_image(cluster: ChaosCluster) -> None:
    (container,) = cluster.compose("ps", "-q", PERSONA).stdout.split()
    info = json.loads(cluster.docker("inspect", container))[0]
    assert info["Config"]["Image"] == f"{PROJECT}:claude-code"
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert not host["NetworkMode"].endswith("default")  # its internal network only
    orchestrator = cluster.compose("ps", "-q", "orchestrator").stdout.split()[0]
    base = json.loads(cluster.docker("inspect", orchestrator))[0]["Config"]["Image"]
    assert base == f"{PROJECT}:local"  # the others keep crewbox's image

    run_id = cluster.submit("claude-code")
    summary: RunSummary = cluster.summary(run_id)
    assert summary.status == "succeeded", summary
    (result,) = summary.tasks
    assert [a.path for a in result.artifacts] == ["hello.md"]
    run_dir = cluster.folder / "results" / run_id
    assert (run_dir / PERSONA / "c1" / "hello.md").read_text() == CONTENT
    calls = recorded_calls(cluster.chaos / "record")
    assert len(calls) == 3, [c.text[-200:] for c in calls]  # Claude Code made no other call
    assert "Write" in calls[0].tools and "cc_version=" in calls[0].text  # the CLI called
    assert summary.usage_total == Usage.total(c.usage for c in calls)
