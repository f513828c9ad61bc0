"""The demo's view in Rich, shared by `ecsdemo status` and `ecsdemo watch`.

Everything here turns the plain data of `ecsdemo.status` (and the events of `ecsdemo.watch`) into Rich
renderables; it reads nothing and prints nothing. It is readable at 80 columns: IDs are shortened to 8
characters as Nomad's CLI shows them and an ECS task is named by its task id (the end of its ARN);
`wide=True` shows full IDs, ARNs and the agents' log files. Text from Nomad and ECS is shown verbatim
(never read as Rich markup).
"""

from __future__ import annotations

import time
from typing import Iterable

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ecsdemo.nomad import short
from ecsdemo.watch import Event, Frame, task_id

EVENT_STYLES = {"placed": "cyan", "alloc": "", "detached": "yellow", "recovered": "green", "ecs": "magenta",
                "node": "blue", "driver": "red", "nomad": "red", "aws": "red"}
STATUS_STYLES = {"running": "green", "ready": "green", "RUNNING": "green", "eligible": "green",
                 "pending": "yellow", "PROVISIONING": "yellow", "PENDING": "yellow", "ACTIVATING": "yellow",
                 "initializing": "yellow", "ineligible": "yellow", "DEACTIVATING": "yellow", "STOPPING": "yellow",
                 "DEPROVISIONING": "yellow", "lost": "red", "failed": "red", "down": "red",
                 "disconnected": "red", "STOPPED": "dim", "complete": "dim"}


def _t(value, style: str | None = None) -> Text:
    """Verbatim text (no markup), styled by its own value when it is a known status."""
    value = "-" if value is None or value == "" else str(value)
    return Text(value, style=style if style is not None else STATUS_STYLES.get(value, ""))


def _table(title: str) -> Table:
    return Table(box=None, pad_edge=False, collapse_padding=True, header_style="bold", title=title,
                 title_justify="left", title_style="bold", show_edge=False)


def _arn(arn: str | None, wide: bool) -> str:
    return (arn or "-") if wide else task_id(arn)


def _id(ident: str | None, wide: bool) -> str:
    return (ident or "-") if wide else short(ident, "-")


def header(data: dict, at: float | None = None) -> Text:
    line = Text()
    line.append("ecsdemo", style="bold")
    address = data["nomad_address"].split("://", 1)[-1]
    line.append(f"  {data['mode']} {data['region']}  Nomad {address}")
    endpoint = data.get("endpoint")
    if data["mode"] == "local":
        line.append("  endpoint ")
        line.append(("up" if endpoint["healthy"] else "NOT answering") if endpoint else "not started",
                    style="green" if endpoint and endpoint["healthy"] else "red")
    if at is not None:
        line.append(f"  {time.strftime('%H:%M:%S', time.localtime(at))}", style="dim")
    return line


def agents_view(agents: list[dict], wide: bool = False) -> RenderableType:
    if not agents:
        return Text("no Nomad agents recorded", style="dim")
    if not wide:
        line = Text("agents: ", style="bold")
        for i, a in enumerate(agents):
            if i:
                line.append(", ")
            line.append(a["name"])
            line.append(" ")
            line.append(a["status"], style="green" if a["status"] == "running" else "red")
        return line
    table = _table("Agents")
    for col in ("name", "pid", "status", "http", "log"):
        table.add_column(col, overflow="fold")
    for a in agents:
        table.add_row(_t(a["name"], ""), _t(a["pid"], ""),
                      _t(a["status"], "green" if a["status"] == "running" else "red"),
                      _t(a["http"], ""), _t(a["log"], ""))
    return table


def nodes_table(nodes: list[dict], wide: bool = False) -> RenderableType:
    if not nodes:
        return Text("no Nomad client nodes", style="dim")
    table = _table("Nodes")
    table.add_column("node", no_wrap=True)
    table.add_column("id", no_wrap=True)
    table.add_column("status")
    table.add_column("eligibility")
    table.add_column("drain")
    table.add_column("ecs driver", overflow="fold", ratio=1)
    for n in nodes:
        driver = n["ecs_driver"]
        table.add_row(_t(n["name"], ""), _t(_id(n["id"], wide), ""), _t(n["status"]), _t(n["eligibility"]),
                      _t("yes" if n["drain"] else "no", "yellow" if n["drain"] else ""),
                      _t(driver, "green" if driver == "healthy" else "red"))
    return table


