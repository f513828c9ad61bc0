"""The demo job running on the fake Nomad, reached through ecsdemo's own Nomad client.

`demo_config(tmp_path, fake, ecs, moto_server)` saves a local-mode demo whose Nomad is the fake;
`run_job(fake, ecs)` registers the demo job and waits for its running allocation.
"""

from __future__ import annotations

from ecsdemo import local
from ecsdemo.config import JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.nomad import NomadClient, task_arn
from tests.support.waiting import wait_for


def demo_config(tmp_path, fake, ecs, moto_server) -> DemoConfig:
    """A saved local-mode demo whose Nomad is `fake` and whose local endpoint is the session's moto server."""
    cfg = DemoConfig(state_dir=tmp_path / ".ecsdemo", local=True, region=ecs.region, name=ecs.cluster,
                     render_dir=tmp_path / "nomad", server_http_port=fake.port)
    cfg.state.ensure()
    local.record_endpoint(cfg.state, moto_server, tmp_path / "moto.log")
    cfg.save()
    return cfg


def run_job(fake, ecs) -> tuple[NomadClient, dict]:
    api = NomadClient(fake.address, timeout=5)
    api.register_job(api.parse_job(ecs.job_hcl()))
    alloc = wait_for(lambda: next((a for a in api.job_allocations(JOB_ID) if a["ClientStatus"] == "running"
                                   and task_arn(a, TASK_NAME)), None), timeout=15, what="the demo job running")
    return api, alloc
