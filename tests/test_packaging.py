"""A non-editable install ships templates/, terraform/ and the release key inside the wheel, ecsdemo finds them
there, and every module it imports at run time is a declared dependency (a fresh venv without the test extra runs)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.support import releasetree as rt

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("ecsdemo-*.whl")
    return whl


def test_wheel_contains_data_and_both_packages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for tracked in subprocess.run(["git", "ls-files", "templates", "terraform"], cwd=ROOT, capture_output=True,
                                  text=True, check=True).stdout.split():
        assert f"ecsdemo/_share/{tracked}" in names, f"{tracked} is not shipped in the wheel"
    assert "driver/__init__.py" in names and "ecsdemo/cli.py" in names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "ecsdemo = ecsdemo.cli:main" in entry_points
    assert "nomad-driver-ecs = driver.main:main" in entry_points


def test_installed_layout_finds_shipped_data(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = "from ecsdemo import paths; print(paths.templates_dir()); print(paths.terraform_dir())"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    templates, terraform = r.stdout.split()
    assert templates == str(tmp_path / "ecsdemo" / "_share" / "templates")
    assert terraform == str(tmp_path / "ecsdemo" / "_share" / "terraform")


def test_wheel_ships_the_release_key(wheel):
    z = zipfile.ZipFile(wheel)
    for name in ("hashicorp-release-key.asc", "hashicorp-release-key-2021-selfsigs.asc"):
        assert z.read(f"ecsdemo/data/{name}") == (ROOT / "ecsdemo" / "data" / name).read_bytes()


def _declared_closure() -> set[str]:
    """The distributions the wheel's dependencies bring in (declared ones and what they depend on)."""
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    todo = [re.match(r"[A-Za-z0-9_.-]+", d).group() for d in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [re.match(r"[A-Za-z0-9_.-]+", r).group() for r in requires if "extra ==" not in r]
    return seen


def test_every_runtime_import_is_a_declared_dependency():
    """Each third-party module that ecsdemo/ or driver/ imports comes from a distribution the wheel's
    dependencies install (the test extra does not count)."""
    modules = set()
    for package in ("ecsdemo", "driver"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    third_party = sorted(m for m in modules if m not in sys.stdlib_module_names and m not in ("ecsdemo", "driver"))
    providers = metadata.packages_distributions()
    closure = _declared_closure()
    missing = [m for m in third_party
               if not any(re.sub(r"[-_.]+", "-", d).lower() in closure for d in providers.get(m, []))]
    assert not missing, f"imported at run time but not a dependency of the wheel: {missing}"
    assert {"psutil", "pysequoia", "platformdirs"} <= set(third_party)


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory, wheel) -> Path:
    """The wheel installed into a new virtualenv WITHOUT the test extra (one per session: it downloads deps)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # this interpreter's pip installs into the venv (no ensurepip copy of pip in it: seconds saved)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--disable-pip-version-check", str(wheel)], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


@pytest.mark.slow
def test_a_fresh_install_without_the_test_extra_runs(fresh_venv, tmp_path):
    bin_dir = fresh_venv / "bin"
    # no nomad anywhere, an empty cache, no mirror that could reach the internet
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "ECSDEMO_CACHE_DIR": str(tmp_path / "cache"),
           "ECSDEMO_RELEASES_URL": (tmp_path / "no-mirror").as_uri(), "LANG": "C.UTF-8"}

    def run(*argv: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        res = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120,
                             env={**env, **(extra or {})}, cwd=tmp_path, stdin=subprocess.DEVNULL)
        for stream in (res.stdout, res.stderr):
            assert "Traceback" not in stream and "internal error" not in stream and "ModuleNotFoundError" not in stream
        return res

    res = run("ecsdemo", "--help")
    assert res.returncode == 0 and "install" in res.stdout and "doctor" in res.stdout

    res = run("ecsdemo", "doctor", "--local", "--json", "--state-dir", str(tmp_path / "s"))
    nomad = next(c for c in json.loads(res.stdout)["checks"] if c["name"] == "nomad")
    assert not nomad["ok"] and "ecsdemo install nomad" in nomad["hint"]

    res = run("ecsdemo", "up", "--local", "--no-install", "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 1 and "prerequisites missing: nomad" in " ".join(res.stderr.split())
    res = run("ecsdemo", "up", "--local", "--state-dir", str(tmp_path / "s"))   # install from a missing mirror
    assert res.returncode == 1 and "no nomad releases at" in " ".join(res.stderr.split())

    res = run("nomad-driver-ecs")
    assert res.returncode == 1 and "not meant to be executed directly" in res.stderr

    # the installed package verifies a signed mirror with pysequoia from its own dependencies
    tsk = rt.make_key()
    tree = rt.ReleaseTree(tmp_path / "mirror", tsk).add("1.9.7")
    key = rt.write_public_key(tsk, tmp_path / "mirror.asc")
    res = run("ecsdemo", "install", "nomad", extra={"ECSDEMO_RELEASES_URL": tree.root.as_uri(),
                                                    "ECSDEMO_RELEASES_KEY": str(key)})
    assert res.returncode == 0, res.stderr
    res = run("ecsdemo", "doctor", "--local", "--json", "--state-dir", str(tmp_path / "s"))
    nomad = next(c for c in json.loads(res.stdout)["checks"] if c["name"] == "nomad")
    assert nomad["ok"] and nomad["version"] == "1.9.7" and nomad["source"] == "ecsdemo cache"
