"""The session's moto server and boto3 access to it.

`moto_server`/`moto_url`: one moto server process for the whole session, reached over HTTP by real boto3.
`aws`: that server reset before the test, credentials and region in the environment, and an `AwsHelper`
(boto3 clients for the endpoint).
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from ecsdemo import local

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    log = Path(tmp_path_factory.mktemp("moto")) / "moto.log"
    proc = local.start_moto(log)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def moto_url(moto_server) -> str:
    return moto_server.url


def use_local_credentials(mp: pytest.MonkeyPatch) -> None:
    """moto's dummy credentials and the region in the environment (boto3 and subprocesses read them), no profile."""
    for k, v in local.LOCAL_CREDENTIALS.items():
        mp.setenv(k, v)
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    mp.delenv("AWS_PROFILE", raising=False)


class AwsHelper:
    def __init__(self, url: str, region: str = REGION):
        self.url = url
        self.region = region

    def client(self, service: str):
        return boto3.client(service, region_name=self.region, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def reset(self) -> None:
        local.reset(self.url)


@pytest.fixture
def aws(request, moto_url, monkeypatch) -> AwsHelper:
    """A clean moto server for this test (state wiped), with credentials and region in the environment.

    A module that sets `MOTO_PER_MODULE = True` gets instead the moto server holding the demo's ECS
    resources made once for the module (`module_aws`, tests/support/moto_world.py), with every running
    task stopped: moto's EC2 is slow, and such tests need no wiped server."""
    if getattr(request.module, "MOTO_PER_MODULE", False):
        helper, ecs = request.getfixturevalue("module_aws")
        client = helper.client("ecs")
        for arn in client.list_tasks(cluster=ecs.cluster, desiredStatus="RUNNING")["taskArns"]:
            client.stop_task(cluster=ecs.cluster, task=arn, reason="test cleanup")
        return helper
    local.reset(moto_url)
    use_local_credentials(monkeypatch)
    return AwsHelper(moto_url)
