"""The suite's fixtures live in tests/support/ and are registered here, for every test directory.

tests/support/aws.py: `moto_server`, `moto_url`, `aws` (the session's moto server, reset per test).
tests/support/moto_world.py: `ecs_demo`, `module_aws`, `world` (ECS resources on moto).
tests/support/fake_nomad.py: `fake_nomad`, `nomad_cluster` (the fake Nomad with real plugin processes).
tests/support/standin_demo.py: `demo`, `nomad_demo` (a rendered demo whose agents are stand-in processes).
tests/support/terraform.py: `tf_mirror` (terraform and a local aws provider mirror, or a skip).
tests/support/markers.py: the `terraform` and `nomad` markers' skips (where the tool is missing).

For the whole session, ecsdemo's binary cache is an empty temporary directory and its release server a
file:// URL that does not exist: no test sees the user's cached nomad/terraform, and no `up` that finds a
binary missing can download one from the internet (tests that install set both variables themselves).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every helper module in tests/support/ gets pytest's assertion messages, not only the plugins below (their
# asserts used to live in test modules).
pytest.register_assert_rewrite("tests.support")

pytest_plugins = [
    "tests.support.aws",
    "tests.support.moto_world",
    "tests.support.fake_nomad",
    "tests.support.standin_demo",
    "tests.support.terraform",
    "tests.support.markers",
]


@pytest.fixture(scope="session", autouse=True)
def _no_user_cache_no_downloads(tmp_path_factory):
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
