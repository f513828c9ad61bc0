"""A HashiCorp-style release tree the tests generate and serve (over 127.0.0.1 HTTP or file://).

`ReleaseTree(root, key)` writes `<root>/<product>/index.json` and, per version, the zips (an executable
`nomad`/`terraform` shell script that prints `Nomad v<version>` for `version`), `<product>_<v>_SHA256SUMS`
and its detached signatures (`.<KEYID>.sig` and `.sig`) made with `key`, a pysequoia key the tests create.
Builds' `url`s point at releases.hashicorp.com, as in an index copied into a mirror: ecsdemo must fetch the
files from the mirror, never from there. `serve(root)` is a real HTTP server that logs every request and can
cut a file short (sends its full Content-Length, then closes).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import pysequoia

PLATFORMS = [("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")]


def make_key(name: str = "ecsdemo test releases"):
    """A new signing key (a pysequoia Tsk)."""
    return pysequoia.Tsk.generate(f"{name} <releases@example.invalid>")


def write_public_key(tsk, path: Path) -> Path:
    path.write_text(str(tsk.extract_certificate()))
    return path


def key_id(tsk) -> str:
    return tsk.extract_certificate().fingerprint[-8:].upper()


def sign(tsk, data: bytes) -> bytes:
    return pysequoia.sign(tsk.signer(), data, mode=pysequoia.SignatureMode.DETACHED, armor=False)


def script(product: str, reports: str, body: str | None = None) -> str:
    label = "Nomad" if product == "nomad" else "Terraform"
    return body or (f'#!/bin/sh\nif [ "$1" = version ]; then echo "{label} v{reports}"; echo "Revision test"; '
                    f'exit 0; fi\necho "{product} stand-in: $*"\n')


def zip_bytes(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            z.writestr(info, text)
    return buf.getvalue()


class ReleaseTree:
    def __init__(self, root: Path, key, product: str = "nomad"):
        self.root, self.key, self.product = root, key, product
        self.versions: list[str] = []

    def dir(self, version: str) -> Path:
        return self.root / self.product / version

    def sums_name(self, version: str) -> str:
        return f"{self.product}_{version}_SHA256SUMS"

    def zip_name(self, version: str, os_name: str = "linux", arch: str = "amd64") -> str:
        return f"{self.product}_{version}_{os_name}_{arch}.zip"

    def add(self, version: str, reports: str | None = None, members: dict[str, str] | None = None,
            signer=None) -> "ReleaseTree":
        """One release; `reports` is what its binary's `version` prints, `members` replaces the zip's files,
        `signer` signs its SHA256SUMS instead of the tree's key."""
        d = self.dir(version)
        d.mkdir(parents=True, exist_ok=True)
        members = members or {self.product: script(self.product, reports or version), "LICENSE.txt": "MPL-2.0\n"}
        sums, builds = [], []
        for os_name, arch in PLATFORMS:
            name = self.zip_name(version, os_name, arch)
            data = zip_bytes(members)
            (d / name).write_bytes(data)
            sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
            builds.append({"name": self.product, "version": version, "os": os_name, "arch": arch, "filename": name,
                           "url": f"https://releases.hashicorp.com/{self.product}/{version}/{name}"})
        sums_data = "".join(sums).encode()
        (d / self.sums_name(version)).write_bytes(sums_data)
        signer = signer or self.key
        kid = key_id(signer)
        sig = sign(signer, sums_data)
        (d / f"{self.sums_name(version)}.{kid}.sig").write_bytes(sig)
        (d / f"{self.sums_name(version)}.sig").write_bytes(sig)
        (d / "index.json").write_text(json.dumps({
            "name": self.product, "version": version, "shasums": self.sums_name(version),
            "shasums_signature": f"{self.sums_name(version)}.sig",
            "shasums_signatures": [f"{self.sums_name(version)}.{kid}.sig", f"{self.sums_name(version)}.sig"],
            "builds": builds}, indent=1))
        if version not in self.versions:
            self.versions.append(version)
        self._write_product_index()
        return self

    def _write_product_index(self) -> None:
        versions = {v: json.loads((self.dir(v) / "index.json").read_text()) for v in self.versions}
        (self.root / self.product / "index.json").write_text(json.dumps({"name": self.product, "versions": versions}))

    def file(self, version: str, name: str) -> Path:
        return self.dir(version) / name


class _Handler(http.server.SimpleHTTPRequestHandler):
    server_version = "releasetree"

    def log_message(self, *args) -> None:
        pass

    def _start_file(self) -> bytes:
        """Send the 200 and the full Content-Length of the requested file; returns its bytes to write."""
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return data

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path in self.server.truncate:
            data = self._start_file()
            self.wfile.write(data[: len(data) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path in self.server.slow:        # half the file, a pause, then the rest
            data = self._start_file()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            time.sleep(self.server.slow[self.path])
            self.wfile.write(data[len(data) // 2:])
            return
        return super().do_GET()


class Server:
    """A threaded HTTP server on 127.0.0.1 serving `root`."""

    def __init__(self, root: Path):
        handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.requests = []
        self.httpd.truncate = set()
        self.httpd.slow = {}
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
