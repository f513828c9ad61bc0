"""What a scenario acts through: Nomad's API, ECS, the agents ecsdemo started, and Terraform + the renderer.

`ScenarioEnv.from_config(cfg, reporter, options)` wires the production adapters (`ecsdemo.nomad`,
`ecsdemo.aws`, `ecsdemo.agents`, `ecsdemo.infra`, `ecsdemo.render`). Tests build the same object around a
fake Nomad API and a moto server and replace only an adapter (for example how an agent is killed).
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ecsdemo import agents, aws, infra, render
from ecsdemo.config import JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.local import local_endpoint_status, paused_local_endpoint
from ecsdemo.nomad import NomadClient, task_arn
from ecsdemo.progress import Reporter
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.model import ScenarioResult

# The plugin's defaults (driver/schema.py), which the rendered client config keeps: it polls its ECS tasks
# every 5 s and fingerprints (DescribeClusters) every 30 s, giving up on an unanswered call after 15 s.
DRIVER_POLL_INTERVAL_S = 5.0
DRIVER_FINGERPRINT_INTERVAL_S = 30.0
# An outage must outlast one fingerprint interval, the 15 s probe timeout and Nomad's node update.
DEFAULT_OUTAGE_S = 2 * DRIVER_FINGERPRINT_INTERVAL_S


@dataclass
class Options:
    """How long to wait and what to leave behind. Tests shrink the intervals."""

    timeout: float = 120.0            # each wait (a replacement, a node going down, a task stopping)
    keep_drained: bool = False        # drain: leave the node drained (ineligible)
    restart: bool = True              # lost-node: restart the killed client afterwards
    revert: bool = False              # update: go back to the base task definition
    drain_deadline: float | None = None   # drain deadline; None = the timeout
    sample_interval: float = 1.0      # how often the ECS task's status is sampled during a wait
    poll_interval: float = 0.5        # pause between non-blocking polls
    block_wait: float = 10.0          # the longest a Nomad blocking query waits
    outage_for: float = DEFAULT_OUTAGE_S  # outage: how long the local endpoint stops answering
    settle: float = 10.0              # client-restart: how long to keep watching once the client is back
    driver_poll_interval: float = DRIVER_POLL_INTERVAL_S   # the plugin's poll_interval (task-exit's deadline)

    def __post_init__(self) -> None:
        if not self.timeout or self.timeout <= 0:
            raise EcsdemoError(f"--timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.drain_deadline is not None and self.drain_deadline <= 0:
            raise EcsdemoError(f"the drain deadline must be positive, got {self.drain_deadline!r}")
        if not self.outage_for or self.outage_for <= 0:
            raise EcsdemoError(f"--for must be a positive number of seconds, got {self.outage_for!r}")


class EcsView:
    """The ECS side of a scenario, read through `ecsdemo.aws` (the same boto3 code `status` uses)."""

    def __init__(self, cfg: DemoConfig, client: Any = None):
        self.cfg = cfg
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = aws.ecs_client(self.cfg)
        return self._client

    def describe(self, arn: str) -> dict | None:
        found = aws.describe(self.client, aws.cluster_name(self.cfg), [arn])
        return found[0] if found else None

    def status(self, arn: str) -> str | None:
        task = self.describe(arn)
        return task.get("lastStatus") if task else None

    def stop(self, arn: str, reason: str) -> None:
        """StopTask outside Nomad, as the AWS console does (ECS records `reason` as the stoppedReason)."""
        aws._call("stopping an ECS task", self.client.stop_task, cluster=aws.cluster_name(self.cfg), task=arn,
                  reason=reason[:255])

    def job_tasks(self, alloc_ids: list[str], desired_status: str | None = "RUNNING") -> list[dict]:
        """Tasks of the demo job: tagged `nomad:job`, or owned by one of the job's allocations."""
        out = []
        for t in aws.cluster_tasks(self.cfg, desired_status, client=self.client):
            if checks.job_tasks([t], JOB_ID) or any(aws.owned_by(t, a) for a in alloc_ids):
                out.append(t)
        return out


