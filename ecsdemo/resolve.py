"""The configuration a command acts on: the one saved in the state directory, with the command's flags.

Every command that needs a `DemoConfig` gets it from `resolve_config`, so they all apply the same rules:
a flag changes the saved value, but the mode (--local/--aws) and the region cannot change while any part
of the demo is live (agents running, infrastructure applied, a local endpoint recorded), nor the number
of clients while client agents run. Commands that act on an existing demo pass `required=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecsdemo import agents
from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.local import LOCAL_FILE
from ecsdemo.outputs import recorded
from ecsdemo.state import StateDir

NO_DEMO_HINT = "run `ecsdemo up --local` (or `ecsdemo up`) first"


def resolve_config(state_dir: Path | str | None, *, required: bool = False, hint: str = NO_DEMO_HINT,
                   local: bool | None = None, region: str | None = None, clients: int | None = None,
                   tf_plugin_dir: Path | None = None, name: str | None = None, vpc_cidr: str | None = None,
                   render_dir: Path | None = None) -> DemoConfig:
    """The config saved in `state_dir` with the given flags (None: not given) applied, validated.

    With no saved config: a new one from the defaults and the flags, or, when `required`, an error whose
    hint is `hint`. Switching mode or region under a live demo, or the client count under running
    clients, is refused with an error saying what to do.
    """
    state = StateDir(state_dir)
    flags: dict[str, Any] = {"local": local, "region": region, "clients": clients, "tf_plugin_dir": tf_plugin_dir,
                             "name": name, "vpc_cidr": vpc_cidr, "render_dir": render_dir}
    given = {key: value for key, value in flags.items() if value is not None}
    cfg = DemoConfig.load(state)
    if cfg is None:
        if required:
            raise EcsdemoError(f"no demo found in {state.root}", hint=hint)
        return DemoConfig(state_dir=state.root, **given)
    cfg.state_dir = state.root
    _refuse_switches(cfg, local, region, clients)
    for key, value in given.items():
        setattr(cfg, key, Path(value) if key in ("tf_plugin_dir", "render_dir") else value)
    cfg.validate()
    return cfg


def _refuse_switches(cfg: DemoConfig, local: bool | None, region: str | None, clients: int | None) -> None:
    switches_mode = local is not None and local != cfg.local
    switches_region = region is not None and region != cfg.region
    if (switches_mode or switches_region) and has_live_parts(cfg):
        if switches_mode:
            raise EcsdemoError(f"the demo in {cfg.state_dir} runs {'locally' if cfg.local else 'on AWS'}; "
                               f"cannot switch to {'--local' if local else '--aws'} under it",
                               hint="run `ecsdemo teardown` first, or use another --state-dir")
        raise EcsdemoError(f"the demo in {cfg.state_dir} is in region {cfg.region}, not {region}",
                           hint="run `ecsdemo teardown` first, or use another --state-dir")
    if clients is not None and clients != cfg.clients:
        if any(agents.is_running(cfg, n) for n in agents.load(cfg)):
            raise EcsdemoError(f"the demo runs {cfg.clients} client(s); stop it before changing --clients",
                               hint="run `ecsdemo teardown --keep-infra`, then `ecsdemo up --clients N`")


def has_live_parts(cfg: DemoConfig) -> bool:
    """Whether any part of the demo is live: an agent running, infrastructure applied, a local endpoint recorded."""
    return (any(agents.status(r) == "running" for r in agents.load(cfg).values())
            or recorded(cfg.state) is not None
            or cfg.state.read_json(LOCAL_FILE) is not None)
