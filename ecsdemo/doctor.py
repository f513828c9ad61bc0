"""`ecsdemo doctor`: the prerequisites of `up`, checked up front and returned as data.

Each check is a `Check` (name, ok, detail, hint, blocking; for nomad and terraform also the source, version
and path of the binary, as ecsdemo.binaries finds it: env variable, PATH, ecsdemo's cache). `run_checks`
never raises for a failed prerequisite: it reports it, with a hint saying how to fix it. `up` refuses to
start when a blocking check fails. A missing nomad/terraform does not block when `up` will install it.
Ports held by agents that ecsdemo itself started (a re-run of `up`) count as fine.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import boto3

from ecsdemo import agents, binaries, releases
from ecsdemo.check import Check
from ecsdemo.config import CONFIG_FILE, DemoConfig
from ecsdemo.errors import EcsdemoError

REGISTRY = ("registry.terraform.io", 443)


def blocking_failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok and c.blocking]


# --- the checks ------------------------------------------------------------------------------------
def _binary_check(product: str, auto_install: bool) -> Check:
    """The check for `product`'s binary: where it comes from (env, PATH, ecsdemo cache) and its version."""
    found = binaries.locate(product)
    name = product
    if found.chosen is not None:
        c = found.chosen
        skipped = f"; skipped {found.skipped[0].problem}" if found.skipped else ""
        return Check(name, True, f"{binaries.label(product)} {c.version_text} at {c.path}{skipped}",
                     source=c.source, version=c.version_text, path=c.path)
    var = releases.BIN_ENV[product]
    bad = found.skipped[0] if found.skipped else None
    extra = dict(source=bad.source, version=bad.version_text, path=bad.path) if bad else {}
    if found.env_set:
        return Check(name, False, found.why_not(), **extra,
                     hint=f"point {var} at a usable {product}, or unset it and run `ecsdemo install {product}`")
    what = "Nomad 1.9.7" if product == "nomad" else "the newest Terraform 1.x"
    detail = found.why_not() + (f"; `ecsdemo up` will install {what} into its cache" if auto_install else "")
    return Check(name, False, detail, blocking=not auto_install, **extra,
                 hint=f"run `ecsdemo install {product}` ({what} into ecsdemo's cache), or put a usable "
                      f"{product} on PATH or set {var}")


def check_nomad(auto_install: bool = True) -> Check:
    return _binary_check("nomad", auto_install)


def terraform_mirror(cfg: DemoConfig) -> Path | None:
    """The local provider mirror to use, when one is given (ECSDEMO_TF_PLUGIN_DIR / config)."""
    return cfg.tf_plugin_dir


def _mirror_has_aws(root: Path) -> bool:
    return (root / "registry.terraform.io" / "hashicorp" / "aws").is_dir()


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_terraform(cfg: DemoConfig, auto_install: bool = True) -> list[Check]:
    checks = [_binary_check("terraform", auto_install)]
    mirror = terraform_mirror(cfg)
    if mirror is not None:
        if _mirror_has_aws(mirror):
            checks.append(Check("aws provider", True, f"local provider mirror {mirror}"))
        else:
            checks.append(Check("aws provider", False,
                                f"provider mirror {mirror} has no registry.terraform.io/hashicorp/aws",
                                hint="point ECSDEMO_TF_PLUGIN_DIR at a mirror made by `terraform providers mirror`"))
    elif _reachable(*REGISTRY):
        checks.append(Check("aws provider", True, "the Terraform registry is reachable"))
    else:
        checks.append(Check("aws provider", False,
                            "the Terraform registry is not reachable and no local mirror is given",
                            hint="set ECSDEMO_TF_PLUGIN_DIR to a provider mirror (e.g. /opt/tf-plugins)"))
    return checks


