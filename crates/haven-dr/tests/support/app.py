#!/usr/bin/env python3
"""The "application" of the DR tests: a tiny HTTP service that answers from its tenant's
PostgreSQL database, so a system test of a restored site proves the data is served.

  GET /health  200 "ok <accounts>" when pgbench_accounts can be read, else 503
  GET /count   the number of rows of pgbench_accounts (503 when unreadable)
  POST /scale-down   what the runbook's scale-down-old step calls on the old site: answers
               200 and remembers it (GET /scaled-down says "yes"); the service keeps running

It uses psql (no driver needed): app.py --host IP --port N --psql PATH --db URL
"""
import argparse
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--psql", default="psql")
ap.add_argument("--db", required=True)
args = ap.parse_args()


def accounts():
    out = subprocess.run([args.psql, "-X", "-At", "-c", "SELECT count(*) FROM pgbench_accounts", args.db],
                         capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return int(out.stdout.strip())


SCALED_DOWN = {"yes": False}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path == "/scale-down":
            SCALED_DOWN["yes"] = True
            return self.send(200, "scaled down")
        return self.send(404, "not found")

    def log_message(self, *a):
        pass

    def send(self, status, text):
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/scaled-down":
            return self.send(200, "yes" if SCALED_DOWN["yes"] else "no")
        try:
            n = accounts()
        except Exception as e:  # the database is down, empty or not restored yet
            return self.send(503, "unavailable: %s" % e)
        if self.path == "/health":
            return self.send(200, "ok %d" % n)
        if self.path == "/count":
            return self.send(200, str(n))
        return self.send(404, "not found")


ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
