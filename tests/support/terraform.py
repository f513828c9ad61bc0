"""Terraform for the tests: `find_tf_mirror()` and the `tf_mirror` fixture.

`tf_mirror` is the local Terraform provider mirror holding hashicorp/aws, with the terraform binary on
PATH; the test is skipped (saying why) where either is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


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
