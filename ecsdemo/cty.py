"""Adapter: the cty msgpack encoding Nomad uses for a plugin's config and a task's driver config.

Nomad decodes an HCL body with the plugin's hclspec (`ConfigSchema`, `TaskConfigSchema`) and sends the
result as msgpack (`SetConfig.msgpack_config`, `TaskConfig.msgpack_driver_config`). `cty_msgpack` does
the same for a body given as a dict: every schema key present and sorted, nulls for missing ones,
defaults applied, numbers as the smallest integers, safe conversions only; a body that does not fit is
a `CtyError`, as Nomad reports it before the plugin sees anything (see docs/nomad-notes.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack


class CtyError(ValueError):
    """The config body does not fit the schema (Nomad reports these before the plugin sees anything)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


_MISSING = object()


def _parse_type(text: str):
    """`list(map(string))` -> ("list", ("map", "string")); primitives stay strings."""
    text = text.strip()
    m = re.fullmatch(r"(list|set|map)\((.*)\)", text)
    if m:
        return (m.group(1), _parse_type(m.group(2)))
    if text in ("string", "number", "bool", "any"):
        return text
    raise CtyError("", f"unsupported type expression {text!r} in the schema")


def _number(value: Any, path: str):
    if isinstance(value, bool):
        raise CtyError(path, f"a number is required, got bool {value!r}")
    if isinstance(value, str):
        try:
            value = float(value) if re.search(r"[.eE]", value) else int(value)
        except ValueError:
            raise CtyError(path, f"a number is required, got string {value!r}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, (int, float)):
        return value
    raise CtyError(path, f"a number is required, got {type(value).__name__}")


def _convert(value: Any, typ, path: str) -> Any:
    """cty's conversion of a config value to the attribute's type (safe conversions only, as Nomad's)."""
    if value is None or typ == "any":
        return value
    if typ == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return json.dumps(_number(value, path))
        raise CtyError(path, f"a string is required, got {type(value).__name__}")
    if typ == "number":
        return _number(value, path)
    if typ == "bool":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise CtyError(path, f"a bool is required, got {type(value).__name__} {value!r}")
    kind, elem = typ
    if kind in ("list", "set"):
        if not isinstance(value, (list, tuple)):
            raise CtyError(path, f"a {kind} is required, got {type(value).__name__}")
        return [_convert(v, elem, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        raise CtyError(path, f"a map is required, got {type(value).__name__}")
    return {k: _convert(value[k], elem, f"{path}.{k}") for k in sorted(value)}


def _body_name(key: str, spec) -> str | None:
    """The config attribute/block name a child spec reads (its own `name`, else the implied object key)."""
    kind = spec.WhichOneof("block")
    if kind == "default":
        return _body_name(key, spec.default.primary)
    if kind in ("Attr", "block_value", "block_attrs", "block_list", "block_set", "block_map"):
        return getattr(spec, kind).name or key
    return None


def _block_body(value: Any, path: str) -> dict:
    if isinstance(value, list) and len(value) == 1:  # HCL-JSON allows a block as a one-element list
        value = value[0]
    if not isinstance(value, dict):
        raise CtyError(path, f"a block is required, got {type(value).__name__}")
    return value


def _eval(spec, body: dict, key: str, path: str) -> Any:
    kind = spec.WhichOneof("block")
    if kind == "object":
        return _eval_object(spec.object, body, path)
    if kind == "literal":
        try:
            return json.loads(spec.literal.value)
        except json.JSONDecodeError:
            raise CtyError(path, f"unsupported literal {spec.literal.value!r} in the schema") from None
    if kind == "default":
        primary = _eval(spec.default.primary, body, key, path)
        return primary if primary is not None else _eval(spec.default.default, body, key, path)
    if kind == "array":
        return [_eval(s, body, key, f"{path}[{i}]") for i, s in enumerate(spec.array.values)]
    inner = getattr(spec, kind)
    name = inner.name or key
    where = f"{path}.{name}" if path else name
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if getattr(inner, "required", False) or getattr(inner, "min_items", 0) > 0:
            raise CtyError(where, "missing required argument or block")
        return [] if kind in ("block_list", "block_set") else {} if kind == "block_map" else None
    if kind == "Attr":
        return _convert(value, _parse_type(inner.type), where)
    if kind == "block_value":
        return _eval(inner.nested, _block_body(value, where), "", where)
    if kind == "block_attrs":
        return _convert(_block_body(value, where), ("map", _parse_type(inner.type)), where)
    if kind in ("block_list", "block_set"):
        items = value if isinstance(value, list) else [value]
        if inner.max_items and len(items) > inner.max_items:
            raise CtyError(where, f"at most {inner.max_items} block(s) allowed, got {len(items)}")
        return [_eval(inner.nested, _block_body(v, where), "", f"{where}[{i}]") for i, v in enumerate(items)]
    raise CtyError(where, f"spec kind {kind!r} is not supported by this host")


def _eval_object(obj, body: dict, path: str) -> dict:
    if not isinstance(body, dict):
        raise CtyError(path, f"a block is required, got {type(body).__name__}")
    names = {_body_name(k, s) for k, s in obj.attributes.items()}
    for given in body:
        if given not in names:
            raise CtyError(f"{path}.{given}" if path else given,
                           "unsupported argument or block: not in the plugin's schema")
    return {k: _eval(obj.attributes[k], body, k, path) for k in sorted(obj.attributes)}


def cty_value(spec, body: dict | None) -> Any:
    """The cty value Nomad's hcldec produces for an HCL body (as a dict) under an hclspec `Spec`."""
    return _eval(spec, body or {}, "", "")


def cty_msgpack(spec, body: dict | None) -> bytes:
    """Encode `body` against `spec` exactly as Nomad does before SetConfig and StartTask."""
    return msgpack.packb(cty_value(spec, body), use_bin_type=True)
