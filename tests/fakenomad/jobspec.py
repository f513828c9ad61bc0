"""`POST /v1/jobs/parse`: HCL2 job text -> the api.Job JSON shape, and the register-time validation.

Reads the HCL with python-hcl2. Driver `config` keeps python-hcl2's shape, which is Nomad's: nested blocks
become lists of objects, integers stay integers. Durations become int nanoseconds. With ``canonicalize``
the defaults Nomad's api package fills in (docs/nomad-notes.md, "Job defaults") are applied; without it, fields the HCL
does not set stay ``null``.
"""

from __future__ import annotations

import copy

import hcl2

from tests.fakenomad.wire import NS, parse_go_duration


class JobSpecError(ValueError):
    """The HCL could not be turned into a job (the text is what Nomad answers after its prefix)."""


_HCL_OPTS = dict(strip_string_quotes=True, explicit_blocks=False, with_comments=False)

DEFAULT_UPDATE = {"Stagger": 30 * NS, "MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * NS,
                  "HealthyDeadline": 300 * NS, "ProgressDeadline": 600 * NS, "Canary": 0, "AutoRevert": False,
                  "AutoPromote": False}
DEFAULT_MIGRATE = {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * NS, "HealthyDeadline": 300 * NS}
DEFAULT_RESTART = {"Attempts": 2, "Interval": 1800 * NS, "Delay": 15 * NS, "Mode": "fail"}
DEFAULT_RESCHEDULE = {"Attempts": 0, "Interval": 0, "Delay": 30 * NS, "DelayFunction": "exponential",
                      "MaxDelay": 3600 * NS, "Unlimited": True}

# HCL attribute name -> (Go field, kind) for the blocks the fake understands.
_UPDATE_KEYS = {"stagger": ("Stagger", "dur"), "max_parallel": ("MaxParallel", "int"),
                "health_check": ("HealthCheck", "str"), "min_healthy_time": ("MinHealthyTime", "dur"),
                "healthy_deadline": ("HealthyDeadline", "dur"), "progress_deadline": ("ProgressDeadline", "dur"),
                "canary": ("Canary", "int"), "auto_revert": ("AutoRevert", "bool"),
                "auto_promote": ("AutoPromote", "bool")}
_MIGRATE_KEYS = {k: v for k, v in _UPDATE_KEYS.items()
                 if k in ("max_parallel", "health_check", "min_healthy_time", "healthy_deadline")}
_RESTART_KEYS = {"attempts": ("Attempts", "int"), "interval": ("Interval", "dur"), "delay": ("Delay", "dur"),
                 "mode": ("Mode", "str")}
_RESCHEDULE_KEYS = {"attempts": ("Attempts", "int"), "interval": ("Interval", "dur"), "delay": ("Delay", "dur"),
                    "delay_function": ("DelayFunction", "str"), "max_delay": ("MaxDelay", "dur"),
                    "unlimited": ("Unlimited", "bool")}


def _convert(where: str, value, kind: str):
    if kind == "dur":
        if isinstance(value, int):
            return value
        try:
            return parse_go_duration(str(value))
        except ValueError as exc:
            raise JobSpecError(f"{where}: {exc}") from None
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise JobSpecError(f"{where}: expected a number, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise JobSpecError(f"{where}: expected a bool, got {value!r}")
        return value
    return str(value)


def _block(body: dict, name: str, keys: dict, where: str) -> dict | None:
    blocks = body.get(name)
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) != 1 or not isinstance(blocks[0], dict):
        raise JobSpecError(f"{where}: only one {name} block is allowed")
    out = {}
    for key, value in blocks[0].items():
        if key not in keys:
            raise JobSpecError(f'{where}: unsupported argument "{key}" in {name} block')
        field, kind = keys[key]
        out[field] = _convert(f"{where}.{name}.{key}", value, kind)
    return out


def _labelled(body: dict, name: str, where: str) -> list[tuple[str, dict]]:
    out = []
    for item in body.get(name, []) or []:
        if not isinstance(item, dict) or len(item) != 1:
            raise JobSpecError(f'{where}: {name} block must have exactly one label')
        (label, inner), = item.items()
        if not isinstance(inner, dict):
            raise JobSpecError(f'{where}: {name} "{label}" must be a block')
        out.append((label, inner))
    return out


