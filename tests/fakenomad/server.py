"""The fake Nomad's HTTP transport: routing, Nomad's wire conventions, blocking queries, logs streaming.

`NomadHandler` serves the server agent's API (docs/nomad-notes.md). `AgentHandler` serves a client agent's own
HTTP port (`/v1/agent/self` with `stats.client.node_id`, `/v1/agent/health?type=client`). Every request
is recorded on the owning `FakeNomad` (method, path, query, JSON body, status).
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.fakenomad import ops, views
from tests.fakenomad.jobspec import JobSpecError, parse_hcl
from tests.fakenomad.ops import ApiError
from tests.fakenomad.wire import NS, dumps, parse_bool, parse_go_duration

MAX_WAIT = 300.0
FRAME_MAX = 64 * 1024
UUID = r"[0-9a-fA-F-]+"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    body: object
    status: int = 0
    headers: dict = field(default_factory=dict)


class _Reply(Exception):
    """Short-circuits a handler with a complete answer."""

    def __init__(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                 index: int | None = None):
        self.status, self.body, self.content_type, self.index = status, body, content_type, index


def _err(status: int, text: str) -> _Reply:
    return _Reply(status, text.encode())


_KEYS = {k.lower(): k for k in ("Job", "JobHCL", "Canonicalize", "EnforceIndex", "JobModifyIndex", "PolicyOverride",
                                 "PreserveCounts", "DrainSpec", "MarkEligible", "Meta", "Deadline",
                                 "IgnoreSystemJobs", "Eligibility", "NodeID", "Variables", "hclv1")}


def _canonical_keys(obj):
    """Go's encoding/json matches keys case-insensitively; map the ones we read onto one spelling."""
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        key = _KEYS.get(k.lower(), k)
        out[key] = _canonical_keys(v) if key == "DrainSpec" else v
    return out


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None  # set on the subclass

    def log_message(self, *args):  # quiet
        pass

    # --- plumbing ---------------------------------------------------------------------------------
    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self._raw_body = raw
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def _send(self, status: int, body: bytes, content_type: str, index: int | None = None,
              read: bool = False) -> None:
        self._rec.status = status  # recorded before the client can see the answer (and look at the record)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if index is not None:
            self.send_header("X-Nomad-Index", str(max(index, 1)))
        if read and index is not None:
            self.send_header("X-Nomad-KnownLeader", "true" if self.fake.cluster.leader else "false")
            self.send_header("X-Nomad-LastContact", "0")
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.pretty = "pretty" in self.query
        body = self._read_body()
        self._rec = Recorded(method, parts.path, dict(self.query), body, headers=dict(self.headers))
        self.fake._record(self._rec)
        try:
            injected = self.fake._injected(method, parts.path)
            if injected is not None:
                raise _err(*injected)
            self.route(method, parts.path, body)
        except _Reply as r:
            self._send(r.status, r.body, r.content_type, r.index)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def json_reply(self, obj, index: int | None, read: bool = True) -> None:
        self._send(200, dumps(obj, self.pretty), "application/json", index, read)

    def qbool(self, name: str, default: bool = False) -> bool:
        if name not in self.query:
            return default
        try:
            return parse_bool(self.query[name])
        except ValueError as exc:
            raise _err(400, f"Failed to parse value of {name!r} ({self.query[name]}) as a boolean: {exc}")


class AgentHandler(_Base):
    """A client agent's own HTTP port: enough for ecsdemo to map the port to its node and wait for health."""

    node_id = ""

    def route(self, method, path, body):
        cl = self.fake.cluster
        if path == "/v1/agent/self":
            with cl.cond:
                node = cl.nodes[self.node_id]
                return self.json_reply(views.agent_self_client(cl, node, self.server.server_address[1]), None, False)
        if path == "/v1/agent/health":
            with cl.cond:
                ok = cl.leader and cl.nodes[self.node_id]["Status"] == "ready"
            health = {"client": {"ok": bool(ok), "message": "ok" if ok else "no known servers"}}
            raise _Reply(200 if ok else 500, dumps(health), "application/json")
        raise _Reply(404, b"")


