"""`nomad-driver-ecs`: the plugin executable Nomad runs from its plugin_dir."""

from __future__ import annotations

import os
import sys

from driver import transport
from driver.plugin import Plugin
from driver.servicer import register


async def _register(server, stop) -> None:
    await register(server, Plugin(stopping=stop))


def main() -> int:
    code = transport.run(_register)
    # Leave at once: worker threads (a boto3 call in flight) must not hold the exit past the host's 2 s.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