def _meta(body: dict, where: str) -> dict | None:
    """A `meta { k = v }` block or `meta = { k = v }` attribute as Nomad's map[string]string."""
    value = body.get("meta")
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict):
            raise JobSpecError(f"{where}: only one meta block is allowed")
        value = value[0]
    if not isinstance(value, dict):
        raise JobSpecError(f"{where}: meta must be a map")
    return {str(k): v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in value.items()}


def _merge(defaults: dict | None, given: dict | None) -> dict | None:
    if defaults is None:
        return given
    out = dict(defaults)
    out.update(given or {})
    return out


def _task(name: str, body: dict, where: str, canonical: bool) -> dict:
    config_blocks = body.get("config")
    config = None
    if config_blocks is not None:
        if not isinstance(config_blocks, list) or len(config_blocks) != 1:
            raise JobSpecError(f"{where}: only one config block is allowed")
        config = config_blocks[0]
    resources = None
    res = _block(body, "resources", {"cpu": ("CPU", "int"), "memory": ("MemoryMB", "int")}, where)
    if res is not None or canonical:
        resources = {"CPU": 100, "Cores": 0, "MemoryMB": 300, "MemoryMaxMB": 0, "DiskMB": None, "Networks": None,
                     "Devices": None, "IOPS": None} if canonical else {"CPU": None, "MemoryMB": None}
        resources.update(res or {})
    kill_timeout = body.get("kill_timeout")
    return {
        "Name": name, "Driver": body.get("driver", ""), "User": body.get("user", ""), "Config": config,
        "Constraints": None, "Affinities": None, "Env": body.get("env", [None])[0] if body.get("env") else None,
        "Services": None, "Resources": resources,
        "RestartPolicy": None, "Meta": _meta(body, where),
        "KillTimeout": (_convert(f"{where}.kill_timeout", kill_timeout, "dur") if kill_timeout is not None
                        else (5 * NS if canonical else None)),
        "LogConfig": {"MaxFiles": 10, "MaxFileSizeMB": 10} if canonical else None,
        "Artifacts": None, "Vault": None, "Templates": None, "DispatchPayload": None, "VolumeMounts": None,
        "Leader": bool(body.get("leader", False)), "ShutdownDelay": 0, "KillSignal": body.get("kill_signal", ""),
        "Kind": "", "ScalingPolicies": None, "Lifecycle": None, "CSIPluginConfig": None,
    }


def parse_hcl(text: str, canonicalize: bool = True) -> dict:
    """The api.Job for one `job "<id>" { ... }` in `text`. Raises JobSpecError with a readable message."""
    try:
        doc = hcl2.loads(text, serialization_options=hcl2.SerializationOptions(**_HCL_OPTS))
    except Exception as exc:  # python-hcl2 raises lark errors of several kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobSpecError(f"input.hcl: {first}") from None
    jobs = _labelled(doc, "job", "input.hcl")
    if len(jobs) != 1:
        raise JobSpecError(f'input.hcl: expected exactly one job block, found {len(jobs)}')
    job_id, body = jobs[0]
    where = f'job "{job_id}"'
    canon = canonicalize
    job_update = _block(body, "update", _UPDATE_KEYS, where)
    job_type = body.get("type", "service" if canon else None)
    groups = []
    for gname, gbody in _labelled(body, "group", where):
        gwhere = f'{where}.group "{gname}"'
        tasks = [_task(tname, tbody, f'{gwhere}.task "{tname}"', canon)
                 for tname, tbody in _labelled(gbody, "task", gwhere)]
        restart = _block(gbody, "restart", _RESTART_KEYS, gwhere)
        reschedule = _block(gbody, "reschedule", _RESCHEDULE_KEYS, gwhere)
        migrate = _block(gbody, "migrate", _MIGRATE_KEYS, gwhere)
        update = _block(gbody, "update", _UPDATE_KEYS, gwhere)
        service = (job_type or "service") == "service"
        count = gbody.get("count", 1 if canon else None)
        groups.append({
            "Name": gname, "Count": count, "Constraints": None, "Affinities": None, "Tasks": tasks, "Spreads": None,
            "Volumes": None,
            "RestartPolicy": _merge(DEFAULT_RESTART if canon else None, restart),
            "ReschedulePolicy": _merge(DEFAULT_RESCHEDULE if canon and service else None, reschedule),
            "EphemeralDisk": {"Sticky": False, "Migrate": False, "SizeMB": 300} if canon else None,
            "Update": (_merge(_merge(DEFAULT_UPDATE, job_update), update) if canon and service
                       else update),
            "Migrate": _merge(DEFAULT_MIGRATE if canon and service else None, migrate),
            "Networks": None, "Meta": _meta(gbody, gwhere), "Services": None, "ShutdownDelay": None,
            "StopAfterClientDisconnect": None,
            "MaxClientDisconnect": None, "Scaling": None, "Consul": None,
        })
        if canon:
            for t in tasks:
                t["RestartPolicy"] = copy.deepcopy(groups[-1]["RestartPolicy"])
    return {
        "Region": body.get("region", "global" if canon else None),
        "Namespace": body.get("namespace", "default" if canon else None),
        "ID": job_id, "Name": body.get("name", job_id), "Type": job_type,
        "Priority": body.get("priority", 50 if canon else None), "AllAtOnce": False if canon else None,
        "Datacenters": body.get("datacenters"), "NodePool": body.get("node_pool", "default" if canon else None),
        "Constraints": None, "Affinities": None, "TaskGroups": groups,
        "Update": (_merge(DEFAULT_UPDATE, job_update) if canon and (job_type == "service") else job_update),
        "Multiregion": None, "Spreads": None, "Periodic": None, "ParameterizedJob": None, "Reschedule": None,
        "Migrate": None, "Meta": _meta(body, where),
        "ConsulToken": "" if canon else None, "VaultToken": "" if canon else None,
        "Stop": False if canon else None, "ParentID": "" if canon else None, "Dispatched": False,
        "DispatchIdempotencyToken": "" if canon else None, "Payload": None,
        "ConsulNamespace": "" if canon else None, "VaultNamespace": "" if canon else None,
        "NomadTokenID": "" if canon else None,
        "Status": "" if canon else None, "StatusDescription": "" if canon else None,
        "Stable": False if canon else None, "Version": 0 if canon else None,
        "SubmitTime": None, "CreateIndex": 0 if canon else None, "ModifyIndex": 0 if canon else None,
        "JobModifyIndex": 0 if canon else None,
    }