def allocations_table(allocs: list[dict] | None, wide: bool = False) -> RenderableType:
    if not allocs:
        return Text("no allocations of the demo job (run `ecsdemo run`)", style="dim")
    table = _table("Allocations of the demo job")
    table.add_column("alloc", no_wrap=True)
    table.add_column("node", overflow="ellipsis")           # gives way first when the terminal is narrow
    table.add_column("desired")
    table.add_column("status")
    table.add_column("v", justify="right")     # the job version
    table.add_column("ECS task", no_wrap=not wide, overflow="fold")
    for a in allocs:
        row_style = "bold" if a["live"] else "dim"
        table.add_row(_t(_id(a["id"], wide), ""), _t(a["node"] or short(a["node_id"], "-"), ""),
                      _t(a["desired_status"], ""), _t(a["client_status"]), _t(a["job_version"], ""),
                      _t(_arn(a["task_arn"], wide) if a["task_arn"] else None, ""), style=row_style)
    return table


def ecs_table(tasks: list[dict], wide: bool = False) -> RenderableType:
    if not tasks:
        return Text("no ECS tasks running in the cluster", style="dim")
    table = _table("ECS tasks in the cluster")
    table.add_column("ECS task", no_wrap=not wide, overflow="fold")
    table.add_column("status", no_wrap=True)
    # the one column that gives way when the terminal is narrow (a single word, so it is cut, not wrapped)
    table.add_column("task definition", overflow="fold" if wide else "ellipsis")
    table.add_column("owner", no_wrap=True)
    table.add_column("", no_wrap=True)
    for t in tasks:
        flag = _t("ORPHAN", "bold red") if t["orphan"] else Text("" if t["orphan"] is False else "?")
        owner = t["live_owner"] or t["owner"]
        table.add_row(_t(_arn(t["arn"], wide), ""), _t(t["last_status"]), _t(t["task_definition"], ""),
                      _t(_id(owner, wide) if owner else None, "" if t["live_owner"] else "dim"), flag)
    return table


def events_table(events: Iterable[Event], limit: int | None = None) -> RenderableType:
    events = list(events)
    if limit is not None:
        events = events[-limit:] if limit > 0 else []
    if not events:
        return Group(Text("Events", style="bold"),
                     Text("none yet: they appear here as Nomad and ECS change", style="dim"))
    table = _table("Events")
    table.add_column("time", no_wrap=True, style="dim")
    table.add_column("what", overflow="fold", ratio=1)
    for e in events:
        table.add_row(time.strftime("%H:%M:%S", time.localtime(e.at)), _t(e.text, EVENT_STYLES.get(e.kind, "")))
    return table


def _nomad_and_ecs(data: dict, wide: bool) -> list[RenderableType]:
    parts: list[RenderableType] = []
    if data["nomad_error"]:
        parts.append(_error("Nomad", data["nomad_error"]))
    else:
        parts += [nodes_table(data["nodes"], wide), Text(""), allocations_table(data["allocations"], wide)]
    parts.append(Text(""))
    if data["ecs_error"]:
        parts.append(_error("ECS", data["ecs_error"]))
    else:
        parts.append(ecs_table(data["ecs_tasks"], wide))
        if data["orphans"]:
            parts.append(Text(f"{len(data['orphans'])} orphan ECS task(s): no live allocation owns them; "
                              "`ecsdemo teardown` stops them", style="red"))
    return parts


def _error(what: str, message: str) -> Text:
    line = Text(f"{what}: ", style="bold red")
    line.append(message, style="")
    return line


def status_view(data: dict, wide: bool = False) -> RenderableType:
    """`ecsdemo status`: header, agents, nodes, allocations, ECS tasks."""
    return Group(header(data), agents_view(data["agents"], wide), Text(""), *_nomad_and_ecs(data, wide))


def watch_view(frame: Frame, wide: bool = False, events: int | None = 8) -> RenderableType:
    """One frame of `ecsdemo watch`: the status layout (agents as one line) and the last `events` events."""
    return Group(header(frame.data, frame.at), agents_view(frame.data["agents"], False), Text(""),
                 *_nomad_and_ecs(frame.data, wide), Text(""), events_table(frame.events, events))


def fit_watch_view(console: Console, frame: Frame, wide: bool = False) -> RenderableType:
    """The frame with as many of the latest events as fit the terminal's height (at least 3)."""
    body = watch_view(frame, wide, events=0)      # its event strip is 2 lines, as a table's title + header
    used = len(console.render_lines(body, console.options, pad=False))
    return watch_view(frame, wide, events=max(3, console.height - used - 1))
