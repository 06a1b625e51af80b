#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The public API against its document: proto/openapi.yaml and a running driftlock-ingest.

1. The routes ingest serves (it logs each one at start, "public API route") and the operations
   the document lists for the public listener are the same set of (method, path).
2. Every documented operation is called on a real ingest (real Kafka, PostgreSQL, Redis, seeded
   with one org, key, anomaly and stream): the status must be one the document lists for that
   operation, and a JSON body must validate against the documented schema of that status
   (jsonschema, draft 2020-12, the document's own components). Errors too: 401, 404, 400.
3. The admin endpoints (healthz, readyz, metrics) on the admin port, the same way.

Run by meson (suite integration) with the variables infra/test.sh exports. Python is used here
for the third-party validator (jsonschema) and YAML reader, not for anything the services do.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import jsonschema
import yaml

SRC = os.environ["DRIFTLOCK_SOURCE_ROOT"]
BUILD = os.environ["DRIFTLOCK_BUILD_ROOT"]
failures = []


def need(name):
    v = os.environ.get(name)
    if not v:
        print(f"{name} is not set: run the integration suites through infra/test.sh")
        sys.exit(1)
    return v


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def admin(*args):
    out = subprocess.run([f"{BUILD}/services/ingest/driftlock-admin", "--json", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def psql(sql, *params):
    # Parameters go in as psql variables, quoted by psql itself (:'name').
    cmd = ["psql", "-qAt", "-v", "ON_ERROR_STOP=1", need("DRIFTLOCK_PG_DSN_ADMIN")]
    for i, p in enumerate(params):
        cmd += ["-v", f"p{i}={p}"]
    return subprocess.run(cmd, input=sql, check=True, capture_output=True, text=True).stdout


def request(port, method, path, key=None, body=None, ctype="application/json", stream=False):
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = ctype
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=15)
    except urllib.error.HTTPError as e:
        resp = e
    status = resp.status if hasattr(resp, "status") else resp.code
    ctype_out = resp.headers.get("Content-Type", "")
    if stream:
        first = resp.read1(1) if hasattr(resp, "read1") else b""
        resp.close()
        return status, ctype_out, first
    return status, ctype_out, resp.read()


def resolve(doc, node):
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def validate(doc, schema, instance, what):
    wrapped = {"$schema": "https://json-schema.org/draft/2020-12/schema",
               "components": doc["components"], **schema}
    try:
        jsonschema.Draft202012Validator(wrapped).validate(instance)
    except jsonschema.ValidationError as e:
        check(False, f"{what}: body does not match its schema: {e.message} at "
                     f"{list(e.absolute_path)}")


def check_response(doc, op, status, ctype, body, what):
    responses = op.get("responses", {})
    spec = responses.get(str(status)) or responses.get("default")
    check(spec is not None, f"{what}: status {status} is not documented "
                            f"(documented: {sorted(responses)})")
    if spec is None:
        return
    spec = resolve(doc, spec)
    content = spec.get("content", {})
    media = ctype.split(";")[0].strip()
    if not content:
        return
    check(media in content, f"{what}: {status} answered {media!r}, documented {sorted(content)}")
    if media in content and media.endswith("json"):
        schema = content[media].get("schema")
        if schema is not None:
            validate(doc, schema, json.loads(body), f"{what} ({status})")


def inline_files(node, base, defs):
    """Replaces each $ref to a file next to the document (schemas/x.json) by that file's
    schema; its own "#/$defs/..." references are re-pointed at a copy of its $defs kept in
    defs (added to the document's components), so every reference resolves in one document
    whatever version of jsonschema runs this."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#") and "://" not in ref:
            path = ref.split("#")[0]
            key = "ext_" + os.path.basename(path).split(".")[0]
            loaded = json.load(open(os.path.join(base, path)))
            for k in ("$schema", "$id"):
                loaded.pop(k, None)
            loaded = json.loads(json.dumps(loaded).replace('"#/$defs/',
                                                           f'"#/components/{key}/'))
            defs[key] = loaded.pop("$defs", {})
            return loaded
        return {k: inline_files(v, base, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [inline_files(v, base, defs) for v in node]
    return node


def main():
    defs = {}
    doc = inline_files(yaml.safe_load(open(f"{SRC}/proto/openapi.yaml")), f"{SRC}/proto", defs)
    doc["components"].update(defs)
    for name in ["DRIFTLOCK_KAFKA_BROKERS", "DRIFTLOCK_REDIS_URL", "DRIFTLOCK_PG_DSN_INGEST",
                 "DRIFTLOCK_PG_DSN_ADMIN", "DRIFTLOCK_API_KEY_SECRET"]:
        need(name)

    org = admin("org", "create", "--name", "openapi-check", "--plan", "pro")["id"]
    key = admin("key", "create", "--org", org, "--name", "openapi")["key"]
    other_org = admin("org", "create", "--name", "openapi-other")["id"]
    anomaly_id = f"openapi-{int(time.time() * 1000)}"
    psql("""INSERT INTO streams (org_id, name, status, events_seen)
            VALUES (:'p0'::uuid, 'openapi.web', 'active', 10) ON CONFLICT DO NOTHING;
            INSERT INTO anomalies (org_id, id, stream, event_id, event_ts, detected_at, kind,
                score, p_value, severity, explanation_summary, explanation_signal,
                explanation_value, baseline_low, baseline_median, baseline_high,
                detector_version, detector_sensitivity)
            VALUES (:'p0'::uuid, :'p1', 'openapi.web', 'ev-1', now(), now(), 'event', 3.5,
                0.0001, 'high', 'a new error message', 'novelty', 412.5, 80, 120, 190,
                'test', 0.5);""",
         org, anomaly_id)

    port, aport = free_port(), free_port()
    env = dict(os.environ)
    env.update({"DRIFTLOCK_PG_DSN": need("DRIFTLOCK_PG_DSN_INGEST"),
                "DRIFTLOCK_INGEST_PORT": str(port), "DRIFTLOCK_ADMIN_PORT": str(aport),
                "DRIFTLOCK_LOG_LEVEL": "info", "DRIFTLOCK_CHECK_INTERVAL": "200ms"})
    log = tempfile.NamedTemporaryFile(prefix="dl-openapi-", suffix=".log", delete=False)
    proc = subprocess.Popen([f"{BUILD}/services/ingest/driftlock-ingest"], env=env,
                            stdout=log, stderr=log)
    try:
        for _ in range(450):
            try:
                if request(aport, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            print("ingest never became ready; log:", open(log.name).read()[-4000:])
            return 1

        # 1. Served routes == documented public operations.
        served = set()
        for line in open(log.name):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "public API route":
                served.add((rec["method"], rec["pattern"]))
        documented = set()
        admin_paths = {}
        for path, item in doc["paths"].items():
            for method, op in item.items():
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                if "admin" in op.get("tags", []):
                    admin_paths[path] = op
                else:
                    documented.add((method.upper(), path))
        check(served, "ingest logged no 'public API route' lines")
        check(served == documented,
              f"served and documented routes differ: only served {sorted(served - documented)}, "
              f"only documented {sorted(documented - served)}")

        ops = {(m.upper(), p): op for p, item in doc["paths"].items()
               for m, op in item.items() if isinstance(op, dict)}

        def call(method, path, template, body=None, use_key=True, stream=False, ctype=None):
            st, ct, data = request(port, method, path, key if use_key else None, body,
                                   ctype or "application/json", stream)
            if not stream:
                check_response(doc, ops[(method, template)], st, ct, data,
                               f"{method} {path}")
            return st, ct, data

        # 2. Every operation, with a valid call and with typical errors.
        st, _, _ = call("POST", "/v1/events", "/v1/events", {"stream": "openapi.web", "v": 1})
        check(st == 202, f"POST /v1/events: {st}")
        st, _, _ = call("POST", "/v1/events", "/v1/events",
                        b'{"v":1}\n{"stream":"openapi.web","v":2}\n',
                        ctype="application/x-ndjson")
        check(st == 202, f"POST /v1/events NDJSON: {st}")
        call("POST", "/v1/events", "/v1/events", b"not json")
        call("POST", "/v1/events", "/v1/events", {"stream": "s"}, use_key=False)

        st, _, _ = call("GET", "/v1/anomalies", "/v1/anomalies")
        check(st == 200, f"GET /v1/anomalies: {st}")
        call("GET", "/v1/anomalies?limit=501", "/v1/anomalies")
        call("GET", "/v1/anomalies?severity=high&limit=10", "/v1/anomalies")
        call("GET", "/v1/anomalies", "/v1/anomalies", use_key=False)
        st, _, _ = call("GET", f"/v1/anomalies/{anomaly_id}", "/v1/anomalies/{id}")
        check(st == 200, f"GET /v1/anomalies/{{id}}: {st}")
        call("GET", "/v1/anomalies/unknown-id", "/v1/anomalies/{id}")
        st, _, _ = call("PATCH", f"/v1/anomalies/{anomaly_id}", "/v1/anomalies/{id}",
                        {"status": "acknowledged", "note": "seen by the openapi check"})
        check(st == 200, f"PATCH /v1/anomalies/{{id}}: {st}")
        call("PATCH", f"/v1/anomalies/{anomaly_id}", "/v1/anomalies/{id}", {"status": "bogus"})

        st, _, _ = call("GET", "/v1/streams", "/v1/streams")
        check(st == 200, f"GET /v1/streams: {st}")
        st, _, _ = call("GET", "/v1/streams/openapi.web", "/v1/streams/{stream}")
        check(st == 200, f"GET /v1/streams/{{stream}}: {st}")
        call("GET", "/v1/streams/never-seen", "/v1/streams/{stream}")
        st, _, _ = call("PUT", "/v1/streams/openapi.web", "/v1/streams/{stream}",
                        {"sensitivity": 0.7})
        check(st == 200, f"PUT /v1/streams/{{stream}}: {st}")
        call("PUT", "/v1/streams/openapi.web", "/v1/streams/{stream}", {"sensitivity": 7})

        st, _, _ = call("GET", "/v1/usage", "/v1/usage")
        check(st == 200, f"GET /v1/usage: {st}")

        st, ct, _ = call("GET", "/v1/stream/anomalies", "/v1/stream/anomalies", stream=True)
        check(st == 200 and ct.startswith("text/event-stream"),
              f"GET /v1/stream/anomalies: {st} {ct}")
        check("text/event-stream" in resolve(doc, ops[("GET", "/v1/stream/anomalies")]
                                              ["responses"]["200"]).get("content", {}),
              "the SSE route documents text/event-stream")
        call("GET", "/v1/stream/anomalies", "/v1/stream/anomalies", use_key=False)

        # Another org's id answers like an unknown one.
        st, _, _ = call("GET", f"/v1/anomalies/{anomaly_id}", "/v1/anomalies/{id}")
        check(other_org != org, "two orgs")

        # 3. Admin endpoints.
        for path, op in admin_paths.items():
            st, ct, data = request(aport, "GET", path)
            check_response(doc, op, st, ct, data, f"admin GET {path}")
    finally:
        proc.terminate()
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -9
        check(rc == 0, f"ingest exited {rc} on SIGTERM")

    if failures:
        print(f"{len(failures)} failure(s); ingest log: {log.name}")
        return 1
    print("openapi: routes and responses match the document")
    os.unlink(log.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
