#!/usr/bin/env python3
"""A stand-in for the `nomad` executable in agent-management tests (stdlib only).

`standin_agent.py version` prints a Nomad-style version line ($STANDIN_NOMAD_VERSION, default 1.6.5).
`standin_agent.py agent -config=FILE [...]` behaves like a long-running agent: it writes a log line at
start and then every 0.2 s, stays up until signalled, and on SIGTERM logs and exits 0, unless
$STANDIN_IGNORE_TERM=1, in which case it logs that it ignores it and keeps running. Other knobs:
$STANDIN_EXIT_AT_START=N exits with code N right away (a failing agent); $STANDIN_SPAWN_PLUGIN=1 starts a
child process in the same process group that stays up and ignores SIGHUP (a plugin the agent launched);
$STANDIN_ENV_DUMP=PATH writes which AWS variables it received (names, and the values of the non-secret ones).
"""

import json
import os
import signal
import subprocess
import sys
import time

NOT_SECRET = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECS")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [standin pid {os.getpid()}] {msg}", flush=True)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: nomad <command>", file=sys.stderr)
        return 1
    if argv[0] == "version":
        version = os.environ.get("STANDIN_NOMAD_VERSION", "1.6.5")
        print(f"Nomad v{version}\nBuildDate 2023-12-01T00:00:00Z\nRevision abc")
        return 0
    if argv[0] == "plugin-child":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        while True:
            time.sleep(0.2)
    if argv[0] != "agent":
        print(f"unknown command {argv[0]!r}", file=sys.stderr)
        return 1
    log(f"agent starting with {' '.join(argv[1:])}")
    code = os.environ.get("STANDIN_EXIT_AT_START")
    if code:
        log(f"failing at start with code {code}")
        return int(code)
    dump = os.environ.get("STANDIN_ENV_DUMP")
    if dump:
        received = {k: ("<set>" if k not in NOT_SECRET else v) for k, v in os.environ.items() if k.startswith("AWS_")}
        with open(dump, "w") as fh:
            json.dump(received, fh)
    if os.environ.get("STANDIN_SPAWN_PLUGIN") == "1":
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "plugin-child", "nomad-driver-ecs"])
        log(f"plugin child pid {child.pid}")
    ignore = os.environ.get("STANDIN_IGNORE_TERM") == "1"

    def on_term(signum, frame):
        if ignore:
            log("SIGTERM received: ignoring it")
            return
        log("SIGTERM received: shutting down")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    while True:
        log("heartbeat")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
