"""Benchmark: `ecsdemo infra apply|destroy` in local mode, run as a user runs them (the CLI, real Terraform,
the embedded moto endpoint).

Prints one JSON line: `apply_s` (first apply, including starting the local endpoint and `terraform init`),
`reapply_s` (a no-change apply), `destroy_s`, and `overhead_s`: the largest time any of the three spent
outside the terraform processes (Python start-up, validation, endpoint checks, file writes). Target:
overhead_s <= 2. Terraform's own time comes from the per-command durations in `<state>/logs/terraform.log`.

Needs terraform and a local aws provider mirror (ECSDEMO_TF_PLUGIN_DIR, else /opt/tf-plugins).
Usage: python benchmarks/infra_local.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXIT_LINE = re.compile(r"^=== exit code -?\d+ after ([0-9.]+)s$", re.M)


def run(state: Path, env: dict[str, str], *args: str) -> tuple[float, float]:
    """(wall seconds, seconds inside terraform processes) of one ecsdemo command."""
    log = state / "logs" / "terraform.log"
    offset = log.stat().st_size if log.exists() else 0
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ecsdemo", *args, "--state-dir", str(state)], env=env,
                          capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"ecsdemo {' '.join(args)} failed:\n{proc.stderr}")
    with open(log, encoding="utf-8") as fh:
        fh.seek(offset)
        inside = sum(float(s) for s in EXIT_LINE.findall(fh.read()))
    return wall, inside


def main() -> None:
    mirror = os.environ.get("ECSDEMO_TF_PLUGIN_DIR") or "/opt/tf-plugins"
    if shutil.which("terraform") is None or not Path(mirror).is_dir():
        sys.exit("needs terraform on PATH and an aws provider mirror (ECSDEMO_TF_PLUGIN_DIR or /opt/tf-plugins)")
    env = {**os.environ, "ECSDEMO_TF_PLUGIN_DIR": mirror}
    state = Path(tempfile.mkdtemp(prefix="ecsdemo-bench-")) / "state"
    try:
        apply_s, apply_tf = run(state, env, "infra", "apply", "--local")
        reapply_s, reapply_tf = run(state, env, "infra", "apply")
        destroy_s, destroy_tf = run(state, env, "infra", "destroy")
    finally:
        subprocess.run([sys.executable, "-m", "ecsdemo", "local", "stop", "--state-dir", str(state)], env=env,
                       capture_output=True, timeout=60)
        shutil.rmtree(state.parent, ignore_errors=True)
    overhead = max(apply_s - apply_tf, reapply_s - reapply_tf, destroy_s - destroy_tf)
    print(f"outside terraform: apply {apply_s - apply_tf:.2f}s, re-apply {reapply_s - reapply_tf:.2f}s, "
          f"destroy {destroy_s - destroy_tf:.2f}s", file=sys.stderr)
    print(json.dumps({"apply_s": round(apply_s, 2), "reapply_s": round(reapply_s, 2),
                      "destroy_s": round(destroy_s, 2), "overhead_s": round(overhead, 2)}))


if __name__ == "__main__":
    main()
