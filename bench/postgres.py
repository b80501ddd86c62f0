#!/usr/bin/env python3
"""
bench/postgres.py - the PostgreSQL benchmark of issue 4: `haven tenant backup` against
`pg_dump -Fc > /dev/null` alone, and `haven tenant restore` against `pg_restore -j` from a
local file alone, in one run. Target: Haven adds no more than 10% to either.

Python 3 standard library only; needs root (runuser, page-cache drop) and the PostgreSQL
server packages (initdb, pg_ctl, pgbench from /usr/lib/postgresql/<v>/bin).

    bash bench/postgres.sh                           # full run: scale 150 (~2.2 GB), 3 reps
    python3 bench/postgres.py --scale 10 --reps 1    # smoke run (~150 MB)

What it does:
  1. a throwaway PostgreSQL server of its own: initdb (as the postgres user, via runuser) into
     WORK/pg-s<scale>/data, a free loopback port, trust authentication. fsync stays ON
     (production setting: both restores pay for durable writes the same way). The data dir
     is kept and reused by the next run at the same scale (filling it takes minutes).
  2. database `bench` filled with `pgbench -i -s <scale>` (scale 150 = 15 M accounts, ~2.2 GB
     by pg_database_size); the run refuses a database under --min-gb (default 2) unless
     --smoke-ok (set automatically when --scale < 100).
  3. `cargo build --release -p haven` (skip with --no-build or --haven PATH); haven.toml with
     tenants `bench` (database bench) and `bench-dr` (database bench_dr, the restore target),
     one local repository per haven binary, a password file. TMPDIR (Haven's restore work
     file) and XDG_CACHE_HOME point into the work dir, on the same disk as the baseline's
     dump file.
  4. untimed once per run: `pg_dump -Fc -f WORK/run/bench.dump` (the baseline restore's
     local file).
  5. --reps repetitions (default 3); the contestant that goes first (baseline, Haven, and
     the --haven-before binary if given) rotates each repetition. Before every timed phase:
     the server is restarted (cold shared_buffers; the shutdown checkpoint also writes out
     the previous phase's dirty pages) and then
     `sync; echo 3 > /proc/sys/vm/drop_caches` (cold page cache). Phases:
       backup  baseline  pg_dump -Fc -d URL > /dev/null
       backup  haven     haven --json tenant backup bench   (fresh repository, `haven init`
                         beforehand, untimed); then a 2nd backup into the same repository
                         (reported as an extra line: deduplication)
       restore baseline  pg_restore -j J --exit-on-error --no-owner --no-privileges
                         -d URL/bench_base bench.dump   (fresh empty database created
                         beforehand, untimed; same flags as Haven passes)
       restore haven     haven --json tenant restore bench --into bench-dr   (fresh empty
                         database bench_dr created beforehand, untimed); restore-only time
                         from the JSON report (components[].restore_seconds) and the total
                         wall time including validation (fingerprint + probe), separately
     and, unless --no-diagnostics, with the same cold start: `pg_dump -Fc -Z0 > /dev/null`
     (the dump Haven runs, alone).
  Every timed command runs under /usr/bin/time -f '%e %M %U %S' (wall s, peak RSS KiB of
  the largest process of the tree, CPU s of the tree); the server's CPU over the phase is
  read from /proc (postmaster, reaped and live children). Medians over reps; ratios are
  haven median / baseline median. --haven-before PATH adds an older haven binary (own
  repository), e.g. to measure a change in one run.

Output: a table on stdout and in --out (default bench/results/<date>-postgres.txt); raw
figures and every command's log in WORK/logs/<timestamp>/.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
TIME = "/usr/bin/time"
PASSWORD = "bench-password-not-secret"
TARGET = 1.10

def log(msg):
    print("[pgbench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def die(msg):
    log("ERROR: " + msg)
    sys.exit(2)


def rmtree(path):
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--", path], check=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return tuple(float(x) for x in f.read().split()[:3])


def cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_pg_bin():
    versions = []
    for v in os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else []:
        if v.isdigit() and os.path.isfile("/usr/lib/postgresql/%s/bin/initdb" % v):
            versions.append(int(v))
    if versions:
        return "/usr/lib/postgresql/%d/bin" % max(versions)
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    die("initdb not found: apt-get install postgresql")


def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        return out.splitlines()[0] if out else "?"
    except OSError:
        return "?"


def du(path):
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def mb(n):
    return n / 1e6


# ----------------------------------------------------------------------------- the server
class Server:
    """A PostgreSQL server of our own under `dir`, run as the postgres user."""

    def __init__(self, dir, bin, logdir):
        self.dir = dir
        self.data = os.path.join(dir, "data")
        self.sock = os.path.join(dir, "sock")
        self.bin = bin
        self.port = None
        self.logfile = os.path.join(logdir, "server.log")
        self.as_postgres = os.geteuid() == 0

    def cmd(self, tool, *args):
        c = [os.path.join(self.bin, tool)] + list(args)
        return (["runuser", "-u", "postgres", "--"] + c) if self.as_postgres else c

    def chown(self, path):
        if self.as_postgres:
            subprocess.run(["chown", "postgres:postgres", path], check=True)

    def initdb(self):
        rmtree(self.dir)
        os.makedirs(self.sock)
        self.chown(self.dir)
        self.chown(self.sock)
        subprocess.run(self.cmd("initdb", "-D", self.data, "-U", "postgres", "-E", "UTF8",
                                "--no-locale", "--auth=trust"),
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# bench/postgres.py\nlisten_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = '%s'\n"
                    "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
                    "shared_buffers = 256MB\nmaintenance_work_mem = 256MB\nmax_wal_size = 2GB\n"
                    "max_connections = 40\n" % self.sock)

    def start(self):
        # the log file must be writable by the postgres user
        open(self.logfile, "a").close()
        self.chown(self.logfile)
        self.chown(os.path.dirname(self.logfile))
        # a restart keeps its port (commands are built with the URL before the restart)
        for attempt in range(5):
            if self.port is None or attempt > 0:
                self.port = free_port()
            r = subprocess.run(self.cmd("pg_ctl", "start", "-w", "-s", "-t", "120", "-D", self.data,
                                        "-l", self.logfile, "-o", "-p %d" % self.port))
            if r.returncode == 0:
                return
        die("pg_ctl start failed 5 times; see %s" % self.logfile)

    def stop(self):
        subprocess.run(self.cmd("pg_ctl", "stop", "-w", "-s", "-t", "600", "-m", "fast", "-D", self.data),
                       check=False)

    def restart(self):
        """Cold shared_buffers; the shutdown checkpoint writes the previous phase's pages."""
        self.stop()
        self.start()

    def children(self):
        """The postmaster and its children: {pid: (title, state, cpu ticks incl. reaped children)}."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            pm = int(f.readline())
        procs = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17
                if int(pid) != pm and int(fields[1]) != pm:
                    continue
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    title = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            procs[int(pid)] = (title, fields[0], sum(int(x) for x in fields[11:15]))
        return procs

    def cpu_seconds(self, settle=False):
        """CPU time (user + system) of the server since its start: the postmaster with its
        reaped children (backends, parallel workers that have exited) and its live children.
        With `settle`, first wait (up to 5 s) until the phase's backends and parallel
        workers have exited and been reaped, so that their time is counted."""
        deadline = time.time() + 5
        while True:
            procs = self.children()
            busy = [p for p, (title, state, _) in procs.items()
                    if state == "Z" or "(" in title or "[local]" in title or "parallel worker" in title]
            if not settle or not busy or time.time() > deadline:
                return sum(t for _, _, t in procs.values()) / os.sysconf("SC_CLK_TCK")
            time.sleep(0.05)

    def url(self, db):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def psql(self, db, sql):
        r = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-d", self.url(db), "-c", sql], capture_output=True, text=True)
        if r.returncode != 0:
            die("psql %s: %s: %s" % (db, sql[:80], r.stderr.strip()))
        return r.stdout.strip()

    def fresh_db(self, db):
        self.psql("postgres", "DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
        self.psql("postgres", "CREATE DATABASE %s TEMPLATE template0" % db)

    def drop_db(self, db):
        self.psql("postgres", "DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)


def prepare_server(args, pg_bin, logdir):
    dir = os.path.join(args.work, "pg-s%g" % args.scale)
    srv = Server(dir, pg_bin, logdir)
    marker = os.path.join(dir, "READY")
    if os.path.exists(os.path.join(srv.data, "postmaster.pid")):
        log("a server of an earlier run still runs in %s: stopping it" % srv.data)
        srv.stop()
    if os.path.exists(marker):
        log("reusing the server data dir %s (scale %g)" % (dir, args.scale))
        srv.start()
        return srv
    log("initdb into %s" % srv.data)
    srv.initdb()
    srv.start()
    srv.psql("postgres", "CREATE DATABASE bench TEMPLATE template0")
    log("pgbench -i -s %g (fsync on; takes a few minutes at scale 150)" % args.scale)
    t0 = time.time()
    subprocess.run([os.path.join(pg_bin, "pgbench"), "-i", "-q", "-s", "%g" % args.scale,
                    "-h", "127.0.0.1", "-p", str(srv.port), "-U", "postgres", "bench"],
                   check=True, stdout=subprocess.DEVNULL,
                   stderr=open(os.path.join(logdir, "pgbench-init.log"), "w"))
    srv.psql("bench", "VACUUM ANALYZE")
    srv.psql("postgres", "CHECKPOINT")
    log("pgbench -i took %.0f s" % (time.time() - t0))
    with open(marker, "w") as f:
        f.write("scale %g\n" % args.scale)
    return srv


# ----------------------------------------------------------------------------- timing
class Runner:
    def __init__(self, args, srv, logdir):
        self.args = args
        self.srv = srv
        self.logdir = logdir
        self.raw = []

    def cold(self):
        self.srv.restart()
        os.sync()
        if not self.args.no_drop_caches:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")

    def timed(self, label, rep, cmd, env=None, stdout=None, ok=(0,)):
        """Run `cmd` cold under /usr/bin/time; returns (wall_s, rss_kib, stdout_text)."""
        port = self.srv.port
        self.cold()
        if self.srv.port != port:
            die("the server came back on another port (%d, was %d)" % (self.srv.port, port))
        tfile = os.path.join(self.logdir, "time.txt")
        logpath = os.path.join(self.logdir, "%s-rep%d.log" % (label, rep))
        load = loadavg()[0]
        server_cpu0 = self.srv.cpu_seconds()
        with open(logpath, "w") as lf:
            lf.write("$ %s\n" % " ".join(cmd))
            lf.flush()
            out_target = stdout if stdout is not None else subprocess.PIPE
            t0 = time.time()
            r = subprocess.run([TIME, "-o", tfile, "-f", "%e %M %U %S"] + cmd, stdout=out_target, stderr=lf,
                               env=env, text=(stdout is None))
            wall_py = time.time() - t0
        text = r.stdout if stdout is None else ""
        if stdout is None:
            with open(logpath, "a") as lf:
                lf.write(text)
        if r.returncode not in ok:
            die("%s (rep %d) exited with %d; see %s" % (label, rep, r.returncode, logpath))
        with open(tfile) as f:
            last = f.read().strip().splitlines()[-1].split()
        wall, rss = float(last[0]), int(last[1])
        client_cpu = float(last[2]) + float(last[3])
        server_cpu = self.srv.cpu_seconds(settle=True) - server_cpu0
        self.raw.append({"phase": label, "rep": rep, "wall_s": wall, "wall_py_s": round(wall_py, 3),
                         "rss_kib": rss, "load1": load, "client_cpu_s": round(client_cpu, 2),
                         "server_cpu_s": round(server_cpu, 2), "cpu_s": round(client_cpu + server_cpu, 2)})
        log("  %-28s rep %d: %7.2f s  %6.0f MiB  cpu %6.2f s client + %6.2f s server  (load %.2f)"
            % (label, rep, wall, rss / 1024, client_cpu, server_cpu, load))
        return wall, rss, text

    def note(self, label, rep, **kw):
        self.raw.append(dict(phase=label, rep=rep, **kw))


# ----------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--scale", type=float, default=150, help="pgbench scale (150 = ~2.2 GB)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--jobs", type=int, default=cpus(), help="pg_restore -j of the baseline (default: CPUs, as Haven)")
    p.add_argument("--work", default=os.path.join(REPO_ROOT, "bench", "work", "pg"))
    p.add_argument("--out", default=None, help="results file (default bench/results/<date>-postgres.txt)")
    p.add_argument("--haven", default=None, help="use this haven binary (no build)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--haven-before", default=None,
                   help="also run this (older) haven binary, own repository, reported as extra lines")
    p.add_argument("--min-gb", type=float, default=2.0)
    p.add_argument("--smoke-ok", action="store_true", help="accept a database under --min-gb")
    p.add_argument("--no-diagnostics", action="store_true")
    p.add_argument("--no-drop-caches", action="store_true")
    p.add_argument("--wait-load", type=float, default=None,
                   help="before starting, wait (up to --wait-max s) for the 1-min load average to fall under this")
    p.add_argument("--wait-max", type=float, default=900)
    p.add_argument("--prepare-only", action="store_true", help="build and fill the database, then stop")
    p.add_argument("--keep-server", action="store_true", help="leave the server running at the end")
    args = p.parse_args()
    args.work = os.path.abspath(args.work)
    if args.scale < 100:
        args.smoke_ok = True
    if os.geteuid() != 0:
        die("run as root (runuser to the postgres user, page-cache drop)")
    if not os.access(TIME, os.X_OK):
        die("%s missing: apt-get install time" % TIME)
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(args.work, "logs", stamp)
    os.makedirs(logdir)
    pg_bin = find_pg_bin()

    # haven
    if args.haven:
        haven = os.path.abspath(args.haven)
    else:
        haven = os.path.join(REPO_ROOT, "target", "release", "haven")
        if not args.no_build:
            log("cargo build --release -p haven")
            subprocess.run(["cargo", "build", "--release", "-p", "haven"], cwd=REPO_ROOT, check=True)
    if not os.access(haven, os.X_OK):
        die("no haven binary at %s" % haven)

    srv = prepare_server(args, pg_bin, logdir)
    try:
        if args.prepare_only:
            log("database bench: %.2f GB" % (int(srv.psql("bench", "SELECT pg_database_size('bench')")) / 1e9))
            return
        run(args, srv, haven, pg_bin, logdir, started)
    finally:
        if not args.keep_server:
            srv.stop()


def run(args, srv, haven, pg_bin, logdir, started):
    db_size = int(srv.psql("bench", "SELECT pg_database_size('bench')"))
    accounts = int(srv.psql("bench", "SELECT count(*) FROM pgbench_accounts"))
    log("database bench: %.2f GB, %d accounts" % (db_size / 1e9, accounts))
    if db_size < args.min_gb * 1e9 and not args.smoke_ok:
        die("database is %.2f GB, under --min-gb %.1f: raise --scale" % (db_size / 1e9, args.min_gb))

    rundir = os.path.join(args.work, "run")
    rmtree(rundir)
    os.makedirs(os.path.join(rundir, "tmp"))
    pwfile = os.path.join(rundir, "password")
    with open(pwfile, "w") as f:
        f.write(PASSWORD)

    def variant(name, binary):
        """A haven binary with its own repository, config, cache."""
        d = os.path.join(rundir, name)
        os.makedirs(d)
        v = {"name": name, "bin": binary, "repo": os.path.join(d, "repo"), "cfg": os.path.join(d, "haven.toml"),
             "cache": os.path.join(d, "cache")}
        with open(v["cfg"], "w") as f:
            f.write('# written by bench/postgres.py\n[repositories.bench]\nurl = "%s"\npassword-file = "%s"\n\n'
                    '[tenants.bench]\nrepository = "bench"\n[tenants.bench.components.db]\nkind = "postgres"\n'
                    'url = "%s"\n\n'
                    '[tenants.bench-dr]\nrepository = "bench"\n[tenants.bench-dr.components.db]\nkind = "postgres"\n'
                    'url = "%s"\n' % (v["repo"], pwfile, srv.url("bench"), srv.url("bench_dr")))
        v["env"] = dict(os.environ, TMPDIR=os.path.join(rundir, "tmp"), XDG_CACHE_HOME=v["cache"])
        for k in ("HAVEN_DEBUG", "HAVEN_PASSWORD", "HAVEN_REPOSITORY", "HAVEN_CONFIG", "PGPASSWORD"):
            v["env"].pop(k, None)
        return v

    variants = [variant("haven", haven)]
    if args.haven_before:
        variants.append(variant("before", os.path.abspath(args.haven_before)))

    pg_dump = os.path.join(pg_bin, "pg_dump")
    pg_restore = os.path.join(pg_bin, "pg_restore")
    dumpfile = os.path.join(rundir, "bench.dump")
    log("untimed: pg_dump -Fc -f %s" % dumpfile)
    subprocess.run([pg_dump, "-Fc", "-f", dumpfile, "-d", srv.url("bench")], check=True)
    dump_size = os.path.getsize(dumpfile)

    if args.wait_load is not None:
        deadline = time.time() + args.wait_max
        while loadavg()[0] >= args.wait_load and time.time() < deadline:
            log("waiting for a quieter machine: load %.2f >= %.2f (up to %.0f s more)" % (
                loadavg()[0], args.wait_load, deadline - time.time()))
            time.sleep(30)
    load_before = loadavg()
    log("load average before the timed phases: %.2f %.2f %.2f" % load_before)
    R = Runner(args, srv, logdir)
    jobs = args.jobs
    backup_bytes = None
    for rep in range(1, args.reps + 1):
        def b_base():
            R.timed("backup-pg_dump", rep, [pg_dump, "-Fc", "-d", srv.url("bench")], stdout=subprocess.DEVNULL)

        def b_haven(v):
            nonlocal backup_bytes
            rmtree(v["repo"])
            rmtree(v["cache"])
            subprocess.run([v["bin"], "init", "--repo", v["repo"], "--password-file", pwfile], check=True,
                           env=v["env"], stdout=subprocess.DEVNULL)
            wall, rss, out = R.timed("backup-%s" % v["name"], rep, [v["bin"], "--json", "tenant", "backup", "bench",
                                                                    "--config", v["cfg"]], env=v["env"])
            c = json.loads(out)["components"]["db"]
            if v["name"] == "haven":
                backup_bytes = c["bytes"]
            R.note("backup-%s-report" % v["name"], rep, seconds=c["seconds"], bytes=c["bytes"],
                   bytes_added=c["bytes_added"], repo_bytes=du(v["repo"]))

        def r_base():
            srv.fresh_db("bench_base")
            R.timed("restore-pg_restore", rep, [pg_restore, "-j", str(jobs), "--exit-on-error", "--no-owner",
                                                "--no-privileges", "-d", srv.url("bench_base"), dumpfile],
                    stdout=subprocess.DEVNULL)
            n = int(srv.psql("bench_base", "SELECT count(*) FROM pgbench_accounts"))
            if n != accounts:
                die("pg_restore: %d accounts restored, %d expected" % (n, accounts))
            srv.drop_db("bench_base")

        def r_haven(v):
            srv.fresh_db("bench_dr")
            wall, rss, out = R.timed("restore-%s" % v["name"], rep, [v["bin"], "--json", "tenant", "restore", "bench",
                                                                     "--into", "bench-dr", "--config", v["cfg"]],
                                     env=v["env"])
            rep_json = json.loads(out)
            c = rep_json["components"][0]
            if c["outcome"] != "passed":
                die("haven restore: %s: %s %s" % (c["outcome"], c.get("error"), c["checks"]))
            R.note("restore-%s-report" % v["name"], rep, restore_seconds=c["restore_seconds"],
                   validate_seconds=c["validate_seconds"], seconds=rep_json["seconds"], outcome=c["outcome"])
            srv.drop_db("bench_dr")

        # the starting contestant rotates each repetition
        contestants = ["base"] + variants
        shift = (rep - 1) % len(contestants)
        order = contestants[shift:] + contestants[:shift]
        log("rep %d/%d, order: %s" % (rep, args.reps, ", ".join("pg" if c == "base" else c["name"] for c in order)))
        for c in order:
            b_base() if c == "base" else b_haven(c)
        v = variants[0]
        wall, rss, out = R.timed("backup-haven-2nd", rep, [v["bin"], "--json", "tenant", "backup", "bench",
                                                           "--config", v["cfg"]], env=v["env"])
        c = json.loads(out)["components"]["db"]
        R.note("backup-haven-2nd-report", rep, seconds=c["seconds"], bytes=c["bytes"],
               bytes_added=c["bytes_added"], repo_bytes=du(v["repo"]))
        for c in order:
            r_base() if c == "base" else r_haven(c)

        if not args.no_diagnostics:
            R.timed("diag-pg_dump-Z0", rep, [pg_dump, "-Fc", "-Z0", "-d", srv.url("bench")],
                    stdout=subprocess.DEVNULL)
    load_after = loadavg()
    repo_note = [r for r in R.raw if r["phase"] == "backup-haven-report"]
    report(args, R, dict(
        pg_bin=pg_bin, haven=haven, db_size=db_size, accounts=accounts, dump_size=dump_size,
        backup_bytes=backup_bytes, repo_bytes=statistics.median(r["repo_bytes"] for r in repo_note),
        load_before=load_before, load_after=load_after, jobs=jobs, started=started, logdir=logdir,
        srv=srv))


def med(R, phase, key="wall_s"):
    xs = [r[key] for r in R.raw if r["phase"] == phase and key in r]
    return (statistics.median(xs), min(xs), max(xs), len(xs)) if xs else None


def paired_ratios(R):
    """Per repetition, haven / baseline for backup and restore-only."""
    def by_rep(phase, key="wall_s"):
        return {r["rep"]: r[key] for r in R.raw if r["phase"] == phase and key in r}
    out = []
    for label, h, b in [("backup", by_rep("backup-haven"), by_rep("backup-pg_dump")),
                        ("restore-only", by_rep("restore-haven-report", "restore_seconds"),
                         by_rep("restore-pg_restore"))]:
        xs = [h[i] / b[i] for i in sorted(b) if i in h and b[i] > 0]
        if xs:
            out.append((label, xs))
    return out


def report(args, R, m):
    srv = m["srv"]
    now = datetime.datetime.now()
    lines = []
    w = lines.append
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    w("Haven PostgreSQL benchmark (issue 4)  %s  scale %g  reps %d" % (now.strftime("%Y-%m-%d %H:%M"), args.scale, args.reps))
    w("machine: nproc %d, kernel %s, %.1f GiB RAM, %s" % (cpus(), platform.release(), mem, cpu))
    w("tools:   %s; %s; %s" % (first_line([m["haven"], "--version"]),
                               first_line([os.path.join(m["pg_bin"], "postgres"), "--version"]),
                               first_line([os.path.join(m["pg_bin"], "pg_dump"), "--version"])))
    head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--", "crates", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    w("haven:   %s, checkout at %s%s" % (m["haven"], head or "?",
                                        " (with uncommitted changes under crates/)" if dirty else ""))
    if args.haven_before:
        w("before:  --haven-before %s (%s)" % (os.path.abspath(args.haven_before),
                                            first_line([args.haven_before, "--version"])))
    w("server:  own throwaway (initdb, 127.0.0.1, trust), fsync=on synchronous_commit=on full_page_writes=on,")
    w("         shared_buffers=256MB maintenance_work_mem=256MB max_wal_size=2GB")
    w("data:    pgbench -i -s %g: database bench %.2f GB (pg_database_size), %d accounts" % (
        args.scale, m["db_size"] / 1e9, m["accounts"]))
    w("sizes:   pg_dump -Fc file %.1f MB; Haven's stream (pg_dump -Fc -Z0) %.1f MB; Haven repository after"
      % (mb(m["dump_size"]), mb(m["backup_bytes"] or 0)))
    w("         the 1st backup %.1f MB (median over reps; du -sb)" % mb(m["repo_bytes"]))
    w("load:    1/5/15-min load average before %.2f %.2f %.2f, after %.2f %.2f %.2f (2 cores, shared machine)"
      % (m["load_before"] + m["load_after"]))
    w("method:  the contestant that goes first rotates each rep; before every timed phase the server is")
    w("         restarted and `sync; echo 3 > /proc/sys/vm/drop_caches`%s; /usr/bin/time -f '%%e %%M'"
      % (" (SKIPPED: --no-drop-caches)" if args.no_drop_caches else ""))
    w("         (wall s, peak RSS of the largest process, user+sys CPU of the command's tree); server CPU = user+sys")
    w("         of the postmaster, its reaped and live children (from /proc) over the phase; medians over reps")
    w("commands (URL = postgresql://postgres@127.0.0.1:PORT/<db>, J = %d = CPUs, Haven's default jobs):" % m["jobs"])
    w("  a. pg_dump -Fc -d URL/bench > /dev/null")
    w("  b. haven --json tenant backup bench --config haven.toml    (fresh repository from `haven init`, untimed)")
    w("     b2: the same again into the same repository (2nd backup: deduplication)")
    w("  c. pg_restore -j J --exit-on-error --no-owner --no-privileges -d URL/bench_base bench.dump")
    w("     (bench.dump: pg_dump -Fc -f, made once, untimed; bench_base created empty beforehand, untimed)")
    w("  d. haven --json tenant restore bench --into bench-dr --config haven.toml")
    w("     (bench_dr created empty beforehand, untimed; restore-only = components[].restore_seconds)")
    if not args.no_diagnostics:
        w("  diagnostic: pg_dump -Fc -Z0 -d URL/bench > /dev/null (the dump Haven runs, alone)")
    w("")
    w("%-58s %8s %7s %7s %7s %7s %7s" % ("phase", "median_s", "min_s", "max_s", "rss_MiB", "cpu_s", "srv_cpu"))
    w("-" * 102)

    def row(label, phase, key="wall_s", rss_phase=None):
        s = med(R, phase, key)
        if not s:
            return None
        r = med(R, rss_phase or phase, "rss_kib")
        c = med(R, rss_phase or phase, "cpu_s")
        sc = med(R, rss_phase or phase, "server_cpu_s")
        w("%-58s %8.2f %7.2f %7.2f %7s %7s %7s" % (
            label, s[0], s[1], s[2], "%.0f" % (r[0] / 1024) if r else "-",
            "%.1f" % c[0] if c and key == "wall_s" else "-", "%.1f" % sc[0] if sc and key == "wall_s" else "-"))
        return s[0]

    base_b = row("backup   a. pg_dump -Fc > /dev/null", "backup-pg_dump")
    hav_b = row("backup   b. haven tenant backup (fresh repository)", "backup-haven")
    row("  extra: b2. haven tenant backup, 2nd into the same repo", "backup-haven-2nd")
    if args.haven_before:
        row("  extra: --haven-before: tenant backup (fresh repository)", "backup-before")
    base_r = row("restore  c. pg_restore -j %d from the local -Fc file" % m["jobs"], "restore-pg_restore")
    hav_r = row("restore  d. haven tenant restore: restore only (JSON)", "restore-haven-report", "restore_seconds",
                rss_phase="restore-haven")
    row("            of which validation (fingerprint + probe) (JSON)", "restore-haven-report", "validate_seconds")
    hav_rt = row("restore  d. haven tenant restore: total wall incl. validation", "restore-haven")
    if args.haven_before:
        row("  extra: --haven-before: restore only (JSON)", "restore-before-report", "restore_seconds",
            rss_phase="restore-before")
        row("  extra: --haven-before: of which validation (JSON)", "restore-before-report", "validate_seconds")
        row("  extra: --haven-before: total wall incl. validation", "restore-before")
    if not args.no_diagnostics:
        row("diag     pg_dump -Fc -Z0 > /dev/null", "diag-pg_dump-Z0")
    w("")
    w("ratios (haven median / baseline median; target <= %.2f):" % TARGET)

    def ratio(label, h, b):
        if h is None or b is None:
            return
        r = h / b
        w("  %-52s %5.2fx  %s" % (label, r, "MEETS the target" if r <= TARGET else "MISSES the target (+%.0f%%)" % ((r - 1) * 100)))

    ratio("backup: haven tenant backup / pg_dump -Fc", hav_b, base_b)
    ratio("restore: haven restore-only / pg_restore -j %d" % m["jobs"], hav_r, base_r)
    if args.haven_before:
        bb, br = med(R, "backup-before"), med(R, "restore-before-report", "restore_seconds")
        if bb and br:
            w("  --haven-before: backup %.2fx, restore-only %.2fx (informational)" % (bb[0] / base_b, br[0] / base_r))
    paired = paired_ratios(R)
    if paired:
        w("  paired per rep (haven_i / baseline_i; the two of a pair ran within a minute or two):")
        for label, xs in paired:
            w("    %-50s %s  median %.2fx" % (label, " ".join("%.2f" % x for x in xs), statistics.median(xs)))
    if hav_rt and base_r:
        w("  %-52s %5.2fx  (informational: validation is extra work)" % (
            "restore incl. validation / pg_restore -j %d" % m["jobs"], hav_rt / base_r))
    cb, ch = med(R, "backup-pg_dump", "cpu_s"), med(R, "backup-haven", "cpu_s")
    cr, chr_ = med(R, "restore-pg_restore", "cpu_s"), med(R, "restore-haven", "cpu_s")
    if cb and ch and cr and chr_:
        w("  CPU seconds (client tree + server, medians; less sensitive to the machine's load than wall time):")
        w("    backup  haven %.1f s / pg_dump -Fc %.1f s = %.2fx; restore incl. validation haven %.1f s / pg_restore %.1f s = %.2fx"
          % (ch[0], cb[0], ch[0] / cb[0], chr_[0], cr[0], chr_[0] / cr[0]))
    w("")
    w("repository vs dump: Haven repository %.1f MB = %.2fx the pg_dump -Fc file (%.1f MB)" % (
        mb(m["repo_bytes"]), m["repo_bytes"] / m["dump_size"], mb(m["dump_size"])))
    snd = [r for r in R.raw if r["phase"] == "backup-haven-2nd-report"]
    if snd:
        w("2nd backup added %.1f MB (median); repository then %.1f MB" % (
            mb(statistics.median(r["bytes_added"] for r in snd)), mb(statistics.median(r["repo_bytes"] for r in snd))))
    w("")
    w("raw (phase rep wall_s rss_MiB client_cpu_s server_cpu_s load1 | report fields):")
    for r in R.raw:
        if "wall_s" in r:
            w("  %-24s %d %8.2f %6.0f %7.2f %7.2f %5.2f" % (r["phase"], r["rep"], r["wall_s"], r["rss_kib"] / 1024,
                                                        r["client_cpu_s"], r["server_cpu_s"], r["load1"]))
        else:
            extra = " ".join("%s=%s" % (k, v) for k, v in r.items() if k not in ("phase", "rep"))
            w("  %-24s %d %s" % (r["phase"], r["rep"], extra))
    w("")
    w("bench run time %.0f s (incl. setup); logs %s" % (time.time() - m["started"], m["logdir"]))
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or os.path.join(REPO_ROOT, "bench", "results", "%s-postgres.txt" % now.strftime("%Y-%m-%d"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    with open(os.path.join(m["logdir"], "results.json"), "w") as f:
        json.dump({"raw": R.raw, "db_size": m["db_size"], "dump_size": m["dump_size"]}, f, indent=1)
    log("results written to %s" % out)


if __name__ == "__main__":
    main()
