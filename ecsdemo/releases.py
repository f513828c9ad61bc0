"""HashiCorp's release server: find a product's version, download it, verify it, install it into ecsdemo's cache.

Layout (releases.hashicorp.com, or any mirror of it over http(s):// or file://):
`<base>/<product>/index.json` (every version), `<base>/<product>/<version>/index.json` (`shasums`,
`shasums_signature`, `shasums_signatures`, `builds[]` with `os`, `arch`, `filename`, `url`), the zip
`<product>_<version>_<os>_<arch>.zip`, `<product>_<version>_SHA256SUMS` and its detached OpenPGP signature
(`..._SHA256SUMS.<KEYID>.sig` preferred, else `..._SHA256SUMS.sig`).

Nothing is installed before it is verified, in this order: the signature of the SHA256SUMS file with the
release key (HashiCorp's, shipped in `ecsdemo/data/`, or the mirror's own from `--releases-key`), the zip's
SHA-256 against its line, the one binary unzipped and marked executable, `<binary> version` reporting the
version asked for. Only then is it moved into `<cache>/bin/<product>/<version>/` with one rename. A lock
file (`<cache>/locks/<product>-<version>.lock`) serialises installs of one version; everything is written
in a temporary directory next to the target, removed on any failure or Ctrl-C. There is no way to skip a check.

OpenPGP is pysequoia (Sequoia's Rust implementation, shipped as a wheel, no system gpg). Sequoia judges a
signature by the key as it was when the signature was made, so a signature made while the key was valid
still verifies after it expires, and one made by an expired or revoked key does not. This module never prints:
download progress goes to an `on_bytes(name, done, total)` callback (total None when unknown; a
last call with done == total when the file is complete).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import unquote, urljoin, urlparse

import platformdirs
import pysequoia
import requests
from pysequoia.packet import PacketPile

from ecsdemo.errors import EcsdemoError
from ecsdemo.waiting import wait_until

if os.name == "nt":
    import msvcrt
else:
    import fcntl

DEFAULT_URL = "https://releases.hashicorp.com"
URL_ENV = "ECSDEMO_RELEASES_URL"
KEY_ENV = "ECSDEMO_RELEASES_KEY"
CACHE_ENV = "ECSDEMO_CACHE_DIR"
PRODUCTS = ("nomad", "terraform")
DEFAULT_NOMAD = "1.9.7"        # the last community release with remote task drivers (removed in 1.10)
BIN_ENV = {"nomad": "ECSDEMO_NOMAD_BIN", "terraform": "ECSDEMO_TERRAFORM"}
TIMEOUT = (10.0, 60.0)         # connect, read (seconds)
LOCK_WAIT = 900.0              # how long a second install waits for the first one
RECORD = "ecsdemo-install.json"
_DATA = Path(__file__).resolve().parent / "data"
# HashiCorp's release key as published now (valid until 2030-03-01), then the same key's 2021 self-signatures:
# Sequoia needs the self-signatures that were valid when a release was signed (e.g. Nomad 1.9.7 in 2025).
DEFAULT_KEY_FILES = (_DATA / "hashicorp-release-key.asc", _DATA / "hashicorp-release-key-2021-selfsigs.asc")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")
_REPORTED = re.compile(r"v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?)")

_KEY_HINT = "--releases-key / ECSDEMO_RELEASES_KEY must name an armored OpenPGP public key file"
_MIRROR_HINT = "is --releases-url a mirror of releases.hashicorp.com?"
_INCOMPLETE_HINT = "the mirror is incomplete; nothing was installed"

OnBytes = Callable[[str, int, "int | None"], None]


# --- where things are ---------------------------------------------------------------------------------
def cache_dir() -> Path:
    """`$ECSDEMO_CACHE_DIR`, else the user cache directory (platformdirs: ~/.cache/ecsdemo on Linux)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("ecsdemo", appauthor=False))


def exe_name(product: str) -> str:
    return f"{product}.exe" if sys.platform.startswith("win") else product


def install_dir(product: str, version: str) -> Path:
    return cache_dir() / "bin" / product / version


def cached_versions(product: str) -> list[str]:
    """Versions of `product` in the cache that hold a binary, newest first (not run: see `usable`)."""
    root = cache_dir() / "bin" / product
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if not p.name.startswith(".") and (p / exe_name(product)).is_file()]
    return sorted(found, key=version_key, reverse=True)