class NomadHandler(_Base):
    """The server agent's HTTP API."""

    def route(self, method, path, body):
        cl = self.fake.cluster
        if path == "/v1/agent/self":
            self._only(method, "GET")
            with cl.cond:
                return self.json_reply(views.agent_self_server(cl, self.server.server_address[1]), None, False)
        if path == "/v1/agent/health":
            self._only(method, "GET")
            kinds = parse_qs(urlsplit(self.path).query).get("type") or ["server"]
            out, ok = {}, True
            for kind in kinds:
                if kind == "server":
                    out["server"] = {"ok": cl.leader, "message": "ok" if cl.leader else "no leader"}
                    ok = ok and cl.leader
                elif kind == "client":
                    raise _err(400, "client not enabled")
                else:
                    raise _err(400, f'unknown health type "{kind}"')
            raise _Reply(200 if ok else 500, dumps(out), "application/json")
        if not path.startswith("/v1/"):
            raise _Reply(404, b"")
        if not cl.leader:
            time.sleep(cl.timings.no_leader_hold)
            raise _err(500, "No cluster leader")
        for pattern, fn in self._routes():
            m = re.fullmatch(pattern, path)
            if m:
                return fn(method, body, *m.groups())
        raise _Reply(404, b"")

    def _routes(self):
        return [
            (r"/v1/status/leader", self.leader),
            (r"/v1/nodes", self.nodes),
            (r"/v1/node/([^/]+)", self.node),
            (r"/v1/node/([^/]+)/drain", self.drain),
            (r"/v1/node/([^/]+)/eligibility", self.eligibility),
            (r"/v1/node/([^/]+)/allocations", self.node_allocations),
            (r"/v1/jobs/parse", self.parse),
            (r"/v1/jobs", self.jobs),
            (r"/v1/job/([^/]+)", self.job),
            (r"/v1/job/([^/]+)/(allocations|evaluations|deployment|deployments)", self.job_sub),
            (r"/v1/allocation/([^/]+)", self.allocation),
            (r"/v1/evaluation/([^/]+)", self.evaluation),
            (r"/v1/evaluation/([^/]+)/allocations", self.eval_allocations),
            (r"/v1/deployment/([^/]+)", self.deployment),
            (r"/v1/client/fs/logs/([^/]+)", self.logs),
        ]

    # --- helpers ----------------------------------------------------------------------------------
    def _only(self, method, *allowed):
        if method not in allowed:
            raise _err(405, "Invalid method")

    def _need_body(self, body) -> dict:
        if body is None:
            raise _err(400, "Request body is empty")
        if not isinstance(body, dict):
            try:
                json.loads(self._raw_body)
            except ValueError as exc:
                raise _err(400, str(exc))
            raise _err(400, "json: cannot unmarshal request body into a Go struct")
        return _canonical_keys(body)

    def blocking(self, index_fn, body_fn) -> None:
        """Answer a read, honouring ?index=&wait= (docs/nomad-notes.md, "Blocking queries"). Both run under the lock."""
        cl = self.fake.cluster
        min_index, wait = 0, MAX_WAIT
        if "index" in self.query:
            try:
                min_index = int(self.query["index"])
                if min_index < 0:
                    raise ValueError
            except ValueError:
                raise _err(400, "Invalid index")
        if "wait" in self.query:
            try:
                wait = min(parse_go_duration(self.query["wait"]) / NS, MAX_WAIT)
            except ValueError:
                raise _err(400, "Invalid wait time")
        with cl.cond:
            if min_index > 0:
                deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
                while index_fn() <= min_index and not cl.closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    cl.cond.wait(left)
            index = index_fn()
            obj = body_fn()
        self.json_reply(obj, index)

    # --- endpoints --------------------------------------------------------------------------------
    def leader(self, method, body):
        self._only(method, "GET")
        self.json_reply("127.0.0.1:4647", self.fake.cluster.index)

    def nodes(self, method, body):
        self._only(method, "GET")
        cl = self.fake.cluster
        prefix = self.query.get("prefix", "")
        resources = self.qbool("resources")
        self.blocking(lambda: cl.tables["nodes"],
                      lambda: [views.node_stub(cl, n, resources) for n in
                               sorted(cl.nodes.values(), key=lambda n: n["ID"]) if n["ID"].startswith(prefix)])

    def _read_object(self, method, kind: str, table: str, objects: dict, obj_id: str, view) -> None:
        """GET of one object: 404 "<kind> not found" with the table index, else a blocking read on its ModifyIndex."""
        self._only(method, "GET")
        cl = self.fake.cluster
        with cl.cond:
            if obj_id not in objects:
                raise _Reply(404, f"{kind} not found".encode(), index=cl.tables[table])
        self.blocking(lambda: objects[obj_id]["ModifyIndex"], lambda: view(cl, objects[obj_id]))

    def node(self, method, body, node_id):
        self._read_object(method, "node", "nodes", self.fake.cluster.nodes, node_id, views.node_full)

    def drain(self, method, body, node_id):
        self._only(method, "POST", "PUT")
        self._write(lambda cl, b: ops.drain(cl, node_id, b), body)

    def eligibility(self, method, body, node_id):
        self._only(method, "POST", "PUT")
        self._write(lambda cl, b: ops.set_eligibility(cl, node_id, b), body)

    def _write(self, fn, body, need_body: bool = True):
        cl = self.fake.cluster
        b = self._need_body(body) if need_body else body
        with cl.cond:
            try:
                out = fn(cl, b)
            except ApiError as exc:
                raise _err(exc.status, exc.text)
            index = cl.index
        self.json_reply(out, index, read=False)

    def node_allocations(self, method, body, node_id):
        self._only(method, "GET")
        cl = self.fake.cluster
        self.blocking(lambda: cl.tables["allocs"],
                      lambda: [views.alloc_full(cl, a) for a in cl.node_allocs(node_id)])

    def parse(self, method, body):
        self._only(method, "POST", "PUT")
        b = self._need_body(body)
        if not b.get("JobHCL"):
            raise _err(400, "Job spec is empty")
        if "hclv1" in b and self.fake.cluster.vt >= (1, 9, 0):
            pass  # removed in 1.9: the key is ignored like any unknown key
        try:
            job = parse_hcl(b["JobHCL"], canonicalize=bool(b.get("Canonicalize")))
        except JobSpecError as exc:
            prefix = "Failed to parse job: " if self.fake.cluster.vt >= (1, 6, 0) else ""
            raise _err(400, prefix + str(exc))
        if self.fake.cluster.vt < (1, 6, 0):
            job.pop("NodePool", None)
        self.json_reply(job, None, read=False)

    def jobs(self, method, body):
        cl = self.fake.cluster
        if method == "GET":
            prefix = self.query.get("prefix", "")
            return self.blocking(lambda: cl.tables["jobs"], lambda: [
                {"ID": j["ID"], "Name": j["Name"], "Namespace": j["Namespace"], "Type": j["Type"],
                 "Priority": j["Priority"], "Status": j["Status"], "StatusDescription": j["StatusDescription"],
                 "Stop": j["Stop"], "Version": j["Version"], "SubmitTime": j["SubmitTime"],
                 "CreateIndex": j["CreateIndex"], "ModifyIndex": j["ModifyIndex"],
                 "JobModifyIndex": j["JobModifyIndex"], "Datacenters": j["Datacenters"], "JobSummary": None,
                 "ParentID": "", "Periodic": False, "ParameterizedJob": False}
                for j in sorted(cl.jobs.values(), key=lambda j: j["ID"]) if j["ID"].startswith(prefix)])
        self._only(method, "POST", "PUT")
        self._write(lambda cl, b: ops.register_job(cl, b), body)

    def job(self, method, body, job_id):
        cl = self.fake.cluster
        if method in ("POST", "PUT"):
            return self._write(lambda cl, b: ops.register_job(cl, b, job_id), body)
        if method == "DELETE":
            try:
                purge, _ = self.qbool("purge"), self.qbool("global")
            except _Reply as bad:  # Nomad answers 500 here, not 400
                raise _err(500, bad.body.decode())
            return self._write(lambda cl, b: ops.deregister_job(cl, job_id, purge), None, need_body=False)
        self._only(method, "GET")
        with cl.cond:
            if job_id not in cl.jobs:
                raise _Reply(404, b"job not found", index=cl.tables["jobs"])
        self.blocking(lambda: cl.jobs[job_id]["ModifyIndex"] if job_id in cl.jobs else cl.tables["jobs"],
                      lambda: views.job_view(cl, cl.jobs[job_id]) if job_id in cl.jobs else None)

    def job_sub(self, method, body, job_id, what):
        self._only(method, "GET")
        cl = self.fake.cluster
        if what == "allocations":
            all_ = self.qbool("all")
            def allocs():
                out = cl.job_allocs(job_id)
                job = cl.jobs.get(job_id)
                if not all_ and job is not None:  # without all=true only the current job's allocations
                    out = [a for a in out if a["Job"]["CreateIndex"] == job["CreateIndex"]]
                return [views.alloc_stub(cl, a) for a in out]
            return self.blocking(lambda: cl.tables["allocs"], allocs)
        if what == "evaluations":
            return self.blocking(lambda: cl.tables["evals"], lambda: [
                views.eval_full(cl, e) for e in sorted(cl.evals.values(), key=lambda e: e["CreateIndex"])
                if e["JobID"] == job_id])
        if what == "deployment":
            def latest():
                d = cl.latest_deployment(job_id)
                return views.deployment_view(cl, d) if d else None
            return self.blocking(lambda: cl.tables["deployment"], latest)
        return self.blocking(lambda: cl.tables["deployment"], lambda: [
            views.deployment_view(cl, d) for d in sorted(cl.deployments.values(), key=lambda d: -d["CreateIndex"])
            if d["JobID"] == job_id])

    def allocation(self, method, body, alloc_id):
        self._read_object(method, "alloc", "allocs", self.fake.cluster.allocs, alloc_id, views.alloc_full)

    def evaluation(self, method, body, eval_id):
        self._read_object(method, "eval", "evals", self.fake.cluster.evals, eval_id, views.eval_full)

    def eval_allocations(self, method, body, eval_id):
        self._only(method, "GET")
        cl = self.fake.cluster
        self.blocking(lambda: cl.tables["allocs"], lambda: [
            views.alloc_stub(cl, a) for a in sorted(cl.allocs.values(), key=lambda a: a["CreateIndex"])
            if a["EvalID"] == eval_id])

    def deployment(self, method, body, dep_id):
        self._only(method, "GET")
        cl = self.fake.cluster
        with cl.cond:
            if dep_id not in cl.deployments:
                raise _Reply(404, b"deployment not found", index=cl.tables["deployment"])
        self.blocking(lambda: cl.deployments[dep_id]["ModifyIndex"],
                      lambda: views.deployment_view(cl, cl.deployments[dep_id]))

    # --- logs -------------------------------------------------------------------------------------
    def logs(self, method, body, alloc_id):
        self._only(method, "GET")
        cl = self.fake.cluster
        q = self.query
        task = q.get("task", "")
        if not task:
            raise _err(400, "must provide task name")
        kind = q.get("type", "")
        if kind not in ("stdout", "stderr"):
            raise _err(400, "must provide log type (stdout/stderr)")
        follow, plain = self.qbool("follow"), self.qbool("plain")
        origin = q.get("origin", "start")
        if origin not in ("start", "end"):
            raise _err(400, "origin must be start or end")
        try:
            offset = int(q.get("offset", "0") or 0)
        except ValueError as exc:
            raise _err(400, f"Failed to parse offset: {exc}")
        with cl.cond:
            a = cl.allocs.get(alloc_id)
            if a is None:
                raise _err(404, f'Unknown allocation "{alloc_id}"')
            group = next(g for g in a["Job"]["TaskGroups"] if g["Name"] == a["TaskGroup"])
            if task not in [t["Name"] for t in group["Tasks"]]:
                raise _err(400, f'unknown task name "{task}"')
            node = cl.nodes.get(a["NodeID"])
            if node is None or node["Status"] == "down":
                raise _err(404, "No path to node")
            ts = (a.get("TaskStates") or {}).get(task)
            if ts is None or (ts["State"] == "pending" and not ts["StartedAt"]):
                raise _err(404, f'task "{task}" not started yet. No logs available')
            data = bytes(cl.logs.get((alloc_id, task, kind), b""))
        pos = max(0, len(data) - offset) if origin == "end" else min(offset, len(data))
        self._rec.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if plain else "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        file_name = f"alloc/logs/{task}.{kind}.0"

        def emit(chunk: bytes, at: int) -> None:
            if plain:
                out = chunk
            else:
                out = b"".join(dumps({"Offset": at + i, "Data": base64.b64encode(chunk[i:i + FRAME_MAX]).decode(),
                                      "File": file_name}) for i in range(0, len(chunk), FRAME_MAX))
            if out:
                self._chunk(out)

        try:
            emit(data[pos:], pos)
            pos = len(data)
            while follow and not cl.closed:
                with cl.cond:
                    cl.cond.wait(cl.timings.log_heartbeat)
                    data = bytes(cl.logs.get((alloc_id, task, kind), b""))
                    a = cl.allocs.get(alloc_id)
                    finished = a is None or a["ClientStatus"] in ("complete", "failed", "lost")
                if len(data) > pos:
                    emit(data[pos:], pos)
                    pos = len(data)
                elif finished:
                    break
                elif not plain:
                    self._chunk(b"{}")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Threaded(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class HttpServer:
    """One threaded HTTP listener on 127.0.0.1 (port 0 = a free port) serving `handler` for `fake`."""

    def __init__(self, fake, handler: type, port: int = 0, **attrs):
        cls = type(handler.__name__ + "Bound", (handler,), dict(fake=fake, **attrs))
        self.httpd = _Threaded(("127.0.0.1", port), cls)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fakenomad-http-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
