"""The suite's markers (declared in pyproject.toml) and the skips they bring.

- `slow`: a multi-process scenario (several plugin processes, stand-in agents, the fake Nomad's clients
  with their real plugins, a whole scenario flow), Terraform, or more than about a second of work.
  `python -m pytest -m "not slow"` is the inner loop; CI runs everything.
- `terraform`: runs the real terraform binary. Skipped where it is not on PATH; a `terraform` test that
  also takes the `tf_mirror` fixture (tests/support/terraform.py) is skipped where no local mirror of the
  aws provider exists (the public registry is not reachable from the tests).
- `nomad`: runs a real Nomad agent. Skipped where no usable Nomad 1.1-1.9 is found (PATH, ECSDEMO_NOMAD_BIN
  or ecsdemo's cache).

Every Terraform or real-Nomad test is also `slow` (collection fails otherwise). The skips are decided
here, once, at collection.
"""

from __future__ import annotations

import shutil

import pytest

from ecsdemo import doctor
from tests.support.terraform import find_tf_mirror


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items
                if (item.get_closest_marker("terraform") or item.get_closest_marker("nomad"))
                and not item.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError("a terraform or nomad test must also be marked slow: " + ", ".join(unmarked))
    terraform_tests = [item for item in items if item.get_closest_marker("terraform")]
    if terraform_tests:
        mirror, why = find_tf_mirror()
        binary = shutil.which("terraform") is not None
        for item in terraform_tests:
            if not binary or (mirror is None and "tf_mirror" in item.fixturenames):
                item.add_marker(pytest.mark.skip(reason=why))
    nomad_tests = [item for item in items if item.get_closest_marker("nomad")]
    if nomad_tests:
        nomad = doctor.check_nomad()
        if not nomad.ok:
            for item in nomad_tests:
                item.add_marker(pytest.mark.skip(reason=f"needs Nomad 1.1-1.9 on PATH: {nomad.detail}"))
