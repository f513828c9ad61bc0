"""`ecsdemo install nomad|terraform` through the real entry point, against release trees the tests generate
(tests/support/releasetree.py) served by a real HTTP server on 127.0.0.1 and as a file:// mirror, signed
with keys the tests create. Every fault is one message, exit 1, and nothing in the cache."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pysequoia
import pytest
from pysequoia.packet import PacketPile, Tag

from ecsdemo import releases
from ecsdemo.errors import EcsdemoError
from tests.support import releasetree as rt

DATA = Path(releases.__file__).parent / "data"


# --- the trees ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    good, other = rt.make_key(), rt.make_key("someone else")
    return {"tsk": good, "file": rt.write_public_key(good, d / "mirror.asc"), "other": other,
            "other_file": rt.write_public_key(other, d / "other.asc")}


@pytest.fixture(scope="module")
def tree(tmp_path_factory, keys):
    """Nomad releases: good ones, and one broken release per fault."""
    root = tmp_path_factory.mktemp("mirror")
    t = rt.ReleaseTree(root, keys["tsk"])
    for v in ("1.8.4", "1.9.5", "1.9.6", "1.9.7", "1.10.0"):
        t.add(v)
    t.add("1.9.1")                                      # checksum mismatch: the zip changed after SHA256SUMS
    z = t.file("1.9.1", t.zip_name("1.9.1", *releases.platform_os_arch()))
    data = bytearray(z.read_bytes())
    data[len(data) // 2] ^= 0xFF
    z.write_bytes(bytes(data))
    t.add("1.9.2")                                      # no signature at all
    for sig in t.dir("1.9.2").glob("*.sig"):
        sig.unlink()
    t.add("1.9.3")                                      # SHA256SUMS altered after signing
    sums = t.file("1.9.3", t.sums_name("1.9.3"))
    sums.write_bytes(sums.read_bytes() + b"0" * 64 + b"  extra.zip\n")
    t.add("1.9.4", signer=keys["other"])                # signed by another key
    t.add("1.8.0", members={"LICENSE.txt": "no binary here\n"})          # zip without the binary
    t.add("1.8.1", members={"nomad": "#!/bin/sh\necho 'segmentation fault' >&2\nexit 139\n"})  # does not run
    t.add("1.8.2", reports="1.8.3")                     # reports another version
    t.add("1.8.5")                                      # garbage in place of the signature
    for sig in t.dir("1.8.5").glob("*.sig"):
        sig.write_bytes(b"this is not a signature")
    return t


@pytest.fixture(scope="module")
def server(tree):
    s = rt.Server(tree.root)
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def ecsdemo(*args: str, url: str, key: Path | None, cache: Path, extra_env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECSDEMO_RELEASES_URL": url, "ECSDEMO_CACHE_DIR": str(cache), **(extra_env or {})}
    env.pop("ECSDEMO_RELEASES_KEY", None)
    if key is not None:
        env["ECSDEMO_RELEASES_KEY"] = str(key)
    res = subprocess.run([sys.executable, "-m", "ecsdemo", *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    res.stderr_lines = [line for line in res.stderr.splitlines() if line.strip()]
    return res


def installed(cache: Path) -> list[str]:
    """What is in the cache's nomad directory: installed versions, and anything half-written."""
    root = cache / "bin" / "nomad"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


PLATFORM = "_".join(releases.platform_os_arch())


def zip_requests(server, version: str) -> list[str]:
    return [p for p in server.requests if p.endswith(f"nomad_{version}_{PLATFORM}.zip")]


# --- the good path --------------------------------------------------------------------------------
@pytest.mark.slow
def test_install_over_http_verifies_then_installs(tree, server, keys, cache):
    res = ecsdemo("install", "nomad", "--version", "1.9.6", url=server.url, key=keys["file"], cache=cache)
    assert res.returncode == 0, res.stderr
    exe = cache / "bin" / "nomad" / "1.9.6" / "nomad"
    assert str(exe) in res.stdout and "verified and installed" in res.stdout
    assert os.access(exe, os.X_OK)
    assert subprocess.run([str(exe), "version"], capture_output=True, text=True).stdout.startswith("Nomad v1.9.6")
    record = json.loads((exe.parent / "ecsdemo-install.json").read_text())
    assert record["version"] == "1.9.6" and record["url"].startswith(server.url)   # the mirror, not the index's URL
    assert installed(cache) == ["1.9.6"]
    # the signature file named after the key is preferred over the generic one
    assert f"/nomad/1.9.6/nomad_1.9.6_SHA256SUMS.{rt.key_id(keys['tsk'])}.sig" in server.requests
    assert "/nomad/1.9.6/nomad_1.9.6_SHA256SUMS.sig" not in server.requests

    # reused from the cache with no network at all
    again = ecsdemo("install", "nomad", "--version", "1.9.6", url="http://127.0.0.1:9", key=keys["file"], cache=cache)
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout and str(exe) in again.stdout
    assert len(zip_requests(server, "1.9.6")) == 1