def platform_os_arch(system: str | None = None, machine: str | None = None) -> tuple[str, str]:
    """HashiCorp's (os, arch) names for this machine; a clear error for anything they do not build for us."""
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    os_name = {"linux": "linux", "darwin": "darwin", "windows": "windows"}.get(system)
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if os_name is None or arch is None:
        raise EcsdemoError(f"unsupported platform {system}/{machine}: ecsdemo installs HashiCorp binaries for "
                           "linux, darwin and windows on amd64 or arm64",
                           hint="install the binary yourself and put it on PATH "
                                "(or set ECSDEMO_NOMAD_BIN / ECSDEMO_TERRAFORM)")
    return os_name, arch


# --- versions ---------------------------------------------------------------------------------------
def version_key(text: str) -> tuple:
    """Sort key: numeric parts, then a final release after its pre-releases (1.9.0-rc1 < 1.9.0)."""
    core, _, pre = text.partition("+")[0].partition("-")
    nums = tuple(int(p) if p.isdigit() else 0 for p in core.split("."))
    return nums + ((0, pre) if pre else (1, ""),)


def is_stable(text: str) -> bool:
    return bool(re.fullmatch(r"\d+\.\d+\.\d+", text))


def reported_version(output: str) -> str | None:
    """The version a binary's `version` command reports ("Nomad v1.9.7", "Terraform v1.11.4"), or None."""
    first = (output or "").strip().splitlines()
    m = _REPORTED.search(first[0]) if first else None
    return m.group(1) if m else None


