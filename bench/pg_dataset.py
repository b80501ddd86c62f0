#!/usr/bin/env python3
"""The second benchmark dataset: a real PostgreSQL cluster's data directory and its dumps,
on two days with traffic between them (issue 15).

    python3 bench/pg_dataset.py --out DIR [--scale 20] [--seed 42] [--transactions 20000]

Writes DIR/day1 and DIR/day2, each holding

    pgdata/          the cluster's data directory after a clean shutdown (no postmaster.pid)
    dumps/bench.sql  pg_dump -Fp of the database (plain SQL)
    dumps/bench.dump pg_dump -Fc (custom format, pg_dump's default compression)

and prints, like ../shared/bench/gen_dataset.py, {"day1": {"total": {"bytes", "files"}},
"day2": {...}} on stdout. What happens between the days, in this order:

    day 1  initdb (no locale, UTF8, data checksums off, the server's defaults otherwise),
           `pgbench -i -s SCALE` into database `bench`, VACUUM ANALYZE, CHECKPOINT, dumps,
           clean shutdown, copy
    day 2  start, `pgbench -n -c 2 -j 2 -t TRANSACTIONS/2 --random-seed=SEED` (TPC-B-like:
           updates of accounts, tellers, branches, inserts into history), VACUUM (plain: the
           tables keep their files, freed space is reused), a new table
           `audit_log` (SCALE * 10,000 rows: id, timestamp, md5 text, a jsonb payload),
           CHECKPOINT, dumps, clean shutdown, copy

Needs root (runs the server as the postgres user) and the server packages
(/usr/lib/postgresql/<v>/bin). The cluster is built in DIR/build and removed at the end.
Standard library only.
"""

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time


def log(msg):
    sys.stderr.write("[pg_dataset %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        sys.exit("pg_dataset: no PostgreSQL server packages (/usr/lib/postgresql/<v>/bin/initdb); "
                 "install postgresql")
    return os.path.dirname(found[-1])


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--"] + list(cmd)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bindir, data, logfile):
        self.bin, self.data, self.logfile, self.port = bindir, data, logfile, free_port()

    def tool(self, name):
        return os.path.join(self.bin, name)

    def start(self):
        subprocess.run(as_postgres([self.tool("pg_ctl"), "start", "-w", "-s", "-t", "600", "-D", self.data,
                                    "-l", self.logfile, "-o", "-p %d -k /tmp -c listen_addresses=127.0.0.1"
                                    % self.port]), check=True, stdin=subprocess.DEVNULL)

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(as_postgres([self.tool("pg_ctl"), "stop", "-w", "-s", "-m", "fast", "-D", self.data]),
                           check=False, stdin=subprocess.DEVNULL)

    def conn(self):
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]

    def psql(self, sql, db="bench"):
        subprocess.run([self.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"] + self.conn() + ["-d", db, "-c", sql],
                       check=True, stdout=subprocess.DEVNULL)

    def dumps(self, into):
        os.makedirs(into, exist_ok=True)
        for fmt, name in (("p", "bench.sql"), ("c", "bench.dump")):
            subprocess.run([self.tool("pg_dump"), "-F" + fmt, "-f", os.path.join(into, name)] + self.conn()
                           + ["bench"], check=True)


def total(path):
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            st = os.lstat(os.path.join(root, n))
            files += 1
            size += st.st_size
    return {"total": {"bytes": size, "files": files}}


def snapshot_day(srv, build, out, day):
    dest = os.path.join(out, "day%d" % day)
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    srv.dumps(os.path.join(dest, "dumps"))
    srv.stop()
    subprocess.run(["cp", "-a", srv.data, os.path.join(dest, "pgdata")], check=True)
    log("day %d: %s" % (day, total(dest)["total"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--transactions", type=int, default=20000)
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    build = os.path.join(out, "build")
    shutil.rmtree(build, ignore_errors=True)
    os.makedirs(build)
    subprocess.run(["chown", "postgres:postgres", build], check=True)
    bindir = pg_bin()
    data = os.path.join(build, "data")
    subprocess.run(as_postgres([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-E", "UTF8",
                                "--no-locale", "--auth=trust"]), check=True, stdout=subprocess.DEVNULL)
    srv = Server(bindir, data, os.path.join(build, "server.log"))
    subprocess.run(["touch", srv.logfile], check=True)
    subprocess.run(["chown", "postgres:postgres", srv.logfile], check=True)
    srv.start()
    try:
        srv.psql("CREATE DATABASE bench TEMPLATE template0", db="postgres")
        log("pgbench -i -s %d" % a.scale)
        subprocess.run([srv.tool("pgbench"), "-i", "-q", "-s", str(a.scale)] + srv.conn() + ["bench"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        srv.psql("VACUUM ANALYZE")
        srv.psql("CHECKPOINT", db="postgres")
        snapshot_day(srv, build, out, 1)

        srv.start()
        log("day 2 traffic: %d transactions, seed %d" % (a.transactions, a.seed))
        subprocess.run([srv.tool("pgbench"), "-n", "-c", "2", "-j", "2", "-t", str(a.transactions // 2),
                        "--random-seed=%d" % a.seed] + srv.conn() + ["bench"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        srv.psql("VACUUM")
        srv.psql("SELECT setseed(%f)" % (a.seed / 1000.0 % 1.0))
        srv.psql("CREATE TABLE audit_log AS SELECT g AS id, "
                 "timestamp '2026-12-01' + g * interval '1 second' AS at, "
                 "md5(g::text) AS digest, "
                 "jsonb_build_object('account', g %% 100000, 'delta', (g * 7919) %% 5000 - 2500, "
                 "'teller', g %% 10, 'note', repeat(chr(97 + g %% 26), 16)) AS payload "
                 "FROM generate_series(1, %d) g" % (a.scale * 10000))
        srv.psql("CHECKPOINT", db="postgres")
        snapshot_day(srv, build, out, 2)
    finally:
        srv.stop()
    shutil.rmtree(build, ignore_errors=True)
    json.dump({"day1": total(os.path.join(out, "day1")), "day2": total(os.path.join(out, "day2"))}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
