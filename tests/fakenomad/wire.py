"""Nomad's JSON conventions (docs/nomad-notes.md, "JSON conventions"), in one place.

Nomad encodes with go-msgpack's JsonHandle: Go field names, zero ``time.Time`` as ``null``, non-zero times
as RFC3339Nano with trailing fraction zeros trimmed, ``[]byte`` as padded base64, ``time.Duration`` as int
nanoseconds, and ``omitempty`` on the top level of ``Allocation`` and ``Evaluation`` only.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import time

NS = 1_000_000_000

_GO_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NS, "m": 60 * NS, "h": 3600 * NS}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds ("1m30s" -> 90e9). Raises ValueError like Go does."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"time: invalid duration {text!r}")
    s, sign = text, 1
    if s[0] in "+-":
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    if s == "0":
        return 0
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * int(round(total))


def go_duration_string(ns: int) -> str:
    """A duration as Go's Duration.String() prints the common cases ("1m0s", "5s", "1h0m0s")."""
    if ns == 0:
        return "0s"
    sec, frac = divmod(abs(ns), NS)
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    s_txt = f"{s}" if not frac else f"{s}.{frac:09d}".rstrip("0")
    out = (f"{h}h{m}m{s_txt}s" if h else f"{m}m{s_txt}s" if m else f"{s_txt}s")
    return ("-" if ns < 0 else "") + out


def parse_bool(text: str) -> bool:
    """Go strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def rfc3339nano(t: float | None = None, local: bool = False) -> str:
    """A time as Go prints it with RFC3339Nano: UTC "Z" (or the local offset), fraction zeros trimmed."""
    ns = time.time_ns() if t is None else int(t * NS)
    sec, frac = divmod(ns, NS)
    dt = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc)
    if local:
        dt = dt.astimezone()
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac_txt = f".{frac:09d}".rstrip("0").rstrip(".")
    if dt.utcoffset() == _dt.timedelta(0) and not local:
        return f"{base}{frac_txt}Z"
    off = dt.strftime("%z")
    return f"{base}{frac_txt}{off[:3]}:{off[3:]}"


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_rfc3339nano(text: str) -> int:
    """The Unix time in ns of a time as `rfc3339nano` (Go's RFC3339Nano) prints it."""
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"not an RFC3339 time: {text!r}")
    base = _dt.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return int(base.timestamp()) * NS + int((m.group(2) or "0").ljust(9, "0"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_zero(value) -> bool:
    if (value is None or value is False
            or value == 0 and not isinstance(value, bool) and isinstance(value, (int, float))):
        return True
    if isinstance(value, (str, list)):
        return len(value) == 0
    if isinstance(value, dict):
        return all(_is_zero(v) for v in value.values())
    return False


def omitempty(obj: dict) -> dict:
    """Drop zero-valued top-level fields (what `_struct bool codec:",omitempty"` does on Allocation/Evaluation)."""
    return {k: v for k, v in obj.items() if not _is_zero(v)}


def dumps(obj, pretty: bool = False) -> bytes:
    """JSON with sorted keys, as the Go encoder writes struct keys."""
    return json.dumps(obj, sort_keys=True, indent=4 if pretty else None,
                      separators=None if pretty else (",", ":")).encode()
