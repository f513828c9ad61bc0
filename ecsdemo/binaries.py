"""Which `nomad` and `terraform` ecsdemo runs, and getting them when there is none that works.

Order: the environment variable (`ECSDEMO_NOMAD_BIN`, `ECSDEMO_TERRAFORM`), then PATH, then ecsdemo's
cache (`ecsdemo install`). The variable is the user's explicit choice: when it is set, nothing else is
considered. A PATH binary of the wrong version (Nomad 1.10+, which has no remote tasks; Nomad < 1.1;
Terraform < 1.0) is skipped, with the reason kept, and the cache is looked at next. `ensure` installs the
default version into the cache when nothing usable is found; the user's own binaries are never touched.
No printing here: `ensure` reports through a Reporter and download progress through `on_bytes`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ecsdemo import releases
from ecsdemo.errors import EcsdemoError
from ecsdemo.nomad import REMOTE_TASKS_FROM, REMOTE_TASKS_UNTIL, parse_version

TERRAFORM_MIN = (1, 0, 0)
COMMAND_TIMEOUT = 15.0
_versions: dict[tuple, tuple[tuple[int, int, int] | None, str]] = {}


@dataclass
class Candidate:
    path: str
    source: str                               # "env", "PATH" or "ecsdemo cache"
    version: tuple[int, int, int] | None = None
    problem: str | None = None                # why it cannot be used; None = usable

    @property
    def version_text(self) -> str | None:
        return ".".join(map(str, self.version)) if self.version else None


@dataclass
class Located:
    product: str
    chosen: Candidate | None                  # the first usable one
    skipped: list[Candidate] = field(default_factory=list)
    env_set: bool = False                     # the variable is set: no fallback, no install

    @property
    def path(self) -> str | None:
        return self.chosen.path if self.chosen else None

    def why_not(self) -> str:
        """Why nothing usable was found, in one line."""
        if self.skipped:
            return "; ".join(c.problem or "" for c in self.skipped)
        if self.product == "nomad":
            return "`nomad` is not on PATH and ecsdemo's cache has no Nomad"
        return "`terraform` is not on PATH and ecsdemo's cache has no Terraform"


def label(product: str) -> str:
    return "Nomad" if product == "nomad" else "Terraform"


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return -1, f"`{' '.join(argv)}` did not answer within {COMMAND_TIMEOUT:.0f}s"
    except OSError as exc:
        return -1, f"cannot run {argv[0]}: {exc.strerror or exc}"
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def binary_version(product: str, path: str) -> tuple[tuple[int, int, int] | None, str]:
    """(version, output) of `<path> version` (terraform: `version -json`); remembered per file state."""
    try:
        st = os.stat(path)
        memo = (product, os.path.realpath(path), st.st_mtime_ns, st.st_size)
    except OSError:
        memo = None
    if memo in _versions:
        return _versions[memo]
    argv = [path, "version", "-json"] if product == "terraform" else [path, "version"]
    rc, out = _run(argv)
    version = None
    if rc == 0 and product == "terraform":
        try:
            version = parse_version(json.loads(out[out.index("{"):])["terraform_version"])
        except (ValueError, KeyError, TypeError):
            version = parse_version(out)
    elif rc == 0:
        version = parse_version(out)
    result = (version, out if rc == 0 else (out or f"exit code {rc}"))
    if memo is not None and version is not None:
        _versions[memo] = result
    return result


def _judge(product: str, cand: Candidate) -> Candidate:
    """Set `cand.version`, and `cand.problem` when it cannot be used."""
    where = f"{cand.path} ({releases.BIN_ENV[product]})" if cand.source == "env" else cand.path
    if not (os.path.isfile(cand.path) and os.access(cand.path, os.X_OK)):
        cand.problem = f"{releases.BIN_ENV[product]}={cand.path} is not an executable file"
        return cand
    cand.version, out = binary_version(product, cand.path)
    name = label(product)
    if cand.version is None:
        first = out.strip().splitlines()[0] if out.strip() else "no output"
        cand.problem = f"`{cand.path} version` gave no version ({first[:120]})"
    elif product == "nomad" and cand.version >= REMOTE_TASKS_UNTIL:
        cand.problem = f"Nomad {cand.version_text} at {where}: remote tasks were removed in Nomad 1.10"
    elif product == "nomad" and cand.version < REMOTE_TASKS_FROM:
        cand.problem = f"Nomad {cand.version_text} at {where}: remote task drivers need Nomad >= 1.1.0"
    elif product == "terraform" and cand.version < TERRAFORM_MIN:
        cand.problem = f"{name} {cand.version_text} at {where} is too old (need >= 1.0)"
    return cand


def _cache_candidates(product: str) -> list[Candidate]:
    versions = releases.cached_versions(product)
    if product == "nomad" and releases.DEFAULT_NOMAD in versions:   # the one ecsdemo installs, first
        versions.remove(releases.DEFAULT_NOMAD)
        versions.insert(0, releases.DEFAULT_NOMAD)
    return [Candidate(str(releases.install_dir(product, v) / releases.exe_name(product)), "ecsdemo cache")
            for v in versions]


def locate(product: str) -> Located:
    """The binary `product` would run as: env variable, else PATH, else the cache (first usable one)."""
    env = os.environ.get(releases.BIN_ENV[product])
    if env:
        cand = _judge(product, Candidate(env, "env"))
        return Located(product, None if cand.problem else cand, [cand] if cand.problem else [], env_set=True)
    skipped = []
    on_path = shutil.which(releases.exe_name(product))
    candidates = ([Candidate(on_path, "PATH")] if on_path else []) + _cache_candidates(product)
    for cand in candidates:
        _judge(product, cand)
        if cand.problem is None:
            return Located(product, cand, skipped)
        skipped.append(cand)
    return Located(product, None, skipped)


def nomad_binary() -> str | None:
    """The nomad executable the agents run ($ECSDEMO_NOMAD_BIN, else PATH, else ecsdemo's cache), or None.
    An executable named by the variable is run whatever its version: that is the user's explicit choice, and
    judging its version is the doctor's `nomad` check."""
    override = os.environ.get(releases.BIN_ENV["nomad"])
    if override:
        return override if (os.path.isfile(override) and os.access(override, os.X_OK)) else None
    return locate("nomad").path


def ensure(product: str, reporter, install: bool = True, releases_url: str | None = None,
           releases_key: str | Path | None = None, on_bytes: releases.OnBytes | None = None) -> Located:
    """A usable `product`: found (env, PATH, cache) or, unless `install` is False, installed into the cache
    (Nomad 1.9.7; Terraform the newest 1.x). Raises when the env variable names an unusable binary."""
    found = locate(product)
    if found.chosen is not None:
        return found
    if found.env_set:
        bad = found.skipped[0]
        raise EcsdemoError(bad.problem or f"{releases.BIN_ENV[product]} is not usable",
                           hint=f"point {releases.BIN_ENV[product]} at a usable {product}, or unset it to let "
                                f"ecsdemo use PATH or its own (`ecsdemo install {product}`)")
    if not install:
        return found
    reporter.warn(f"{found.why_not()}: installing {label(product)} into ecsdemo's cache "
                  f"(your own binaries are not changed)")
    src = releases.source(releases_url, releases_key)
    version = releases.DEFAULT_NOMAD if product == "nomad" else None
    # no reporter.step around it: the download draws its own progress bar through on_bytes
    reporter.info(f"installing {label(product)} {version or '(the newest 1.x)'} from {src.url}")
    done = releases.install(product, version, src, on_bytes=on_bytes)
    reporter.info(f"{label(product)} {done.version} verified and installed at {done.path}")
    found = locate(product)
    if found.chosen is None:   # e.g. the installed version is itself out of range
        raise EcsdemoError(f"the installed {product} is not usable: {found.why_not()}",
                           hint=f"run `ecsdemo doctor`; set {releases.BIN_ENV[product]} to a usable {product}")
    return found


def describe(found: Located) -> str:
    """E.g. "Nomad 1.9.7 at /x/nomad (ecsdemo cache)"."""
    c = found.chosen
    return f"{label(found.product)} {c.version_text} at {c.path} ({c.source})" if c else found.why_not()
