"""How `up` finds nomad and terraform (env, then PATH, then ecsdemo's cache) and installs what is missing
into the cache from a generated release tree, never touching the user's own binary; --no-install."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ecsdemo import binaries, lifecycle, releases
from ecsdemo.errors import EcsdemoError
from ecsdemo.progress import RecordingReporter
from tests.support import releasetree as rt
from tests.support.standin_demo import free_ports_cfg, standin_nomad


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    tsk = rt.make_key()
    root = tmp_path_factory.mktemp("mirror")
    rt.ReleaseTree(root, tsk).add("1.9.7").add("1.6.5")
    rt.ReleaseTree(root, tsk, product="terraform").add("1.11.4").add("1.9.8")
    server = rt.Server(root)
    key = rt.write_public_key(tsk, root / "key.asc")
    yield server, key
    server.close()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No nomad or terraform anywhere (PATH has only a directory of our own and the system's), an empty
    cache, no env override."""
    bindir = tmp_path / "path"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("ECSDEMO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ECSDEMO_NOMAD_BIN", raising=False)
    monkeypatch.delenv("ECSDEMO_TERRAFORM", raising=False)
    monkeypatch.delenv("ECSDEMO_RELEASES_URL", raising=False)
    monkeypatch.delenv("ECSDEMO_RELEASES_KEY", raising=False)
    return bindir


def test_resolution_order_env_then_path_then_cache(isolated, tmp_path, monkeypatch):
    assert binaries.locate("nomad").chosen is None
    cached = standin_nomad(releases.install_dir("nomad", "1.9.7"), "1.9.7")
    found = binaries.locate("nomad")
    assert (found.path, found.chosen.source, found.chosen.version_text) == (str(cached), "ecsdemo cache", "1.9.7")

    on_path = standin_nomad(isolated, "1.6.5")
    found = binaries.locate("nomad")
    assert (found.path, found.chosen.source) == (str(on_path), "PATH")

    env = standin_nomad(tmp_path / "mine", "1.8.0")
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(env))
    found = binaries.locate("nomad")
    assert (found.path, found.chosen.source, found.chosen.version_text) == (str(env), "env", "1.8.0")

    # the env variable is an explicit choice: a bad one is an error, never silently replaced
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(standin_nomad(tmp_path / "new", "1.10.0")))
    found = binaries.locate("nomad")
    assert found.chosen is None and found.env_set
    with pytest.raises(EcsdemoError, match="remote tasks were removed in Nomad 1.10"):
        binaries.ensure("nomad", RecordingReporter())


def test_path_nomad_1_10_is_skipped_for_the_cache(isolated):
    on_path = standin_nomad(isolated, "1.10.1")
    cached = standin_nomad(releases.install_dir("nomad", "1.9.7"), "1.9.7")
    found = binaries.locate("nomad")
    assert found.path == str(cached)
    assert found.skipped[0].path == str(on_path)
    assert "remote tasks were removed in Nomad 1.10" in found.skipped[0].problem


def test_up_installs_1_9_7_when_path_has_1_10_and_leaves_it_alone(isolated, mirror, monkeypatch):
    server, key = mirror
    on_path = standin_nomad(isolated, "1.10.1")
    before = on_path.read_bytes()
    reporter = RecordingReporter()
    progress = []
    paths = lifecycle.ensure_binaries(reporter, lifecycle.BinaryPolicy(
        releases_url=server.url, releases_key=key, on_bytes=lambda n, d, t: progress.append((n, d, t))))
    exe = releases.install_dir("nomad", "1.9.7") / "nomad"
    assert paths["nomad"] == str(exe)
    assert paths["terraform"] == str(releases.install_dir("terraform", "1.11.4") / "terraform")   # newest 1.x
    (warning,) = [w for w in reporter.texts("warn") if "nomad" in w.lower()]
    assert "Nomad 1.10.1" in warning and "remote tasks were removed in Nomad 1.10" in warning
    assert "your own binaries are not changed" in warning
    assert on_path.read_bytes() == before and os.access(on_path, os.X_OK)
    os_name, arch = releases.platform_os_arch()
    zip_calls = [p for p in progress if p[0] == f"nomad_1.9.7_{os_name}_{arch}.zip"]
    assert zip_calls[0][1] == 0 and zip_calls[-1][1] == zip_calls[-1][2] > 0    # the bar saw every byte
    assert binaries.locate("nomad").chosen.source == "ecsdemo cache"
    requests = len(server.requests)
    lifecycle.ensure_binaries(RecordingReporter(), lifecycle.BinaryPolicy(releases_url=server.url, releases_key=key))
    assert len(server.requests) == requests                               # found in the cache: no network


def test_no_install_fetches_nothing_and_up_refuses(isolated, mirror, tmp_path):
    server, key = mirror
    requests = len(server.requests)
    reporter = RecordingReporter()
    paths = lifecycle.ensure_binaries(reporter, lifecycle.BinaryPolicy(install=False, releases_url=server.url,
                                                                       releases_key=key))
    assert paths["nomad"] is None and len(server.requests) == requests and not reporter.texts("warn")
    cfg = free_ports_cfg(tmp_path, local=True)
    with pytest.raises(EcsdemoError, match="prerequisites missing: nomad: `nomad` is not on PATH"):
        lifecycle.check_prerequisites(cfg, RecordingReporter())
    assert not (tmp_path / "cache" / "bin" / "nomad" / "1.9.7").exists()


@pytest.mark.slow
def test_up_no_install_through_the_cli(isolated, mirror, tmp_path):
    server, key = mirror
    requests = len(server.requests)
    env = {**os.environ, "ECSDEMO_RELEASES_URL": server.url, "ECSDEMO_RELEASES_KEY": str(key)}
    res = subprocess.run([sys.executable, "-m", "ecsdemo", "up", "--local", "--no-install", "--state-dir",
                          str(tmp_path / "state")], capture_output=True, text=True, env=env, timeout=60)
    err = " ".join(res.stderr.split())
    assert res.returncode == 1 and "prerequisites missing: nomad" in err and "Traceback" not in err
    assert "ecsdemo install nomad" in err
    assert len(server.requests) == requests
