"""Fixtures shared by the ecsdemo tests (keep this small).

- `tf_mirror`: the local Terraform provider mirror holding hashicorp/aws, with the terraform binary on
  PATH; the test is skipped (saying why) where either is missing.
- `state`: a fresh state directory whose local endpoint (if a test started one) is stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ecsdemo import local
from ecsdemo.state import StateDir


def find_tf_mirror() -> tuple[Path | None, str]:
    """(mirror, "") when terraform and an aws provider mirror are available, else (None, reason)."""
    if shutil.which("terraform") is None:
        return None, "the terraform binary is not on PATH"
    candidates = [os.environ.get("ECSDEMO_TF_PLUGIN_DIR"), "/opt/tf-plugins"]
    for c in filter(None, candidates):
        aws = Path(c) / "registry.terraform.io" / "hashicorp" / "aws"
        if any(aws.glob("5.*/*/terraform-provider-aws*")):
            return Path(c), ""
    return None, ("no local mirror of the hashicorp/aws 5.x provider (set ECSDEMO_TF_PLUGIN_DIR or provide "
                  "/opt/tf-plugins); the public registry is not reachable from the tests")


@pytest.fixture(scope="session")
def tf_mirror() -> Path:
    mirror, reason = find_tf_mirror()
    if mirror is None:
        pytest.skip(reason)
    return mirror


@pytest.fixture
def state(tmp_path):
    st = StateDir(tmp_path / "state").ensure()
    yield st
    local.stop_local_endpoint(st)