def test_default_is_nomad_1_9_7_and_a_file_mirror_works(tree, keys, cache):
    res = ecsdemo("install", "nomad", "--json", url=tree.root.as_uri(), key=keys["file"], cache=cache)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["version"] == "1.9.7" and data["reused"] is False
    assert data["path"] == str(cache / "bin" / "nomad" / "1.9.7" / "nomad")


def test_terraform_default_is_the_newest_1_x(tmp_path, keys, cache):
    t = rt.ReleaseTree(tmp_path / "tf", keys["tsk"], product="terraform")
    for v in ("1.5.7", "1.11.4", "1.12.0-rc1", "2.0.0"):
        t.add(v)
    res = ecsdemo("install", "terraform", url=t.root.as_uri(), key=keys["file"], cache=cache)
    assert res.returncode == 0, res.stderr
    assert "Terraform 1.11.4 verified and installed" in res.stdout
    assert (cache / "bin" / "terraform" / "1.11.4" / "terraform").is_file()


@pytest.mark.slow
def test_two_concurrent_installs_download_once(tree, server, keys, cache):
    server.httpd.slow[f"/nomad/1.9.5/{tree.zip_name('1.9.5', *releases.platform_os_arch())}"] = 1.5
    procs = [subprocess.Popen([sys.executable, "-m", "ecsdemo", "install", "nomad", "--version", "1.9.5"],
                              env={**os.environ, "ECSDEMO_RELEASES_URL": server.url, "ECSDEMO_CACHE_DIR": str(cache),
                                   "ECSDEMO_RELEASES_KEY": str(keys["file"])},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(zip_requests(server, "1.9.5")) == 1           # the second waited for the lock, then reused
    assert sum("already installed" in out for out, _ in outs) == 1
    assert installed(cache) == ["1.9.5"]


@pytest.mark.slow
def test_ctrl_c_during_the_download_leaves_nothing(tree, server, keys, cache):
    path = f"/nomad/1.8.4/{tree.zip_name('1.8.4', *releases.platform_os_arch())}"
    server.httpd.slow[path] = 20
    proc = subprocess.Popen([sys.executable, "-m", "ecsdemo", "install", "nomad", "--version", "1.8.4"],
                            env={**os.environ, "ECSDEMO_RELEASES_URL": server.url, "ECSDEMO_CACHE_DIR": str(cache),
                                 "ECSDEMO_RELEASES_KEY": str(keys["file"])},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while path not in server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert any((cache / "bin" / "nomad").glob(".1.8.4-*")), "the download should be under way"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    assert installed(cache) == []


# --- every fault: one message, exit 1, nothing installed --------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("version,words", [
    ("1.9.9", "nomad 1.9.9 is not available from {url}; nearest available: 1.9.4, 1.9.5, 1.9.6, 1.9.7, 1.10.0"),
    ("1.9.1", "checksum mismatch for nomad_1.9.1_{platform}.zip"),
    ("1.9.2", "missing signature: none of nomad_1.9.2_SHA256SUMS.{kid}.sig, nomad_1.9.2_SHA256SUMS.sig"),
    ("1.9.3", "bad signature: the OpenPGP signature does not match nomad_1.9.3_SHA256SUMS"),
    ("1.8.5", "bad signature for nomad_1.8.5_SHA256SUMS: not an OpenPGP signature"),
    ("1.9.4", "nomad_1.9.4_SHA256SUMS is signed by another key"),
    ("1.8.0", "nomad_1.8.0_{platform}.zip has no `nomad` binary"),
    ("1.8.1", "the downloaded nomad does not run: `nomad version` exited 139 (segmentation fault)"),
    ("1.8.2", "the downloaded nomad reports version 1.8.3"),
])
@pytest.mark.parametrize("transport", ["http", "file"])
def test_faults(tree, server, keys, cache, version, words, transport):
    url = server.url if transport == "http" else tree.root.as_uri()
    res = ecsdemo("install", "nomad", "--version", version, url=url, key=keys["file"], cache=cache)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    error = [line for line in res.stderr_lines if line.startswith("error:")]
    assert len(error) == 1, res.stderr
    assert words.format(url=url, kid=rt.key_id(keys["tsk"]), platform=PLATFORM) in error[0]
    assert installed(cache) == []


def test_truncated_download(tree, server, keys, cache):
    server.httpd.truncate.add(f"/nomad/1.9.7/{tree.zip_name('1.9.7', *releases.platform_os_arch())}")
    try:
        res = ecsdemo("install", "nomad", "--version", "1.9.7", url=server.url, key=keys["file"], cache=cache)
    finally:
        server.httpd.truncate.clear()
    assert res.returncode == 1 and f"truncated download of nomad_1.9.7_{PLATFORM}.zip" in res.stderr, res.stderr
    assert installed(cache) == []


def test_a_truncated_zip_in_a_mirror_fails_its_checksum(tmp_path, keys, cache):
    t = rt.ReleaseTree(tmp_path / "m", keys["tsk"]).add("1.9.7")
    z = t.file("1.9.7", t.zip_name("1.9.7", *releases.platform_os_arch()))
    z.write_bytes(z.read_bytes()[:100])
    res = ecsdemo("install", "nomad", url=t.root.as_uri(), key=keys["file"], cache=cache)
    err = " ".join(res.stderr.split())
    assert res.returncode == 1
    assert f"checksum mismatch for nomad_1.9.7_{PLATFORM}.zip (an incomplete zip of 100 bytes" in err
    assert installed(cache) == []


def test_no_network_names_the_mirror_option_and_the_manual_route(keys, cache):
    res = ecsdemo("install", "nomad", url="http://127.0.0.1:9", key=keys["file"], cache=cache)
    assert res.returncode == 1
    text = " ".join(res.stderr.split())
    assert "cannot reach the release server" in text
    assert "--releases-url" in text and "ECSDEMO_NOMAD_BIN" in text and "PATH" in text
    assert installed(cache) == []


def test_the_default_key_refuses_a_mirror_signed_by_another(tree, keys, cache):
    """Without --releases-key, HashiCorp's key is the one trusted: the test key's signature is refused."""
    res = ecsdemo("install", "nomad", url=tree.root.as_uri(), key=None, cache=cache)
    assert res.returncode == 1 and "signed by another key" in res.stderr and "HashiCorp's release key" in res.stderr
    assert installed(cache) == []


@pytest.mark.slow
def test_bad_input(tree, keys, cache, tmp_path):
    url = tree.root.as_uri()
    res = ecsdemo("install", "vault", url=url, key=keys["file"], cache=cache)
    assert res.returncode == 1 and "unknown product 'vault'" in res.stderr
    res = ecsdemo("install", "nomad", "--version", "../../etc", url=url, key=keys["file"], cache=cache)
    assert res.returncode == 1 and "invalid version" in res.stderr
    res = ecsdemo("install", "nomad", url="ftp://mirror.example/", key=keys["file"], cache=cache)
    assert res.returncode == 1 and "unsupported releases URL" in res.stderr
    (tmp_path / "junk.asc").write_text("not a key")
    res = ecsdemo("install", "nomad", url=url, key=tmp_path / "junk.asc", cache=cache)
    assert res.returncode == 1 and "is not an OpenPGP public key" in res.stderr
    res = ecsdemo("install", "nomad", url=(tmp_path / "nothing").as_uri(), key=keys["file"], cache=cache)
    assert res.returncode == 1 and "no nomad releases at" in res.stderr
    assert not cache.exists()         # not even a lock file for a release that is not there


# --- pieces: platform, versions, keys ------------------------------------------------------------------
def test_platform_names():
    assert releases.platform_os_arch("Linux", "x86_64") == ("linux", "amd64")
    assert releases.platform_os_arch("Darwin", "arm64") == ("darwin", "arm64")
    assert releases.platform_os_arch("Windows", "AMD64") == ("windows", "amd64")
    with pytest.raises(EcsdemoError, match="unsupported platform freebsd/x86_64"):
        releases.platform_os_arch("FreeBSD", "x86_64")
    with pytest.raises(EcsdemoError, match="unsupported platform linux/riscv64"):
        releases.platform_os_arch("Linux", "riscv64")


def test_versions_order_and_nearest():
    vs = ["1.9.0-rc1", "1.9.0", "1.10.0", "1.2.3", "1.9.10", "1.9.2"]
    assert sorted(vs, key=releases.version_key) == ["1.2.3", "1.9.0-rc1", "1.9.0", "1.9.2", "1.9.10", "1.10.0"]
    assert releases.nearest(vs, "1.9.3", count=3) == ["1.9.0", "1.9.2", "1.9.10"]   # stable ones, around it
    assert releases.nearest(vs, "0.1.0", count=2) == ["1.2.3", "1.9.0"]
    assert releases.reported_version("Nomad v1.9.7\nBuildDate 2025-03-11") == "1.9.7"
    assert releases.reported_version("Terraform v1.12.0-rc1\non linux_amd64") == "1.12.0-rc1"


def test_shipped_hashicorp_key():
    src = releases.source(url="file:///nowhere")
    (cert,) = src.keys
    assert cert.fingerprint.upper() == "C874 011F 0AB4 0511 0D02 1055 3436 5D94 72D7 468F".replace(" ", "")
    assert cert.expiration.date() == dt.date(2030, 3, 1)
    assert (DATA / "hashicorp-release-key.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")


def test_shipped_key_binds_its_signing_subkey_for_old_and_new_releases():
    """Sequoia accepts a signature only if the signing subkey was bound (by a self-signature) when it was
    made: the shipped key must carry a binding valid on Nomad 1.9.7's release day and one until 2030."""
    (cert,) = releases.source(url="file:///nowhere").keys
    spans, current = [], None
    for p in PacketPile.from_bytes(bytes(cert)):
        if p.tag == Tag.PublicSubkey:
            current = p.key_created
        elif p.tag == Tag.Signature and current and p.key_flags is not None and p.key_flags.signing:
            spans.append((p.signature_created, current + p.key_validity_period))
    for day in (dt.datetime(2025, 3, 11, tzinfo=dt.timezone.utc), dt.datetime(2029, 12, 1, tzinfo=dt.timezone.utc)):
        assert any(start <= day < end for start, end in spans), (day, spans)


def _source(*certs) -> releases.Source:
    return releases.Source("file:///x", list(certs), "the test key")


@pytest.mark.slow
def test_a_key_renewed_later_still_verifies_older_signatures_with_its_history(tmp_path):
    """What happened to HashiCorp's key: re-certified later (new self-signatures, new expiry). A copy with
    only the new self-signatures no longer verifies a signature made before them; with the history it does."""
    tsk = pysequoia.Tsk.generate("renewed <r@example.invalid>", validity_seconds=3600)
    data = b"0" * 64 + b"  nomad_1.9.7_linux_amd64.zip\n"
    sig = rt.sign(tsk, data)
    old = tsk.extract_certificate()
    time.sleep(1.2)
    renewed = pysequoia.Cert.from_bytes(bytes(old.set_expiration(
        dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30), tsk.certifier())))
    newest_only = pysequoia.Cert.from_packets([
        p for p in PacketPile.from_bytes(bytes(renewed))
        if not (p.tag == Tag.Signature and p.signature_created is not None
                and p.signature_created < renewed_time(renewed))])
    with pytest.raises(EcsdemoError, match="bad signature"):
        releases.verify_signature(data, sig, _source(newest_only), "SUMS")
    (tmp_path / "new.asc").write_text(str(newest_only))
    (tmp_path / "old.asc").write_text(str(old))
    merged = releases.load_keys([tmp_path / "new.asc", tmp_path / "old.asc"])
    assert len(merged) == 1
    assert releases.verify_signature(data, sig, _source(*merged), "SUMS") == old.fingerprint


def renewed_time(cert) -> dt.datetime:
    return max(p.signature_created for p in PacketPile.from_bytes(bytes(cert)) if p.tag == Tag.Signature)


@pytest.mark.slow
def test_a_signature_made_after_the_key_expired_is_refused():
    tsk = pysequoia.Tsk.generate("expiring <e@example.invalid>", validity_seconds=3600)
    data = b"sums\n"
    sig = rt.sign(tsk, data)
    time.sleep(1.2)
    # the key as its owner later published it: expired before this signature was made
    expired = tsk.extract_certificate().set_expiration(dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30),
                                                       tsk.certifier())
    expired = pysequoia.Cert.from_bytes(bytes(expired))
    with pytest.raises(EcsdemoError, match=r"was signed on \d{4}-\d\d-\d\d, after the test key expired on"):
        releases.verify_signature(data, sig, _source(expired), "SUMS")