def validate(job: dict) -> list[str]:
    """The register-time validation errors (Nomad answers 500 with them); empty when the job is valid."""
    errors = []
    if not job.get("Datacenters"):
        errors.append("Missing job datacenters")
    if job.get("Type") not in (None, "service", "batch", "system", "sysbatch"):
        errors.append(f'Invalid job type: "{job.get("Type")}"')
    groups = job.get("TaskGroups") or []
    if not groups:
        errors.append("Missing job task groups")
    for g in groups:
        if not g.get("Tasks"):
            errors.append(f'Task group {g.get("Name")} validation failed: Missing tasks for task group')
        for t in g.get("Tasks") or []:
            if not t.get("Driver"):
                errors.append(f'Task group {g.get("Name")} validation failed: Task {t.get("Name")} '
                              f'validation failed: Missing task driver')
        if isinstance(g.get("Count"), int) and g["Count"] < 0:
            errors.append(f'Task group {g.get("Name")} validation failed: Task group count can\'t be negative')
    return errors


def format_errors(errors: list[str]) -> str:
    """go-multierror's text: `1 error occurred:\\n\\t* ...\\n\\n`."""
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "\n" + "".join(f"\t* {e}\n" for e in errors) + "\n"


def canonicalize_submitted(job: dict) -> dict:
    """What the server stores for a submitted api.Job: nulls that the api package would default are filled."""
    out = copy.deepcopy(job)
    out.setdefault("Namespace", "default")
    for key, default in (("Type", "service"), ("Priority", 50), ("Region", "global"), ("Namespace", "default"),
                         ("Name", out.get("ID")), ("NodePool", "default")):
        if out.get(key) is None:
            out[key] = default
    for g in out.get("TaskGroups") or []:
        if g.get("Count") is None:
            g["Count"] = 1
        service = out["Type"] == "service"
        if g.get("Update") is None and service:
            g["Update"] = _merge(DEFAULT_UPDATE, out.get("Update"))
        if g.get("Migrate") is None and service:
            g["Migrate"] = dict(DEFAULT_MIGRATE)
        if g.get("RestartPolicy") is None:
            g["RestartPolicy"] = dict(DEFAULT_RESTART)
        if g.get("ReschedulePolicy") is None and service:
            g["ReschedulePolicy"] = dict(DEFAULT_RESCHEDULE)
        for t in g.get("Tasks") or []:
            if t.get("KillTimeout") is None:
                t["KillTimeout"] = 5 * NS
    return out
