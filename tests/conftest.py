"""Shared fixtures: one moto server process for the whole session, reached over HTTP by real boto3.

`moto_url` is the endpoint; `aws` resets it before a test and yields a small helper with boto3 clients.
`aws_env` sets dummy credentials, a region and the endpoint in the environment (for subprocesses and
boto3 alike) for one test.

For the whole session, ecsdemo's binary cache is an empty temporary directory and its release server a
file:// URL that does not exist: no test sees the user's cached nomad/terraform, and no `up` that finds a
binary missing can download one from the internet (tests that install set both variables themselves).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ecsdemo import local

REGION = "us-east-1"


@pytest.fixture(scope="session", autouse=True)
def _no_user_cache_no_downloads(tmp_path_factory):
    import os

    saved = {k: os.environ.get(k) for k in ("ECSDEMO_CACHE_DIR", "ECSDEMO_RELEASES_URL")}
    root = Path(tmp_path_factory.mktemp("ecsdemo-cache"))
    os.environ["ECSDEMO_CACHE_DIR"] = str(root / "cache")
    os.environ["ECSDEMO_RELEASES_URL"] = (root / "no-release-server").as_uri()
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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
