"""Plugin startup benchmark: exec-to-handshake time of the installed plugin, and its RSS after SetConfig.

    python benchmarks/plugin_startup.py [--launches 10] [--plugin PATH]     (with the project installed)

Prints one JSON line: {"handshake_median_s", "handshake_max_s", "rss_mb", ...}. Nomad launches the
plugin three times when an agent starts (docs/nomad-notes.md, "Agent start: three launches"), so the
handshake time is paid three times.
Targets on the project's machine kind: handshake median <= 0.3 s, RSS <= 60 MB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

from ecsdemo.pluginclient import PluginProcess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=10)
    parser.add_argument("--plugin", type=Path, default=Path(sys.executable).parent / "nomad-driver-ecs",
                        help="the plugin executable (default: the installed console script)")
    args = parser.parse_args(argv)
    if not args.plugin.exists():
        print(f"no plugin at {args.plugin}: install the project first (pip install -e .)", file=sys.stderr)
        return 1
    times: list[float] = []
    rss_mb = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.launches):
            proc = PluginProcess([str(args.plugin)], Path(tmp) / f"plugin-{i}.log")
            try:
                proc.start(timeout=60)
                times.append(proc.handshake_s)
                if i == 0:
                    proc.set_config({"enabled": True, "cluster": "bench", "region": "us-east-1",
                                     "endpoint": "http://127.0.0.1:9"})
                    rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
                proc.shutdown()
            finally:
                proc.kill()
    print(json.dumps({"handshake_median_s": round(statistics.median(times), 4),
                      "handshake_max_s": round(max(times), 4), "rss_mb": round(rss_mb, 1),
                      "launches": len(times), "plugin": str(args.plugin)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
