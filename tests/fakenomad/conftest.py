"""The fake Nomad's fixtures (defined in fixtures.py so other test directories can import them)."""

from tests.fakenomad.fixtures import ecs_demo, fake_nomad, nomad_cluster  # noqa: F401
