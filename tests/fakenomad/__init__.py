"""A faithful fake of Nomad's HTTP API (see /work/shared/docs/nomad-http-api.md) for ecsdemo's tests.

`FakeNomad` is the entry point; `EcsRuntime` runs the simulated clients' tasks on ECS for real;
`Timings.fast()` makes scenarios take seconds.
"""

from tests.fakenomad.fake import FakeNomad
from tests.fakenomad.model import Timings
from tests.fakenomad.runtime import EcsRuntime

__all__ = ["FakeNomad", "Timings", "EcsRuntime"]
