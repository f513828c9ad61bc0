"""Fixtures of the ecsdemo tests (the suite-wide ones are in tests/support/, registered by tests/conftest.py).

- `state`: a fresh state directory whose local endpoint (if a test started one) is stopped afterwards.
"""

from __future__ import annotations

import pytest

from ecsdemo import local
from ecsdemo.state import StateDir


@pytest.fixture
def state(tmp_path):
    st = StateDir(tmp_path / "state").ensure()
    yield st
    local.stop_local_endpoint(st)
