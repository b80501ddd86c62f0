#!/usr/bin/env python3
"""A local stand-in for Cloudflare's v4 DNS API, for tests only (the real API is not
reachable from the test machines). It implements the documented calls haven-dns makes:
GET /zones?name=, GET/POST /zones/{id}/dns_records, PATCH/PUT/DELETE
/zones/{id}/dns_records/{rid}, with the API's envelope {success, errors, messages, result}
and Bearer-token auth (403, code 9109, on a wrong token). Test hooks: GET /__log (every
request: method, path, body), GET /__records, POST /__fail?status=S&count=N (the next N
API calls answer S).

Usage: cloudflare_standin.py TOKEN ZONE_NAME=ZONE_ID[,...] [NAME TYPE CONTENT TTL PROXIED]...
Prints "PORT <n>" on its first line once it listens on 127.0.0.1.
"""
import json
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = sys.argv[1]
ZONES = {}  # id -> name
for pair in sys.argv[2].split(","):
    name, zid = pair.split("=")
    ZONES[zid] = name
RECORDS = {}  # id -> record
args = sys.argv[3:]
for i in range(0, len(args), 5):
    name, rtype, content, ttl, proxied = args[i:i + 5]
    zid = next(z for z, n in ZONES.items() if name == n or name.endswith("." + n))
    rid = uuid.uuid4().hex
    RECORDS[rid] = {"id": rid, "zone_id": zid, "name": name, "type": rtype, "content": content,
                    "ttl": int(ttl), "proxied": proxied == "true"}
LOG = []
FAIL = {"status": 0, "count": 0}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def ok(self, result, status=200):
        self.reply(status, {"success": True, "errors": [], "messages": [], "result": result})

    def fail(self, status, code, message):
        self.reply(status, {"success": False, "errors": [{"code": code, "message": message}],
                            "messages": [], "result": None})

    def handle_any(self, method):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        if url.path == "/__log":
            return self.ok(LOG)
        if url.path == "/__records":
            return self.ok(sorted(RECORDS.values(), key=lambda r: (r["name"], r["content"])))
        if url.path == "/__fail":
            FAIL["status"], FAIL["count"] = int(q["status"]), int(q["count"])
            return self.ok(None)
        LOG.append({"method": method, "path": self.path, "body": body})
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.fail(403, 9109, "Invalid access token")
        if FAIL["count"] > 0:
            FAIL["count"] -= 1
            return self.fail(FAIL["status"], 10000, "injected failure")
        parts = [p for p in url.path.split("/") if p]
        if parts[:2] == ["client", "v4"]:
            parts = parts[2:]
        if parts == ["zones"] and method == "GET":
            return self.ok([{"id": z, "name": n} for z, n in ZONES.items()
                            if "name" not in q or q["name"] == n])
        if len(parts) < 3 or parts[0] != "zones" or parts[1] not in ZONES or parts[2] != "dns_records":
            return self.fail(404, 7003, "Could not route to " + url.path)
        zid = parts[1]
        if len(parts) == 3 and method == "GET":
            found = [r for r in RECORDS.values() if r["zone_id"] == zid
                     and ("type" not in q or r["type"] == q["type"])
                     and ("name" not in q or r["name"] == q["name"])]
            return self.ok(found[: int(q.get("per_page", 100))])
        if len(parts) == 3 and method == "POST":
            rid = uuid.uuid4().hex
            rec = {"id": rid, "zone_id": zid, "name": body["name"], "type": body["type"],
                   "content": body["content"], "ttl": body.get("ttl", 1),
                   "proxied": body.get("proxied", False)}
            RECORDS[rid] = rec
            return self.ok(rec)
        if len(parts) == 4 and parts[3] in RECORDS:
            rec = RECORDS[parts[3]]
            if method == "DELETE":
                del RECORDS[parts[3]]
                return self.ok({"id": parts[3]})
            if method == "PATCH":
                rec.update(body)
                return self.ok(rec)
            if method == "PUT":
                # PUT replaces the record: unspecified ttl/proxied fall back to defaults.
                rec.update({"ttl": 1, "proxied": False})
                rec.update(body)
                return self.ok(rec)
        return self.fail(404, 81044, "Record does not exist.")

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("PORT", server.server_address[1], flush=True)
server.serve_forever()
