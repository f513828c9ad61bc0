"""A faithful fake of Nomad's HTTP API (see docs/nomad-notes.md, "The HTTP API ecsdemo uses") for ecsdemo's tests.

`FakeNomad` is the entry point; `PluginRuntime` runs the simulated clients' tasks through real
`nomad-driver-ecs` processes (one per node); `Timings.fast()` makes scenarios take seconds.
"""

from tests.fakenomad.fake import FakeNomad
from tests.fakenomad.model import Timings
from tests.fakenomad.plugin_runtime import PluginRuntime

__all__ = ["FakeNomad", "Timings", "PluginRuntime"]