def check_aws(cfg: DemoConfig) -> Check:
    if cfg.local:
        return Check("aws credentials", True, "not needed with --local (the embedded endpoint uses dummy keys)")
    try:
        session = boto3.Session(region_name=cfg.region)
        creds = session.get_credentials()
    except Exception as exc:  # a broken profile or config file: botocore raises many kinds
        return Check("aws credentials", False, f"cannot resolve AWS credentials: {exc}",
                     hint="fix ~/.aws/config or AWS_PROFILE, or use --local")
    if creds is None:
        return Check("aws credentials", False, "no AWS credentials found",
                     hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use --local")
    # only say where they come from, never the values
    return Check("aws credentials", True, f"found ({creds.method}); region {cfg.region}")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like Nomad's listeners: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def agent_ports(cfg: DemoConfig) -> dict[str, list[int]]:
    """The TCP ports each agent will listen on (client-only agents bind only HTTP)."""
    ports = {"nomad-server": [cfg.server_http_port, cfg.server_rpc_port, cfg.server_serf_port]}
    for i, name in enumerate(cfg.client_names(), start=1):
        ports[name] = [cfg.client_http_port(i)]
    return ports


def check_ports(cfg: DemoConfig, ours: set[str] = frozenset()) -> Check:
    """All agent ports free; ports of agents in `ours` (already running, started by ecsdemo) are skipped."""
    busy = []
    for agent, ports in agent_ports(cfg).items():
        if agent in ours:
            continue
        busy += [f"{p} ({agent})" for p in ports if not port_free(p)]
    if busy:
        return Check("ports", False, f"in use by another program: {', '.join(busy)}",
                     hint="stop what uses them (`ss -ltnp`), or run `ecsdemo teardown` if it is an old demo")
    reused = f"; {len(ours)} agent(s) already running" if ours else ""
    return Check("ports", True, f"free: {', '.join(str(p) for ps in agent_ports(cfg).values() for p in ps)}{reused}")


def _writable_dir(path: Path) -> tuple[bool, str]:
    """Whether `path` is (or can be created as) a writable directory."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False, f"no existing parent of {path}"
        probe = probe.parent
    if not probe.is_dir():
        return False, f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return False, f"{probe} is not writable"
    return True, str(path) if probe == path else f"{path} (will be created)"


def check_plugin_dir(cfg: DemoConfig) -> Check:
    ok, detail = _writable_dir(cfg.plugin_dir)
    return Check("plugin directory", ok, detail,
                 hint=None if ok else "make it writable or choose another render directory")


def check_state_dir(cfg: DemoConfig, agents_file: str = "agents.json") -> list[Check]:
    state = cfg.state
    ok, detail = _writable_dir(state.root)
    if not ok:
        return [Check("state directory", False, detail, hint="choose another with --state-dir")]
    checks = []
    problems = []
    for doc in (CONFIG_FILE, agents_file, "local.json", "infra.json"):
        try:
            state.read_json(doc)
        except EcsdemoError as exc:
            problems.append(exc.message)
    if problems:
        checks.append(Check("state directory", False, "; ".join(problems),
                            hint="if nothing is running, remove the state directory; "
                                 "otherwise fix or delete that file"))
    else:
        checks.append(Check("state directory", True, detail))
    if not problems:
        stale = _stale_agents(cfg)
        if stale:
            checks.append(Check("previous run", False,
                                f"recorded agents no longer running: {', '.join(stale)}", blocking=False,
                                hint="harmless: `up` restarts them; `ecsdemo teardown` cleans up the old run"))
    return checks


def _stale_agents(cfg: DemoConfig) -> list[str]:
    return [rec.name for rec in agents.load(cfg).values() if agents.status(rec) != "running"]


def running_agents(cfg: DemoConfig) -> set[str]:
    try:
        return {rec.name for rec in agents.load(cfg).values() if agents.status(rec) == "running"}
    except EcsdemoError:
        return set()


def run_checks(cfg: DemoConfig, auto_install: bool = True) -> list[Check]:
    """Every prerequisite of `up` for this configuration. With `auto_install` (what `up` does unless told
    --no-install), a missing nomad or terraform is a warning: `up` installs it into ecsdemo's cache."""
    checks = [check_nomad(auto_install), *check_terraform(cfg, auto_install), check_aws(cfg)]
    checks.append(check_ports(cfg, ours=running_agents(cfg)))
    checks.append(check_plugin_dir(cfg))
    checks += check_state_dir(cfg)
    return checks
