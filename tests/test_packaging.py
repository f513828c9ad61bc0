"""A non-editable install ships templates/ and terraform/ inside the wheel, and ecsdemo finds them there."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
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
