"""Shared fixtures: one moto server process for the whole session, reached over HTTP by real boto3.

`moto_url` is the endpoint; `aws` resets it before a test and yields a small helper with boto3 clients.
`aws_env` sets dummy credentials, a region and the endpoint in the environment (for subprocesses and
boto3 alike) for one test.
"""

from __future__ import annotations

from pathlib import Path

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


class AwsHelper:
    def __init__(self, url: str, region: str = REGION):
        self.url = url
        self.region = region

    def client(self, service: str):
        import boto3

        return boto3.client(service, region_name=self.region, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def reset(self) -> None:
        local.reset(self.url)


@pytest.fixture
def aws(moto_url, monkeypatch) -> AwsHelper:
    """A clean moto server for this test (state wiped), with credentials and region in the environment."""
    local.reset(moto_url)
    for k, v in local.LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return AwsHelper(moto_url)