def nearest(versions: list[str], wanted: str, count: int = 5) -> list[str]:
    """The `count` stable versions closest to `wanted` in release order (some below, some above)."""
    ordered = sorted({v for v in versions if is_stable(v)}, key=version_key)
    if not ordered:
        ordered = sorted(set(versions), key=version_key)
    key = version_key(wanted)
    at = sum(1 for v in ordered if version_key(v) < key)
    lo = max(0, min(at - (count + 1) // 2, len(ordered) - count))
    return ordered[lo:lo + count]


# --- the source: base URL and trusted keys ------------------------------------------------------------
@dataclass
class Source:
    url: str                # base, without a trailing slash
    keys: list              # pysequoia Certs trusted to sign SHA256SUMS
    key_name: str           # for messages: "HashiCorp's release key" or the file given

    @property
    def default(self) -> bool:
        return self.url == DEFAULT_URL


def source(url: str | None = None, key_file: str | Path | None = None) -> Source:
    """The release server (argument, else $ECSDEMO_RELEASES_URL, else releases.hashicorp.com) and its key
    (argument, else $ECSDEMO_RELEASES_KEY, else HashiCorp's key shipped with ecsdemo)."""
    url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
    scheme = urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise EcsdemoError(f"unsupported releases URL {url!r}: use http://, https:// or file://",
                           hint="e.g. --releases-url file:///srv/mirror (laid out like releases.hashicorp.com)")
    key_file = key_file or os.environ.get(KEY_ENV) or None
    if key_file:
        path = Path(key_file).expanduser()
        return Source(url, load_keys([path]), f"the key in {path}")
    return Source(url, load_keys(list(DEFAULT_KEY_FILES)), "HashiCorp's release key")


def load_keys(paths: list[Path]) -> list:
    """The OpenPGP certificates in `paths` (armored or binary); copies of one key are merged."""
    certs: dict[str, object] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EcsdemoError(f"cannot read the release key {path}: {exc.strerror or exc}", hint=_KEY_HINT) from None
        try:
            found = pysequoia.Cert.split_bytes(data)
        except (RuntimeError, ValueError) as exc:
            found, why = [], _first_line(exc)
        else:
            why = "no key in it"
        if not found:
            raise EcsdemoError(f"{path} is not an OpenPGP public key ({why})", hint=_KEY_HINT)
        for cert in found:
            fpr = cert.fingerprint
            certs[fpr] = certs[fpr].merge(cert) if fpr in certs else cert
    return list(certs.values())


def key_fingerprints(cert) -> list[str]:
    """Lowercase fingerprints of a certificate's primary key and subkeys."""
    return [p.fingerprint for p in PacketPile.from_bytes(bytes(cert)) if p.fingerprint]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _spaced(fpr: str) -> str:
    f = fpr.upper()
    return " ".join(f[i:i + 4] for i in range(0, len(f), 4))


# --- fetching -----------------------------------------------------------------------------------------
class NotFound(Exception):
    """The server answered, and the file is not there (HTTP 404, missing file)."""


def _unreachable(url: str, reason: str, product: str) -> EcsdemoError:
    env = BIN_ENV.get(product, "ECSDEMO_NOMAD_BIN")
    return EcsdemoError(
        f"cannot reach the release server for {url} ({reason})",
        hint=f"without internet, pass --releases-url (or {URL_ENV}) naming a mirror (http(s):// or file://) "
             f"with --releases-key, or install {product} yourself and put it on PATH or set {env}")


def fetch(url: str, product: str, dest: Path | None = None, on_bytes: OnBytes | None = None,
          name: str | None = None) -> bytes | None:
    """GET `url` (http(s) or file://): the bytes, or written to `dest` (returns None). Raises NotFound,
    or EcsdemoError for an unreachable server or a download that ends early."""
    name = name or url.rsplit("/", 1)[-1]
    if urlparse(url).scheme == "file":
        return _fetch_file(url, dest, on_bytes, name)
    try:
        resp = requests.get(url, stream=True, timeout=TIMEOUT, headers={"User-Agent": "ecsdemo"})
    except requests.RequestException as exc:
        raise _unreachable(url, _request_reason(exc), product) from None
    with contextlib.closing(resp):
        if resp.status_code == 404:
            raise NotFound(url)
        if resp.status_code != 200:
            raise EcsdemoError(f"the release server answered HTTP {resp.status_code} for {url}",
                               hint="try again later, or use a mirror with --releases-url")
        # with a content encoding, Content-Length counts encoded bytes: no length check then (SHA-256 still is)
        encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        total = None if encoded else _int(resp.headers.get("Content-Length"))
        chunks = resp.iter_content(chunk_size=1 << 16)
        try:
            return _copy(chunks, dest, on_bytes, name, total, url)
        except requests.RequestException as exc:
            raise EcsdemoError(f"truncated download of {name}: the connection broke ({_request_reason(exc)})",
                               hint="try again; nothing was installed") from None


def _request_reason(exc: BaseException) -> str:
    text = _first_line(exc)
    m = re.search(r"\[Errno [-\d]+\] ([^'\")]+)|(Name or service not known|timed out|Connection refused)", text)
    return (m.group(1) or m.group(2)).strip() if m else text[:160]


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _fetch_file(url: str, dest: Path | None, on_bytes: OnBytes | None, name: str) -> bytes | None:
    parsed = urlparse(url)
    path = Path(unquote(parsed.path))
    if parsed.netloc and parsed.netloc != "localhost":
        raise EcsdemoError(f"file:// URL with a host ({url}): use file:///absolute/path")
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise NotFound(url) from None
    except OSError as exc:
        raise EcsdemoError(f"cannot read {path}: {exc.strerror or exc}",
                           hint="check the mirror's permissions") from None
    with f:
        total = os.fstat(f.fileno()).st_size
        return _copy(iter(lambda: f.read(1 << 16), b""), dest, on_bytes, name, total, url)


def _copy(chunks: Iterator[bytes], dest: Path | None, on_bytes: OnBytes | None, name: str,
          total: int | None, url: str) -> bytes | None:
    done = 0
    parts: list[bytes] = []
    out = dest.open("wb") if dest is not None else None
    try:
        if on_bytes:
            on_bytes(name, 0, total)
        for chunk in chunks:
            done += len(chunk)
            if out is not None:
                out.write(chunk)
            else:
                parts.append(chunk)
            if on_bytes:
                on_bytes(name, done, total)
    finally:
        if out is not None:
            out.close()
    if total is not None and done < total:
        raise EcsdemoError(f"truncated download of {name}: got {done} of {total} bytes from {url}",
                           hint="try again; nothing was installed")
    if on_bytes:
        on_bytes(name, done, done)   # the end: done == total
    return None if out is not None else b"".join(parts)


def _json(url: str, product: str) -> dict:
    data = fetch(url, product)
    try:
        doc = json.loads(data)
    except ValueError:
        raise EcsdemoError(f"{url} is not valid JSON", hint=_MIRROR_HINT) from None
    if not isinstance(doc, dict):
        raise EcsdemoError(f"{url} is not a release index (a JSON object)")
    return doc


# --- the index ----------------------------------------------------------------------------------------
def product_versions(src: Source, product: str) -> list[str]:
    """Every version in `<base>/<product>/index.json`."""
    url = f"{src.url}/{product}/index.json"
    try:
        versions = _json(url, product).get("versions")
    except NotFound:
        raise EcsdemoError(f"no {product} releases at {src.url} ({url} not found)",
                           hint="--releases-url must name a mirror laid out like releases.hashicorp.com") from None
    if isinstance(versions, list) and all(isinstance(v, str) for v in versions):
        return versions
    if not isinstance(versions, dict):
        raise EcsdemoError(f"{url} has no `versions` object", hint=_MIRROR_HINT)
    return list(versions)


def default_version(src: Source, product: str) -> str:
    """Nomad: 1.9.7. Terraform: the newest stable 1.x in the index."""
    if product == "nomad":
        return DEFAULT_NOMAD
    ones = [v for v in product_versions(src, product) if is_stable(v) and v.startswith("1.")]
    if not ones:
        raise EcsdemoError(f"no Terraform 1.x release in {src.url}/{product}/index.json",
                           hint="pass --version, or check the mirror")
    return max(ones, key=version_key)


def release_index(src: Source, product: str, version: str) -> dict:
    """`<base>/<product>/<version>/index.json`; an unknown version lists the nearest available ones."""
    url = f"{src.url}/{product}/{version}/index.json"
    try:
        return _json(url, product)
    except NotFound:
        pass
    known = product_versions(src, product)     # no product index either: "no nomad releases at ..."
    near = ", ".join(nearest(known, version)) if known else "none listed"
    raise EcsdemoError(f"{product} {version} is not available from {src.url}; nearest available: {near}",
                       hint=f"pass one of them with --version (`ecsdemo install {product} --version V`)")


def pick_build(index: dict, product: str, version: str, os_name: str, arch: str) -> dict:
    builds = [b for b in index.get("builds") or [] if isinstance(b, dict)]
    for b in builds:
        if b.get("os") == os_name and b.get("arch") == arch and b.get("filename"):
            return b
    have = ", ".join(sorted({f"{b.get('os')}/{b.get('arch')}" for b in builds})) or "none"
    raise EcsdemoError(f"{product} {version} has no {os_name}/{arch} build (builds: {have})",
                       hint="install it yourself and put it on PATH")


def _build_url(src: Source, version_dir: str, build: dict) -> str:
    """The zip's URL: the index's `url` when it is relative or on the mirror's own host, else the file next
    to the index (an index copied from releases.hashicorp.com into a mirror still points there)."""
    own = f"{version_dir}{build['filename']}"
    given = build.get("url")
    if not isinstance(given, str) or not given:
        return own
    joined = urljoin(version_dir, given)
    a, b = urlparse(joined), urlparse(version_dir)
    return joined if (a.scheme, a.netloc) == (b.scheme, b.netloc) else own


def _signature_names(index: dict, sums: str, src: Source) -> list[str]:
    """Signature files to try, best first: `<sums>.<KEYID>.sig` for a trusted key, then `<sums>.sig`."""
    listed = [s for s in index.get("shasums_signatures") or [] if isinstance(s, str)]
    ids = {f[-8:].lower() for cert in src.keys for f in key_fingerprints(cert)}
    keyed = [s for s in listed if s.lower().startswith(sums.lower() + ".") and
             s.lower()[len(sums) + 1:-len(".sig")] in ids]
    if not listed:
        keyed = [f"{sums}.{cert.fingerprint[-8:].upper()}.sig" for cert in src.keys]
    generic = index.get("shasums_signature") if isinstance(index.get("shasums_signature"), str) else f"{sums}.sig"
    names = keyed + [generic] + [s for s in listed if s not in keyed and s != generic]
    return list(dict.fromkeys(names))


# --- verification -------------------------------------------------------------------------------------
def verify_signature(data: bytes, signature: bytes, src: Source, what: str) -> str:
    """Check that `signature` is a valid OpenPGP signature of `data` by one of `src.keys`; returns the
    signing key's primary fingerprint. Every failure is an EcsdemoError naming why."""
    try:
        sig = pysequoia.Sig.from_bytes(signature)
    except (RuntimeError, ValueError) as exc:
        raise EcsdemoError(f"bad signature for {what}: not an OpenPGP signature ({_first_line(exc)})",
                           hint="the mirror's file is damaged or not a signature; nothing was installed") from None
    issuer = (sig.issuer_fingerprint or sig.issuer_key_id or "").lower()
    owner = next((c for c in src.keys if any(f.endswith(issuer) for f in key_fingerprints(c))), None) \
        if issuer else None
    if owner is None:
        raise EcsdemoError(
            f"{what} is signed by another key ({_spaced(issuer) if issuer else 'no issuer'}), not {src.key_name} "
            f"({', '.join(_spaced(c.fingerprint) for c in src.keys)})",
            hint="if you trust that mirror's own key, pass it with --releases-key; nothing was installed")
    if owner.is_revoked:
        raise EcsdemoError(f"{src.key_name} ({_spaced(owner.fingerprint)}) is revoked: {what} cannot be trusted",
                           hint="update ecsdemo, or pass a current key with --releases-key")
    expires, made = owner.expiration, sig.created
    if expires is not None and made is not None and made > expires:
        raise EcsdemoError(f"{what} was signed on {made:%Y-%m-%d}, after {src.key_name} expired on {expires:%Y-%m-%d}",
                           hint="update ecsdemo (a newer release ships the renewed key) or pass the current key "
                                "with --releases-key")
    try:
        result = pysequoia.verify(bytes=data, store=lambda _ids: [owner], signature=sig)
    except (RuntimeError, ValueError):
        late = expires is not None and expires < dt.datetime.now(dt.timezone.utc)
        raise EcsdemoError(f"bad signature: the OpenPGP signature does not match {what}"
                           + (f" ({src.key_name} expired on {expires:%Y-%m-%d})" if late else ""),
                           hint="the file was altered or damaged; nothing was installed") from None
    signers = {str(getattr(v, "certificate", "")).lower() for v in result.valid_sigs}
    if owner.fingerprint.lower() not in signers:
        raise EcsdemoError(f"bad signature: {what} is not signed by {src.key_name}",
                           hint="nothing was installed")
    return owner.fingerprint


def sums_entry(sums: bytes, filename: str, what: str) -> str:
    """The SHA-256 for `filename` in a SHA256SUMS file."""
    for line in sums.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            return parts[0].lower()
    raise EcsdemoError(f"{what} has no SHA-256 line for {filename}", hint=_INCOMPLETE_HINT)


def check_binary(exe: Path, product: str, version: str) -> None:
    """Run `<exe> version` and require it to report `version`."""
    try:
        proc = subprocess.run([str(exe), "version"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EcsdemoError(f"the downloaded {product} does not run: `{product} version` did not answer in 30s",
                           hint="nothing was installed") from None
    except OSError as exc:
        raise EcsdemoError(f"the downloaded {product} does not run: {exc.strerror or exc}",
                           hint="is it built for this platform? nothing was installed") from None
    out = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        first = out.strip().splitlines()[0] if out.strip() else "no output"
        raise EcsdemoError(f"the downloaded {product} does not run: `{product} version` exited {proc.returncode} "
                           f"({first[:120]})",
                           hint="nothing was installed")
    got = reported_version(out)
    if got != version:
        raise EcsdemoError(f"the downloaded {product} reports version {got or 'nothing'} ({out.strip()[:80]!r}), "
                           f"not {version}",
                           hint="the mirror's zip holds another build; nothing was installed")


def usable(exe: Path, product: str, version: str) -> bool:
    try:
        check_binary(exe, product, version)
    except EcsdemoError:
        return False
    return True


# --- installing ---------------------------------------------------------------------------------------
@dataclass
class Installed:
    product: str
    version: str
    path: Path
    reused: bool          # already in the cache: nothing was downloaded
    url: str | None = None

    def to_json(self) -> dict:
        return {"product": self.product, "version": self.version, "path": str(self.path), "reused": self.reused,
                "url": self.url}


@contextlib.contextmanager
def _lock(path: Path, what: str, wait: float = LOCK_WAIT) -> Iterator[None]:
    """An exclusive lock on `path` (released when the process dies, so never stale)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        wait_until(f"another ecsdemo is installing {what}", lambda _max_block: _try_lock(f), bool, wait,
                   interval=0.2,
                   timed_out=lambda _locked: EcsdemoError(f"another ecsdemo has been installing {what} for "
                                                          f"{wait:.0f}s (lock {path})",
                                                          hint="wait for it to finish, or stop it"))
        try:
            yield
        finally:
            _unlock(f)


def _try_lock(f) -> bool:
    """Take the lock without waiting; False when another process holds it."""
    try:
        if os.name == "nt":
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(f) -> None:
    if os.name == "nt":
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _extract(zip_path: Path, product: str, out: Path, filename: str) -> Path:
    name = exe_name(product)
    try:
        with zipfile.ZipFile(zip_path) as z:
            member = next((m for m in z.infolist() if m.filename.removeprefix("./") == name and not m.is_dir()), None)
            if member is None:
                raise EcsdemoError(f"{filename} has no `{name}` binary (it holds: "
                                   f"{', '.join(m.filename for m in z.infolist()[:5]) or 'nothing'})",
                                   hint="the mirror's zip is not a HashiCorp release; nothing was installed")
            out.mkdir()
            exe = out / name
            with z.open(member) as src, exe.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise EcsdemoError(f"{filename} is not a valid zip ({_first_line(exc)})",
                           hint="nothing was installed") from None
    exe.chmod(0o755)
    return exe


def install(product: str, version: str | None = None, src: Source | None = None,
            on_bytes: OnBytes | None = None, platform: tuple[str, str] | None = None) -> Installed:
    """Install `product` `version` (default: `default_version`) into the cache, or reuse a verified one."""
    if product not in PRODUCTS:
        raise EcsdemoError(f"unknown product {product!r}: ecsdemo installs {' or '.join(PRODUCTS)}")
    if version is not None and not _VERSION.match(version):
        raise EcsdemoError(f"invalid version {version!r}: expected X.Y.Z (e.g. {DEFAULT_NOMAD})")
    src = src or source()
    os_name, arch = platform or platform_os_arch()
    if version is None and product == "nomad":
        version = DEFAULT_NOMAD
    if version is not None:
        found = _reuse(product, version)
        if found:
            return found
    version = version or default_version(src, product)
    found = _reuse(product, version)
    if found:
        return found
    index = release_index(src, product, version)     # read-only: an unknown version writes nothing
    build = pick_build(index, product, version, os_name, arch)
    final = install_dir(product, version)
    parent = final.parent
    with _lock(cache_dir() / "locks" / f"{product}-{version}.lock", f"{product} {version}"):
        found = _reuse(product, version)     # another ecsdemo may have installed it while we waited
        if found:
            return found
        for stale in parent.glob(f".{version}-*"):   # left by a killed install (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=parent))
        try:
            url = _download_verified(src, product, version, index, build, work, on_bytes)
            exe = _extract(work / "download.zip", product, work / "out", build["filename"])
            check_binary(exe, product, version)
            (work / "out" / RECORD).write_text(json.dumps({
                "product": product, "version": version, "os": os_name, "arch": arch, "url": url,
                "sha256": _sha256(work / "download.zip"), "signed_by": src.key_name,
                "installed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}, indent=2))
            if final.exists():                 # a broken earlier install (its binary no longer runs)
                shutil.rmtree(final)
            os.replace(work / "out", final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Installed(product, version, final / exe_name(product), reused=False, url=url)


def _reuse(product: str, version: str) -> Installed | None:
    exe = install_dir(product, version) / exe_name(product)
    if exe.is_file() and usable(exe, product, version):
        return Installed(product, version, exe, reused=True)
    return None


def _download_verified(src: Source, product: str, version: str, index: dict, build: dict, work: Path,
                       on_bytes: OnBytes | None) -> str:
    version_dir = f"{src.url}/{product}/{version}/"
    sums_name = index.get("shasums") if isinstance(index.get("shasums"), str) else f"{product}_{version}_SHA256SUMS"
    try:
        sums = fetch(version_dir + sums_name, product)
    except NotFound:
        raise EcsdemoError(f"{sums_name} is missing from {version_dir}", hint=_INCOMPLETE_HINT) from None
    signature, tried = None, []
    for name in _signature_names(index, sums_name, src):
        try:
            signature = fetch(version_dir + name, product)
            break
        except NotFound:
            tried.append(name)
    if signature is None:
        raise EcsdemoError(f"missing signature: none of {', '.join(tried)} is at {version_dir}",
                           hint="ecsdemo installs only signed releases; nothing was installed")
    verify_signature(sums, signature, src, sums_name)
    expected = sums_entry(sums, build["filename"], sums_name)
    url = _build_url(src, version_dir, build)
    try:
        fetch(url, product, dest=work / "download.zip", on_bytes=on_bytes, name=build["filename"])
    except NotFound:
        raise EcsdemoError(f"{build['filename']} is missing ({url} not found)", hint=_INCOMPLETE_HINT) from None
    got = _sha256(work / "download.zip")
    if got != expected:
        incomplete = "" if zipfile.is_zipfile(work / "download.zip") else \
            f" (an incomplete zip of {(work / 'download.zip').stat().st_size} bytes: a truncated download?)"
        raise EcsdemoError(f"checksum mismatch for {build['filename']}{incomplete}: SHA-256 {got[:16]}..., "
                           f"{sums_name} says {expected[:16]}...",
                           hint="the download is damaged or was tampered with; nothing was installed")
    return url