class Agents:
    """The client agents ecsdemo started (`ecsdemo.agents`): which one runs a node, kill it, start it,
    restart it, and which node ID it reports."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg

    def name_for_node(self, node: dict) -> str | None:
        """The running agent ecsdemo started for this node, or None (then it must not be killed)."""
        name = agents.agent_for_node(self.cfg, node)
        return name if name and agents.is_running(self.cfg, name) else None

    def kill(self, name: str) -> str:
        """SIGKILL the agent; returns a description (e.g. its pid) for the report."""
        rec = agents.kill_agent(self.cfg, name, signal.SIGKILL)
        return f"{name} (pid {rec.pid})"

    def start(self, name: str) -> None:
        agents.start_agent(self.cfg, name)

    def restart(self, name: str) -> str:
        """SIGTERM the agent (SIGKILL after a grace period), then start it again with the same config and
        data dir; returns what the stop did ("stopped", "killed")."""
        outcome = agents.stop_agent(self.cfg, name)
        self.start(name)
        return outcome

    def node_id(self, name: str) -> str | None:
        """The node ID the agent reports on its own HTTP port, or None while it does not answer."""
        rec = agents.load(self.cfg).get(name)
        if rec is None or not rec.http_addr:
            return None
        try:
            return NomadClient.client_node_id(rec.http_addr, timeout=2)
        except EcsdemoError:
            return None


class Endpoint:
    """The local AWS endpoint ecsdemo started (`ecsdemo.local`), for the outage scenario."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg

    def status(self) -> dict | None:
        """The recorded endpoint and whether it runs (`ecsdemo.local.local_endpoint_status`)."""
        return local_endpoint_status(self.cfg.state)

    def paused(self):
        """A context manager: the endpoint does not answer inside it (SIGSTOP), and answers again after."""
        return paused_local_endpoint(self.cfg.state)


class Infra:
    """Terraform (the task definition variant) and the job renderer."""

    def __init__(self, cfg: DemoConfig, reporter: Reporter):
        self.cfg = cfg
        self.reporter = reporter

    def apply(self, variant: str) -> Any:
        return infra.apply(self.cfg, self.reporter, task_definition=variant)

    def render_job(self, outputs: Any) -> Path:
        return render.render_job(self.cfg, outputs)


@dataclass
class ScenarioEnv:
    cfg: DemoConfig
    nomad: Any                 # ecsdemo.nomad.NomadClient
    reporter: Reporter
    options: Options = field(default_factory=Options)
    ecs: EcsView | None = None
    agents: Any = None         # Agents, or a test's stand-in with the same methods
    infra: Any = None          # Infra, or a stand-in
    endpoint: Any = None       # Endpoint (local mode)
    job_id: str = JOB_ID
    task: str = TASK_NAME

    def __post_init__(self) -> None:
        if self.ecs is None:
            self.ecs = EcsView(self.cfg)
        if self.agents is None:
            self.agents = Agents(self.cfg)
        if self.infra is None:
            self.infra = Infra(self.cfg, self.reporter)
        if self.endpoint is None:
            self.endpoint = Endpoint(self.cfg)

    @classmethod
    def from_config(cls, cfg: DemoConfig, reporter: Reporter, options: Options) -> "ScenarioEnv":
        return cls(cfg=cfg, nomad=NomadClient.from_config(cfg), reporter=reporter, options=options)

    @contextlib.contextmanager
    def step(self, res: ScenarioResult, title: str) -> Iterator[None]:
        """A step shown as it happens and kept in the scenario's record."""
        res.step(title)
        with self.reporter.step(title):
            yield

    def note(self, res: ScenarioResult, text: str) -> None:
        res.step(text)
        self.reporter.info(text)

    def arn_of(self, alloc: dict) -> str | None:
        return task_arn(alloc, self.task)


