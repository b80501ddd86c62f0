#!/usr/bin/env python3
"""
bench/pitr.py - physical PostgreSQL backups side by side: Haven (`mode = "physical"`,
`wal = "archive"`), pgBackRest and Barman on the same server, the same data and the same
traffic, in one run: day-1 base backup, day-2 backup after a burst of pgbench traffic, and a
restore of the latest state up to a promoted server, each verified against the source.

Python 3 standard library only; needs root (runuser to the postgres user, page-cache drop),
the PostgreSQL server packages (initdb, pg_ctl, pgbench from /usr/lib/postgresql/<v>/bin),
/usr/bin/time, and `apt-get install pgbackrest barman barman-cli` (installed when missing
unless --no-install).

    bash bench/pitr.sh                                               # full run: scale 150 (~2.2 GB)
    python3 bench/pitr.py --scale 10 --reps 1 --out /tmp/pitr-smoke.txt   # smoke run (~150 MB)

What it does:
  1. a pristine data dir: initdb (as postgres, via runuser) into WORK/pristine-s<scale>/data,
     trust authentication on loopback (replication included), fsync=on, wal_level=replica,
     archive_mode=on, max_wal_senders=10, shared_buffers=256MB, max_wal_size=2GB; database
     `bench` filled with `pgbench -i -s SCALE`, VACUUM ANALYZE, CHECKPOINT, server stopped.
     Kept and reused by later runs at the same scale.
  2. --reps repetitions (default 1) of every contestant in --tools (default
     haven,pgbackrest,barman); the contestant that goes first rotates each repetition. One
     contestant's run:
       setup    (untimed) `cp -a` of the pristine data dir to WORK/live/data, its
                archive_command in data/bench_archive.conf (included by postgresql.conf),
                server started on the run's port, a fresh repository, one WAL switch
                archived (Barman: `barman switch-wal --force --archive`, then `barman check`)
       day 1    base backup, timed
       day 2    (untimed) `pgbench -n -c 2 -j 2 -t N --random-seed=42 bench`, VACUUM,
                `pg_switch_wal()` and wait until the contestant has that segment
                (pg_stat_archiver.last_archived_wal; Barman: its wals/ directory); then a
                second backup, timed, and the repository's growth
       restore  the latest state into an empty data dir, timed until a server runs on it
                with recovery finished (pg_is_in_recovery() false); then the restored
                server is checked against the source: sum(abalance) and count(*) of
                pgbench_accounts, count(*) of pgbench_history
     Before every timed phase: CHECKPOINT on the source, `sync`, `echo 3 > drop_caches`.
     Commands (CFG = the contestant's config file in the run dir):
       haven       archive_command = 'haven wal push --config CFG bench db %p'
                   day 1 and day 2: haven tenant backup bench          (as postgres)
                   restore: haven tenant restore bench --component db --into bench-dr --latest
                   (bench-dr has data-dir and its own port; Haven starts and promotes it)
       pgbackrest  archive_command = 'pgbackrest --config=CFG --stanza=bench archive-push %p'
                   compress-type=lz4 process-max=2 start-fast=y; stanza-create untimed
                   day 1: --type=full backup; day 2: --type=incr backup  (as postgres)
                   restore: pgbackrest restore --pg1-path=NEW (recover to the end of the
                   archive), then pg_ctl start, wait until promoted
       barman      backup_method=postgres (pg_basebackup), streaming_archiver=on with slot
                   `barman` (receive-wal in the background), immediate_checkpoint=true,
                   parallel_jobs=2, archive_command = '/bin/true' on the server (Barman gets
                   WAL from the slot); runs as root (barman_user = root)
                   day 1 and day 2: barman backup --wait bench  (day 2 is a full backup: Barman
                   3.4 has no incremental backup with backup_method=postgres)
                   restore: barman recover bench latest NEW, chown -R postgres NEW, pg_ctl
                   start, wait until recovery is finished
     Timed commands run under /usr/bin/time -f '%e %M %U %S': wall s, peak RSS of the
     largest process of the tree, CPU s (user+sys) of the tool's process tree. The server's
     own CPU (postmaster and its children, from /proc) is reported separately.

Output: a table on stdout and in --out (default bench/results/<date>-pitr.txt); every
command's log and results.json in WORK/logs/<timestamp>/.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
TIME = "/usr/bin/time"
PASSWORD = "bench-password-not-secret"
TOOLS = ("haven", "pgbackrest", "barman")

# The helpers bench/postgres.py already has (the script's own folder is on sys.path).
from postgres import cpus, du, find_pg_bin, first_line, free_port, loadavg, rmtree  # noqa: E402


def log(msg):
    print("[pitr %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def die(msg):
    log("ERROR: " + msg)
    sys.exit(2)


class Failed(Exception):
    """A contestant failed: reported in the table, the run goes on with the next one."""


def mb(n):
    return n / 1e6


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--"] + list(cmd)


def chown_pg(path, recursive=False):
    subprocess.run(["chown"] + (["-R"] if recursive else []) + ["postgres:postgres", path], check=True)


def mkdir_pg(path, mode=0o755):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    chown_pg(path)


def write_pg(path, text):
    with open(path, "w") as f:
        f.write(text)
    chown_pg(path)


def run_logged(cmd, logf, env=None, check=True, what=None):
    """Run cmd (untimed), output appended to the open log file `logf`."""
    logf.write("\n$ %s\n" % " ".join(cmd))
    logf.flush()
    r = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise Failed("%s exited with %d (see %s)" % (what or " ".join(cmd[:6]), r.returncode, logf.name))
    return r.returncode


# ----------------------------------------------------------------------------- servers
class Pg:
    """A PostgreSQL server on data dir `data`, run as the postgres user."""

    def __init__(self, bin, data, port, sock, logfile, env=None):
        self.bin, self.data, self.port, self.sock, self.logfile, self.env = bin, data, port, sock, logfile, env

    def tool(self, name):
        return os.path.join(self.bin, name)

    def start(self, opts=""):
        open(self.logfile, "a").close()
        chown_pg(self.logfile)
        r = subprocess.run(as_postgres([self.tool("pg_ctl"), "start", "-w", "-s", "-t", "3600", "-D", self.data,
                                        "-l", self.logfile, "-o", ("-p %d " % self.port) + opts]),
                           env=self.env, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise Failed("pg_ctl start -D %s failed; see %s" % (self.data, self.logfile))

    def running(self):
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def stop(self, mode="fast"):
        if self.running():
            subprocess.run(as_postgres([self.tool("pg_ctl"), "stop", "-w", "-s", "-t", "600", "-m", mode,
                                        "-D", self.data]), check=False, stdin=subprocess.DEVNULL)

    def url(self, db):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def psql(self, db, sql, check=True):
        r = subprocess.run([self.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-d", self.url(db), "-c", sql], capture_output=True, text=True)
        if r.returncode != 0:
            if check:
                raise Failed("psql :%d %s: %s: %s" % (self.port, db, sql[:80], r.stderr.strip()))
            return None
        return r.stdout.strip()

    def wait_promoted(self, timeout):
        """Poll until the server accepts queries and is out of recovery."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.psql("postgres", "SELECT pg_is_in_recovery()", check=False) == "f":
                return
            if not self.running():
                raise Failed("the restored server stopped; see %s" % self.logfile)
            time.sleep(0.05)
        raise Failed("recovery of %s not finished after %d s" % (self.data, timeout))

    def cpu_seconds(self):
        """CPU (user+sys) since start of the postmaster and its children, live and reaped.
        Waits (up to 5 s) for backends/walsenders that are ending, so their time counts."""
        deadline = time.time() + 5
        while True:
            try:
                with open(os.path.join(self.data, "postmaster.pid")) as f:
                    pm = int(f.readline())
            except (OSError, ValueError):
                return 0.0
            total, busy = 0, False
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/stat" % pid) as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(pid) != pm and int(fields[1]) != pm:
                    continue
                busy |= fields[0] == "Z"
                total += sum(int(x) for x in fields[11:15])
            if not busy or time.time() > deadline:
                return total / os.sysconf("SC_CLK_TCK")
            time.sleep(0.05)

    def fingerprint(self):
        a = self.psql("bench", "SELECT sum(abalance)::text || ' ' || count(*)::text FROM pgbench_accounts")
        h = self.psql("bench", "SELECT count(*) FROM pgbench_history")
        return "accounts sum/count %s, history %s" % (a, h)


SERVER_CONF = """
# bench/pitr.py
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sock}'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 256MB
maintenance_work_mem = 256MB
max_wal_size = 2GB
max_connections = 40
wal_level = replica
archive_mode = on
archive_command = '/bin/true'
archive_timeout = 60
max_wal_senders = 10
max_replication_slots = 10
# the contestant's archive_command
include_if_exists = 'bench_archive.conf'
"""


def prepare_pristine(args, pg_bin, logdir):
    """The filled, stopped data dir every contestant starts from (reused across runs)."""
    d = os.path.join(args.work, "pristine-s%g" % args.scale)
    data = os.path.join(d, "data")
    marker = os.path.join(d, "READY")
    if pristine_db_bytes(data) is not None:
        log("reusing the pristine data dir %s" % data)
        return data
    if os.path.exists(os.path.join(data, "postmaster.pid")):
        Pg(pg_bin, data, 0, args.sock, os.devnull).stop("immediate")  # an interrupted fill
    rmtree(d)
    mkdir_pg(d)
    log("initdb into %s" % data)
    subprocess.run(as_postgres([os.path.join(pg_bin, "initdb"), "-D", data, "-U", "postgres", "-E", "UTF8",
                                "--no-locale", "--auth=trust"]), check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(SERVER_CONF.format(sock=args.sock))
    srv = Pg(pg_bin, data, free_port(), args.sock, os.path.join(logdir, "pristine-server.log"))
    srv.start()
    try:
        srv.psql("postgres", "CREATE DATABASE bench TEMPLATE template0")
        log("pgbench -i -s %g (fsync on; minutes at scale 150)" % args.scale)
        t0 = time.time()
        subprocess.run([srv.tool("pgbench"), "-i", "-q", "-s", "%g" % args.scale, "-h", "127.0.0.1",
                        "-p", str(srv.port), "-U", "postgres", "bench"], check=True, stdout=subprocess.DEVNULL,
                       stderr=open(os.path.join(logdir, "pgbench-init.log"), "w"))
        srv.psql("bench", "VACUUM ANALYZE")
        srv.psql("postgres", "CHECKPOINT")
        db_bytes = int(srv.psql("bench", "SELECT pg_database_size('bench')"))
        log("pgbench -i took %.0f s; database bench %.2f GB" % (time.time() - t0, db_bytes / 1e9))
    finally:
        srv.stop()
    with open(marker, "w") as f:
        json.dump({"scale": args.scale, "db_bytes": db_bytes}, f)
    return data


def pristine_db_bytes(data):
    try:
        with open(os.path.join(os.path.dirname(data), "READY")) as f:
            return json.load(f)["db_bytes"]
    except (OSError, ValueError, KeyError):
        return None


# ----------------------------------------------------------------------------- contestants
class Contestant:
    """One tool. `setup` returns the archive_command; the rest run with the live server up."""
    name = "?"

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = os.path.join(ctx.rundir, self.name)
        self.restore_dir = os.path.join(ctx.rundir, "restore-" + self.name)
        self.logf = None

    def version(self):
        return "?"

    def archive_command(self):
        raise NotImplementedError

    def init_repo(self, srv):
        pass

    def application_name(self):
        """The replication connection WAL reaches the tool through, if it streams."""
        return None

    def wait_archived(self, srv, segment):
        """Wait until `segment` (its WAL file name) is in the repository."""
        deadline = time.time() + self.ctx.args.wal_timeout
        failed0 = None
        while time.time() < deadline:
            row = srv.psql("postgres", "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver")
            last, failed = row.split("|")
            failed0 = failed if failed0 is None else failed0
            if last >= segment:
                if failed != failed0:
                    log("  note: %s: archive_command failed %s time(s) while waiting (retried)" % (
                        self.name, int(failed) - int(failed0)))
                return
            time.sleep(0.1)
        raise Failed("%s: segment %s not archived after %d s; see %s" % (
            self.name, segment, self.ctx.args.wal_timeout, srv.logfile))

    def repo(self):
        raise NotImplementedError

    def backup(self, day):
        """The command of the day-`day` backup."""
        raise NotImplementedError

    def restore_cmd(self):
        raise NotImplementedError

    def after_restore_cmd(self):
        """Untimed-by-/usr/bin/time steps inside the timed restore: start the server, wait."""
        pg = self.ctx.restored_pg(self)
        pg.start("-c archive_mode=off")
        pg.wait_promoted(self.ctx.args.recovery_timeout)

    def stop(self, srv):
        pass


class Haven(Contestant):
    name = "haven"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.cfg = os.path.join(self.dir, "haven.toml")
        self.work = os.path.join(self.dir, "work")
        self.env = dict(ctx.env, HAVEN_WORK_DIR=self.work, TMPDIR=self.work,
                        XDG_CACHE_HOME=os.path.join(self.dir, "cache"), HAVEN_CONFIG=self.cfg)

    def version(self):
        return first_line([self.ctx.haven, "--version"])

    def repo(self):
        return os.path.join(self.dir, "repo")

    def streaming(self):
        return self.ctx.args.haven_wal == "stream"

    def archive_command(self):
        if self.streaming():
            return "/bin/true"  # WAL reaches Haven through its replication slot
        return "%s wal push --config %s bench db %%p" % (self.ctx.haven, self.cfg)

    def init_repo(self, srv):
        mkdir_pg(self.dir)
        mkdir_pg(self.work, 0o700)
        mkdir_pg(os.path.join(self.dir, "cache"), 0o700)
        pw = os.path.join(self.dir, "password")
        write_pg(pw, PASSWORD)
        os.chmod(pw, 0o600)
        write_pg(self.cfg, """# written by bench/pitr.py
[repositories.bench]
url = "{repo}"
password-file = "{pw}"

[tenants.bench]
repository = "bench"
[tenants.bench.components.db]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:{port}/postgres"
mode = "physical"
wal = "{wal}"

[tenants.bench-dr]
repository = "bench"
[tenants.bench-dr.components.db]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:{drport}/postgres"
mode = "physical"
data-dir = "{restore}"
""".format(repo=self.repo(), pw=pw, port=srv.port, drport=self.ctx.drport, restore=self.restore_dir,
           wal=self.ctx.args.haven_wal))
        run_logged(as_postgres([self.ctx.haven, "init", "--repo", self.repo(), "--password-file", pw]),
                   self.logf, env=self.env, what="haven init")
        if self.streaming():
            # the receiver, in the background for the whole contestant run (its own session)
            self.receiver_log = os.path.join(self.ctx.logdir, "haven-rep%d-receiver.log" % self.rep)
            cmd = as_postgres([self.ctx.haven, "wal", "receive", "bench", "db",
                               "--spool", os.path.join(self.work, "spool")])
            self.logf.write("\n$ %s &   [output in %s]\n" % (" ".join(cmd), self.receiver_log))
            self.logf.flush()
            self.receiver = subprocess.Popen(cmd, stdout=open(self.receiver_log, "w"), stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)

    def application_name(self):
        return "haven_bench_db" if self.streaming() else None

    def wait_archived(self, srv, segment):
        if not self.streaming():
            return super().wait_archived(srv, segment)
        deadline = time.time() + self.ctx.args.wal_timeout
        while time.time() < deadline:
            if self.receiver.poll() is not None:
                raise Failed("haven wal receive ended with %d (see %s)" % (self.receiver.returncode,
                                                                           self.receiver_log))
            with open(self.receiver_log) as f:
                if ("stored %s (" % segment) in f.read():
                    return
            time.sleep(0.1)
        raise Failed("haven: segment %s not stored after %d s; see %s" % (segment, self.ctx.args.wal_timeout,
                                                                         self.receiver_log))

    def stop(self, srv):
        receiver = getattr(self, "receiver", None)
        if receiver and receiver.poll() is None:
            os.killpg(receiver.pid, signal.SIGTERM)
            try:
                receiver.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(receiver.pid, signal.SIGKILL)
                receiver.wait(timeout=30)
        self.receiver = None

    def backup(self, day):
        return as_postgres([self.ctx.haven, "--json", "tenant", "backup", "bench"]), self.env

    def restore_cmd(self, at=None):
        target = ["--at", at.replace(" ", "T").replace("+00", "Z")] if at else ["--latest"]
        return as_postgres([self.ctx.haven, "--json", "tenant", "restore", "bench", "--component", "db",
                            "--into", "bench-dr", "--force"] + target), self.env

    def after_restore_cmd(self):
        pass  # Haven started the server and waited for the promotion itself


class PgBackRest(Contestant):
    name = "pgbackrest"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.cfg = os.path.join(self.dir, "pgbackrest.conf")

    def version(self):
        return first_line(["pgbackrest", "version"])

    def repo(self):
        return os.path.join(self.dir, "repo")

    def archive_command(self):
        return "pgbackrest --config=%s --stanza=bench archive-push %%p" % self.cfg

    def cmd(self, *args):
        return as_postgres(["pgbackrest", "--config=%s" % self.cfg, "--stanza=bench"] + list(args))

    def init_repo(self, srv):
        mkdir_pg(self.dir)
        for sub in ("repo", "log", "lock", "spool"):
            mkdir_pg(os.path.join(self.dir, sub), 0o750)
        write_pg(self.cfg, """# written by bench/pitr.py
[global]
repo1-path={dir}/repo
log-path={dir}/log
lock-path={dir}/lock
spool-path={dir}/spool
log-level-console=info
log-level-file=detail
compress-type=lz4
process-max=2
start-fast=y
repo1-retention-full=9999999

[bench]
pg1-path={data}
pg1-port={port}
pg1-socket-path={sock}
pg1-user=postgres
""".format(dir=self.dir, data=srv.data, port=srv.port, sock=self.ctx.args.sock))
        run_logged(self.cmd("stanza-create"), self.logf, what="pgbackrest stanza-create")

    def after_archive_check(self):
        run_logged(self.cmd("check"), self.logf, what="pgbackrest check")

    def backup(self, day):
        return self.cmd("--type=%s" % ("full" if day == 1 else "incr"), "backup"), None

    def restore_cmd(self, at=None):
        target = []
        if at:
            # the day-1 backup (its automatic choice by time does not parse microseconds)
            info = subprocess.run(self.cmd("--output=json", "info"), capture_output=True, text=True, check=True)
            first = json.loads(info.stdout)[0]["backup"][0]["label"]
            target = ["--type=time", "--target=%s" % at, "--target-action=promote", "--set=%s" % first]
        return self.cmd("--pg1-path=%s" % self.restore_dir, *target, "restore"), None


class Barman(Contestant):
    name = "barman"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.cfg = os.path.join(self.dir, "barman.conf")
        self.home = os.path.join(self.dir, "home")
        self.receiver = None

    def version(self):
        return "barman " + first_line(["barman", "--version"]).split()[0]

    def repo(self):
        return os.path.join(self.home, "bench")

    def archive_command(self):
        return "/bin/true"  # WAL reaches Barman through its replication slot

    def cmd(self, *args):
        return ["barman", "-c", self.cfg] + list(args)

    def init_repo(self, srv):
        os.makedirs(self.home)
        with open(self.cfg, "w") as f:
            f.write("""; written by bench/pitr.py
[barman]
barman_home = {home}
barman_user = root
log_file = {dir}/barman.log
log_level = INFO
parallel_jobs = 2

[bench]
description = "bench/pitr.py"
conninfo = host=127.0.0.1 port={port} user=postgres dbname=postgres
streaming_conninfo = host=127.0.0.1 port={port} user=postgres
backup_method = postgres
streaming_archiver = on
archiver = off
slot_name = barman
create_slot = auto
immediate_checkpoint = true
path_prefix = {bin}
""".format(home=self.home, dir=self.dir, port=srv.port, bin=self.ctx.pg_bin))
        run_logged(self.cmd("receive-wal", "--create-slot", "bench"), self.logf, what="barman receive-wal --create-slot")
        # the WAL receiver, in the background for the whole contestant run (its own session,
        # so that stopping it also stops its pg_receivewal)
        self.logf.write("\n$ %s &\n" % " ".join(self.cmd("receive-wal", "bench")))
        self.logf.flush()
        self.receiver = subprocess.Popen(self.cmd("receive-wal", "bench"), stdout=self.logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        time.sleep(1)
        if self.receiver.poll() is not None:
            raise Failed("barman receive-wal exited at once with %d (see %s)" % (self.receiver.returncode, self.logf.name))

    def switch_and_check(self):
        run_logged(self.cmd("switch-wal", "--force", "--archive", "--archive-timeout", str(self.ctx.args.wal_timeout),
                            "bench"), self.logf, what="barman switch-wal --force --archive")
        self.logf.write("\n$ %s\n" % " ".join(self.cmd("check", "bench")))
        self.logf.flush()
        r = subprocess.run(self.cmd("check", "bench"), capture_output=True, text=True)
        self.logf.write(r.stdout + r.stderr)
        self.logf.flush()
        if r.returncode != 0:
            bad = [l.strip() for l in r.stdout.splitlines() if "FAILED" in l]
            raise Failed("barman check failed: %s" % "; ".join(bad or [r.stderr.strip()[:200]]))

    def wait_archived(self, srv, segment):
        path = os.path.join(self.repo(), "wals", segment[:16], segment)
        deadline = time.time() + self.ctx.args.wal_timeout
        while time.time() < deadline:
            if self.receiver.poll() is not None:
                raise Failed("barman receive-wal ended with %d (see %s)" % (self.receiver.returncode, self.logf.name))
            run_logged(self.cmd("archive-wal", "bench"), self.logf, what="barman archive-wal")
            if os.path.exists(path):
                return
            time.sleep(0.5)
        raise Failed("barman: segment %s not archived after %d s" % (segment, self.ctx.args.wal_timeout))

    def backup(self, day):
        return self.cmd("backup", "--wait", "--wait-timeout", str(self.ctx.args.wal_timeout), "bench"), None

    def restore_cmd(self, at=None):
        if at:
            # the day-1 backup: the newest that ended before the target
            return self.cmd("recover", "--target-time", at, "--target-action", "promote", "bench", "oldest",
                            self.restore_dir), None
        return self.cmd("recover", "bench", "latest", self.restore_dir), None

    def application_name(self):
        return "barman_receive_wal"

    def after_restore_cmd(self):
        # Barman ran as root: the files are root's (over ssh as postgres they would not be)
        chown_pg(self.restore_dir, recursive=True)
        os.chmod(self.restore_dir, 0o700)
        super().after_restore_cmd()

    def stop(self, srv):
        # SIGINT to the session we started (barman receive-wal and its pg_receivewal):
        # both end cleanly on it
        if self.receiver and self.receiver.poll() is None:
            os.killpg(self.receiver.pid, signal.SIGINT)
            try:
                self.receiver.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.receiver.pid, signal.SIGKILL)
                self.receiver.wait(timeout=30)


# ----------------------------------------------------------------------------- one run
class Ctx:
    """What every contestant shares: paths, ports, the haven binary."""

    def __init__(self, args, pg_bin, haven, logdir):
        self.args, self.pg_bin, self.haven, self.logdir = args, pg_bin, haven, logdir
        self.rundir = os.path.join(args.work, "run")
        self.live = os.path.join(args.work, "live")
        self.port = free_port()
        self.drport = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("HAVEN_", "PG", "BARMAN_", "PGBACKREST_"))}
        self.raw = []

    def restored_pg(self, c):
        return Pg(self.pg_bin, c.restore_dir, self.drport, self.args.sock,
                  os.path.join(self.logdir, "%s-rep%d-restored-server.log" % (c.name, c.rep)))

    def stop_leftovers(self):
        """Servers an interrupted earlier run of this script left running in its work dir."""
        dirs = [os.path.join(self.live, "data")] + [os.path.join(self.rundir, "restore-" + t) for t in TOOLS]
        for d in dirs:
            if os.path.exists(os.path.join(d, "postmaster.pid")):
                log("stopping a server an earlier run left in %s" % d)
                Pg(self.pg_bin, d, 0, self.args.sock, os.devnull).stop("immediate")

    def cold(self, srv):
        srv.psql("postgres", "CHECKPOINT")
        os.sync()
        if not self.args.no_drop_caches:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")

    def timed(self, c, label, cmd, env, srv):
        """cmd under /usr/bin/time; returns (figures, stdout). Output goes to the contestant's log."""
        tfile = os.path.join(self.logdir, "time.txt")
        out = os.path.join(self.logdir, "stdout.txt")
        c.logf.write("\n$ %s   [timed: %s]\n" % (" ".join(cmd), label))
        c.logf.flush()
        load = loadavg()[0]
        scpu0 = srv.cpu_seconds()
        with open(out, "w") as of:
            t0 = time.time()
            r = subprocess.run([TIME, "-o", tfile, "-f", "%e %M %U %S"] + cmd, stdout=of, stderr=c.logf,
                               env=env or self.env, stdin=subprocess.DEVNULL)
            wall_py = time.time() - t0
        with open(out) as f:
            text = f.read()
        c.logf.write(text)
        c.logf.flush()
        if r.returncode != 0:
            raise Failed("%s: %s exited with %d (see %s)" % (c.name, label, r.returncode, c.logf.name))
        with open(tfile) as f:
            last = f.read().strip().splitlines()[-1].split()
        fig = {"wall_s": float(last[0]), "wall_py_s": wall_py, "rss_kib": int(last[1]),
               "cpu_s": round(float(last[2]) + float(last[3]), 2),
               "srv_cpu_s": round(srv.cpu_seconds() - scpu0, 2), "load1": load}
        return fig, text


def run_contestant(ctx, c, rep, pristine):
    """One contestant's run; returns its record (raises Failed)."""
    args = ctx.args
    rec = {"tool": c.name, "rep": rep}
    rmtree(c.dir)
    rmtree(c.restore_dir)
    rmtree(ctx.live)
    mkdir_pg(ctx.rundir)
    os.makedirs(c.dir, exist_ok=True)
    c.logf = open(os.path.join(ctx.logdir, "%s-rep%d.log" % (c.name, rep)), "w")
    srv = Pg(ctx.pg_bin, os.path.join(ctx.live, "data"), ctx.port, args.sock,
             os.path.join(ctx.logdir, "%s-rep%d-server.log" % (c.name, rep)), env=None)
    c.rep = rep
    restored = ctx.restored_pg(c)
    try:
        log("%s: setup (cp -a pristine, archive_command, fresh repository)" % c.name)
        mkdir_pg(ctx.live)
        subprocess.run(["cp", "-a", pristine, srv.data], check=True)
        write_pg(os.path.join(srv.data, "bench_archive.conf"),
                 "archive_command = '%s'\narchive_timeout = 60\n" % c.archive_command().replace("'", "''"))
        if isinstance(c, Haven):
            srv.env = c.env  # the archive_command's environment (work dir, cache)
        srv.start()
        c.init_repo(srv)
        if isinstance(c, Barman):
            c.switch_and_check()
        else:
            seg = srv.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
            c.wait_archived(srv, seg)
            if isinstance(c, PgBackRest):
                c.after_archive_check()

        # day 1
        ctx.cold(srv)
        cmd, env = c.backup(1)
        fig, out = ctx.timed(c, "day-1 backup", cmd, env, srv)
        rec["d1"] = fig
        rec["repo_d1"] = du(c.repo())
        if isinstance(c, Haven):
            rec["d1_report"] = haven_backup_report(out)
        log("  %-10s day-1 backup %7.2f s  cpu %6.2f s  srv_cpu %6.2f s  %5.0f MiB  repo %8.1f MB" % (
            c.name, fig["wall_s"], fig["cpu_s"], fig["srv_cpu_s"], fig["rss_kib"] / 1024, mb(rec["repo_d1"])))

        # day-2 traffic
        lsn0 = srv.psql("postgres", "SELECT pg_current_wal_lsn()")
        scpu0 = srv.cpu_seconds()
        t0 = time.time()
        # two halves; between them (no traffic) the moment the middle restore targets
        half = max(1, args.transactions // 2)
        for seed in (42, 43):
            run_logged([srv.tool("pgbench"), "-n", "-c", "2", "-j", "2", "-t", str(half),
                        "--random-seed=%d" % seed, "-h", "127.0.0.1", "-p", str(srv.port), "-U", "postgres",
                        "bench"], c.logf, what="pgbench")
            if seed == 42:
                rec["mid_source"] = srv.fingerprint()
                rec["mid_time"] = srv.psql("postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                                       "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
                srv.psql("postgres", "SELECT pg_sleep(0.01)")
        rec["pgbench_s"] = time.time() - t0
        srv.psql("bench", "VACUUM")
        t1 = time.time()
        seg = srv.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        # one commit into the next segment: a streaming receiver (Barman) closes the switched
        # segment only when WAL after it arrives (an idle server writes some only every 15 s)
        srv.psql("postgres", "SELECT txid_current()")
        c.wait_archived(srv, seg)
        rec["drain_s"] = time.time() - t1
        rec["traffic_srv_cpu_s"] = srv.cpu_seconds() - scpu0
        rec["wal_bytes"] = int(srv.psql("postgres", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')" % lsn0))
        rec["source"] = srv.fingerprint()
        rec["repo_before_d2"] = du(c.repo())
        log("  %-10s day-2 traffic: pgbench %.1f s, %.1f MB of WAL, archive caught up %.1f s after the switch" % (
            c.name, rec["pgbench_s"], mb(rec["wal_bytes"]), rec["drain_s"]))

        # day 2
        ctx.cold(srv)
        cmd, env = c.backup(2)
        fig, out = ctx.timed(c, "day-2 backup", cmd, env, srv)
        rec["d2"] = fig
        rec["repo_d2"] = du(c.repo())
        if isinstance(c, Haven):
            rec["d2_report"] = haven_backup_report(out)
        log("  %-10s day-2 backup %7.2f s  cpu %6.2f s  srv_cpu %6.2f s  growth %8.1f MB (WAL of day 2 %.1f MB)" % (
            c.name, fig["wall_s"], fig["cpu_s"], fig["srv_cpu_s"], mb(rec["repo_d2"] - rec["repo_before_d2"]),
            mb(rec["repo_before_d2"] - rec["repo_d1"])))

        # restore of the latest state, then to the middle of day 2 (day-1 base + half the WAL)
        rec["restore"] = restore_phase(ctx, c, srv, restored, rec, "restore", None, rec["source"])
        if rec.get("error"):
            return rec
        rec["restore_mid"] = restore_phase(ctx, c, srv, restored, rec, "restore-mid", rec["mid_time"],
                                           rec["mid_source"])
        if rec.get("error"):
            return rec
        if args.sustain > 0:
            rec["sustain"] = sustained_archiving(ctx, c, srv)
        rec["rpo"] = rpo_after_kill(ctx, c, srv, restored)
    except Failed as e:
        rec["error"] = str(e)
        log("  %s FAILED: %s" % (c.name, e))
    finally:
        restored.stop("immediate")
        c.stop(srv)
        srv.stop()
        c.logf.close()
        if not args.keep:
            rmtree(c.restore_dir)
            rmtree(c.dir)
            rmtree(ctx.live)
    return rec


def restore_phase(ctx, c, srv, restored, rec, label, at, expected):
    """A timed restore into c.restore_dir (emptied first) up to a promoted server, checked."""
    restored.stop("immediate")
    rmtree(c.restore_dir)
    if isinstance(c, PgBackRest):
        mkdir_pg(c.restore_dir, 0o700)
    ctx.cold(srv)
    t0 = time.time()
    cmd, env = c.restore_cmd(at)
    fig, out = ctx.timed(c, label, cmd, env, srv)
    tool_s = time.time() - t0
    c.after_restore_cmd()
    fig["tool_s"] = fig["wall_s"]
    fig["wall_s"] = time.time() - t0
    fig["recovery_s"] = fig["wall_s"] - tool_s
    if isinstance(c, Haven):
        comp = json.loads(out)["components"][0]
        fig["report"] = {k: comp.get(k) for k in ("outcome", "restore_seconds", "validate_seconds")}
        if comp.get("outcome") != "passed":
            raise Failed("haven %s: %s: %s" % (label, comp.get("outcome"), comp.get("error")))
    got = restored.fingerprint()
    fig["restored"] = got
    fig["verified"] = got == expected
    log("  %-10s %-11s %7.2f s (tool %.2f s + start/recovery %.2f s)  cpu %.2f s  %s" % (
        c.name, label, fig["wall_s"], fig["tool_s"], fig["recovery_s"], fig["cpu_s"],
        "VERIFIED" if fig["verified"] else "MISMATCH: %s, expected %s" % (got, expected)))
    if not fig["verified"]:
        rec["error"] = "%s: restored %s, expected %s" % (label, got, expected)
    return fig


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def segment_end(name, segsize=16 << 20):
    """The LSN just past WAL segment `name` (TTTTTTTTXXXXXXXXYYYYYYYY)."""
    return (int(name[8:16], 16) << 32) + (int(name[16:24], 16) + 1) * segsize


def sustained_archiving(ctx, c, srv):
    """pgbench -c 4 for --sustain seconds; every 0.5 s: how far the tool's copy of the WAL is behind the
    server (archive_command tools: the end of pg_stat_archiver.last_archived_wal; streaming tools: the
    flush position their replication connection reports) and the size of the server's pg_wal."""
    args = ctx.args
    app = c.application_name()
    log("  %-10s sustained archiving: pgbench -c 4 -j 2 -T %d" % (c.name, args.sustain))
    lsn0 = srv.psql("postgres", "SELECT pg_current_wal_lsn()")
    bench = subprocess.Popen([srv.tool("pgbench"), "-n", "-c", "4", "-j", "2", "-T", str(args.sustain),
                              "-h", "127.0.0.1", "-p", str(srv.port), "-U", "postgres", "bench"],
                             stdout=c.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    lags, walsizes = [], []
    while bench.poll() is None:
        if app:
            row = srv.psql("postgres", "SELECT pg_current_wal_lsn(), coalesce((SELECT flush_lsn FROM "
                           "pg_stat_replication WHERE application_name = '%s' ORDER BY flush_lsn DESC LIMIT 1)::text, "
                           "'0/0'), (SELECT sum(size) FROM pg_ls_waldir())" % app, check=False)
            if row:
                cur, flushed, wal = row.split("|")
                lags.append(max(0, lsn_int(cur) - lsn_int(flushed)))
        else:
            row = srv.psql("postgres", "SELECT pg_current_wal_lsn(), coalesce(last_archived_wal, ''), "
                           "(SELECT sum(size) FROM pg_ls_waldir()) FROM pg_stat_archiver", check=False)
            if row:
                cur, archived, wal = row.split("|")
                if len(archived) >= 24 and archived[:24].isalnum():
                    lags.append(max(0, lsn_int(cur) - segment_end(archived[:24])))
        if row:
            walsizes.append(int(wal))
        time.sleep(0.5)
    if bench.returncode != 0:
        raise Failed("%s: pgbench -T %d failed (see %s)" % (c.name, args.sustain, c.logf.name))
    wal_bytes = int(srv.psql("postgres", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')" % lsn0))
    t1 = time.time()
    seg = srv.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
    srv.psql("postgres", "SELECT txid_current()")
    c.wait_archived(srv, seg)
    fig = {"wal_bytes": wal_bytes, "lag_max": max(lags or [0]), "lag_mean": statistics.mean(lags or [0]),
           "samples": len(lags), "pg_wal_max": max(walsizes or [0]), "drain_s": time.time() - t1}
    log("  %-10s sustained: %.0f MB of WAL in %d s; behind the server max %.1f MB, mean %.1f MB; pg_wal max "
        "%.0f MB; caught up %.1f s after the end" % (c.name, mb(wal_bytes), args.sustain, mb(fig["lag_max"]),
                                                     mb(fig["lag_mean"]), mb(fig["pg_wal_max"]), fig["drain_s"]))
    return fig


def rpo_after_kill(ctx, c, srv, restored):
    """A writer commits a timestamped row every 50 ms for --rpo-window s; kill -9 of the postmaster; the
    server's data dir counts as lost; restore of the latest state from the tool's repository: the RPO is the
    newest acknowledged row's time minus the newest restored row's time."""
    args = ctx.args
    srv.psql("bench", "CREATE TABLE rpo (id serial PRIMARY KEY, at timestamptz NOT NULL)")
    seg = srv.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
    srv.psql("postgres", "SELECT txid_current()")
    c.wait_archived(srv, seg)  # the table itself is in every tool's archive
    writer = subprocess.Popen([srv.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-d", srv.url("bench")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, bufsize=1)
    first = last = None
    t_end = time.time() + args.rpo_window
    while time.time() < t_end:
        writer.stdin.write("INSERT INTO rpo (at) VALUES (clock_timestamp()) "
                           "RETURNING (extract(epoch FROM at) * 1000)::bigint;\n")
        writer.stdin.flush()
        ack = int(writer.stdout.readline().strip())
        first = ack if first is None else first
        last = ack
        time.sleep(0.05)
    with open(os.path.join(srv.data, "postmaster.pid")) as f:
        pm = int(f.readline())
    os.kill(pm, signal.SIGKILL)
    writer.kill()
    writer.wait()
    time.sleep(args.rpo_grace)  # what the tool may still write after the crash (its receiver's last flush)
    c.stop(srv)
    restored.stop("immediate")
    rmtree(c.restore_dir)
    if isinstance(c, PgBackRest):
        mkdir_pg(c.restore_dir, 0o700)
    cmd, env = c.restore_cmd(None)
    run_logged(cmd, c.logf, env=env, what="%s restore after the kill" % c.name)
    c.after_restore_cmd()
    newest = restored.psql("bench", "SELECT coalesce(max((extract(epoch FROM at) * 1000)::bigint), 0) FROM rpo",
                           check=False)
    newest = int(newest) if newest else 0
    rpo_ms = last - newest if newest else last - first
    fig = {"acked_rows": None, "window_s": args.rpo_window, "rpo_ms": rpo_ms, "nothing": not newest}
    log("  %-10s RPO after kill -9: newest restored row %s ms behind the newest acknowledged one%s" % (
        c.name, rpo_ms, " (none of the window restored)" if not newest else ""))
    return fig


def haven_backup_report(out):
    try:
        comp = json.loads(out)["components"]["db"]
    except (ValueError, KeyError, TypeError):
        return None
    return {k: comp.get(k) for k in ("seconds", "bytes", "bytes_added") if k in comp}


# ----------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--scale", type=float, default=150, help="pgbench scale (150 = ~2.2 GB)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--transactions", type=int, default=None,
                   help="day-2 pgbench -t per client (2 clients; default 20000 * scale / 150, at least 500)")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--work", default=os.path.join(REPO_ROOT, "bench", "work", "pitr"))
    p.add_argument("--out", default=None, help="results file (default bench/results/<date>-pitr.txt)")
    p.add_argument("--haven", default=None, help="use this haven binary (no build)")
    p.add_argument("--no-build", action="store_true", help="use target/release/haven as it is")
    p.add_argument("--no-install", action="store_true", help="never apt-get install pgbackrest/barman")
    p.add_argument("--no-drop-caches", action="store_true")
    p.add_argument("--wal-timeout", type=int, default=900, help="seconds to wait for a WAL segment to be archived")
    p.add_argument("--recovery-timeout", type=int, default=3600)
    p.add_argument("--keep", action="store_true", help="keep repositories and restored data dirs")
    p.add_argument("--prepare-only", action="store_true", help="make the pristine data dir, then stop")
    p.add_argument("--haven-wal", choices=("stream", "archive"), default="stream",
                   help="Haven's WAL mode (stream: `haven wal receive` on a slot, as recommended)")
    p.add_argument("--sustain", type=int, default=120, help="seconds of pgbench -c 4 for the archiving lag (0: skip)")
    p.add_argument("--rpo-window", type=float, default=10, help="seconds the RPO writer commits before the kill")
    p.add_argument("--rpo-grace", type=float, default=2, help="seconds tools get after the kill before the restore")
    args = p.parse_args()
    args.work = os.path.abspath(args.work)
    args.sock = os.path.join(args.work, "sock")
    if args.transactions is None:
        args.transactions = max(500, int(round(20000 * args.scale / 150)))
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in TOOLS:
            die("unknown tool %r (known: %s)" % (t, ", ".join(TOOLS)))
    if os.geteuid() != 0:
        die("run as root (runuser to the postgres user, page-cache drop)")
    if not os.access(TIME, os.X_OK):
        die("%s missing: apt-get install time" % TIME)
    needs = {"pgbackrest": [("pgbackrest", "pgbackrest")],
             "barman": [("barman", "barman"), ("barman-cli", "barman-wal-restore")]}
    missing = [pkg for t in tools for pkg, exe in needs.get(t, []) if not shutil.which(exe)]
    if missing:
        if args.no_install:
            die("missing: %s (apt-get install %s)" % (", ".join(missing), " ".join(missing)))
        log("apt-get install -y %s" % " ".join(missing))
        subprocess.run(["apt-get", "install", "-y"] + missing, check=True)
    started = time.time()
    logdir = os.path.join(args.work, "logs", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(logdir)
    for d in (os.path.join(REPO_ROOT, "bench", "work"), args.work, os.path.join(args.work, "logs"), logdir):
        os.chmod(d, 0o755)  # the postgres user reaches its folders and writes server logs here
    chown_pg(logdir)
    mkdir_pg(args.sock)
    pg_bin = find_pg_bin()

    # haven: a private copy, so that a build in the checkout cannot swap it mid-run
    src = os.path.abspath(args.haven) if args.haven else os.path.join(REPO_ROOT, "target", "release", "haven")
    if not args.haven and not args.no_build:
        log("cargo build --release -p haven")
        subprocess.run(["cargo", "build", "--release", "-p", "haven"], cwd=REPO_ROOT, check=True)
    if not os.access(src, os.X_OK):
        die("no haven binary at %s" % src)
    os.makedirs(os.path.join(args.work, "bin"), exist_ok=True)
    haven = os.path.join(args.work, "bin", "haven")
    shutil.copy2(src, haven + ".new")
    os.chmod(haven + ".new", 0o755)
    os.replace(haven + ".new", haven)

    pristine = prepare_pristine(args, pg_bin, logdir)
    if args.prepare_only:
        return
    ctx = Ctx(args, pg_bin, haven, logdir)
    ctx.haven_src = src
    ctx.stop_leftovers()
    classes = {"haven": Haven, "pgbackrest": PgBackRest, "barman": Barman}
    contestants = [classes[t](ctx) for t in tools]
    load_before = loadavg()
    records = []
    for rep in range(1, args.reps + 1):
        shift = (rep - 1) % len(contestants)
        order = contestants[shift:] + contestants[:shift]
        log("rep %d/%d, order: %s" % (rep, args.reps, ", ".join(c.name for c in order)))
        for c in order:
            records.append(run_contestant(ctx, c, rep, pristine))
    load_after = loadavg()
    report(args, ctx, contestants, records, dict(started=started, load_before=load_before, load_after=load_after,
                                                 logdir=logdir, pristine=pristine))
    if any("error" in r for r in records):
        sys.exit(1)


# ----------------------------------------------------------------------------- report
def med(records, tool, *keys):
    xs = []
    for r in records:
        if r["tool"] != tool or "error" in r:
            continue
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            xs.append(v)
    return statistics.median(xs) if xs else None


def report(args, ctx, contestants, records, m):
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
    tools = [c.name for c in contestants]
    w("Haven PITR benchmark: physical PostgreSQL backups, Haven vs pgBackRest vs Barman  %s  scale %g  reps %d"
      % (now.strftime("%Y-%m-%d %H:%M"), args.scale, args.reps))
    w("machine: nproc %d, kernel %s, %.1f GiB RAM, %s" % (cpus(), platform.release(), mem, cpu))
    w("command: %s (nice %d)" % (" ".join(["python3", "bench/pitr.py"] + sys.argv[1:]), os.nice(0)))
    w("tools:   %s; %s" % ("; ".join(c.version() for c in contestants),
                           first_line([os.path.join(ctx.pg_bin, "postgres"), "--version"])))
    head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--", "crates", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    w("haven:   %s (copy of %s), checkout at %s%s" % (ctx.haven, ctx.haven_src, head or "?",
                                                    " (with uncommitted changes under crates/)" if dirty else ""))
    w("server:  PostgreSQL 15 of its own (initdb, 127.0.0.1, trust incl. replication), fsync=on synchronous_commit=on")
    w("         full_page_writes=on wal_level=replica archive_mode=on max_wal_senders=10 shared_buffers=256MB")
    w("         max_wal_size=2GB; every contestant starts from a `cp -a` of the same pristine data dir")
    size = None
    try:
        size = du(m["pristine"])
    except subprocess.CalledProcessError:
        pass
    db = pristine_db_bytes(m["pristine"])
    w("data:    pgbench -i -s %g: database bench %s GB (pg_database_size); pristine data dir %.2f GB (du -sb,"
      % (args.scale, "%.2f" % (db / 1e9) if db else "?", (size or 0) / 1e9))
    w("         pg_wal included)")
    w("day 2:   pgbench -n -c 2 -j 2 -t %d --random-seed=42 (%d transactions), VACUUM, pg_switch_wal(), wait"
      % (args.transactions, 2 * args.transactions))
    w("         until the contestant has the segment (untimed)")
    w("load:    1/5/15-min load average before %.2f %.2f %.2f, after %.2f %.2f %.2f (shared machine)"
      % (m["load_before"] + m["load_after"]))
    w("method:  contestants one after another, the first rotating each rep; before every timed phase CHECKPOINT,")
    w("         sync, `echo 3 > /proc/sys/vm/drop_caches`%s; /usr/bin/time -f '%%e %%M %%U %%S' (cpu = user+sys of"
      % (" (SKIPPED: --no-drop-caches)" if args.no_drop_caches else ""))
    w("         the tool's process tree; srv = the server's own CPU over the phase, from /proc); medians over reps")
    w("settings:")
    if args.haven_wal == "stream":
        w("  haven       mode=physical wal=stream: `haven wal receive bench db` on slot haven_bench_db in the")
        w("              background (archive_command '/bin/true');")
    else:
        w("  haven       mode=physical wal=archive: archive_command 'haven wal push --config CFG bench db %p';")
    w("              backups `haven tenant backup bench` (base-backup = auto: the data directory read as files")
    w("              between pg_backup_start/stop, zstd level 1, content-defined chunks, encrypted; day 2 reuses")
    w("              unchanged files); restore `haven tenant restore bench --component db --into bench-dr --latest`")
    w("              or `--at T` (Haven stages the WAL, starts the server, waits for the promotion, runs its probe)")
    w("  pgbackrest  compress-type=lz4 process-max=2 start-fast=y, no encryption (its default); archive_command")
    w("              'pgbackrest --stanza=bench archive-push %p'; day 1 --type=full, day 2 --type=incr; restore")
    w("              `pgbackrest restore --pg1-path=NEW` (to the end of the archive; middle: --type=time --target=T")
    w("              --target-action=promote), pg_ctl start, wait for promotion")
    w("  barman      backup_method=postgres (pg_basebackup), streaming_archiver=on + slot, receive-wal in the")
    w("              background, immediate_checkpoint=true, parallel_jobs=2, no compression (its default), runs as")
    w("              root; `barman backup --wait` both days (day 2 is FULL: no incremental with backup_method")
    w("              =postgres in Barman 3.4); restore `barman recover bench latest NEW` (middle: --target-time T")
    w("              --target-action promote bench oldest NEW), chown -R postgres, pg_ctl start, wait for promotion")
    w("  middle    = a restore to the moment between the two halves of day 2's traffic (the day-1 base backup plus")
    w("              half of day 2's WAL replayed), checked against the source's state at that moment")
    w("  sustained = pgbench -n -c 4 -j 2 -T %d after the restores; every 0.5 s how far the tool's copy of the WAL" % args.sustain)
    w("              is behind pg_current_wal_lsn() (archive_command: the end of last_archived_wal; streaming: the")
    w("              flush_lsn of the tool's replication connection) and sum(size) of pg_ls_waldir()")
    w("  RPO       = a writer commits a timestamped row every 50 ms for %g s, kill -9 of the postmaster, %g s for" % (args.rpo_window, args.rpo_grace))
    w("              the tools' receivers, then the latest state restored from the repository (the source's data")
    w("              dir counts as lost): newest acknowledged row's time minus newest restored row's time;")
    w("              archive_timeout = 60 on the server (bounds archive_command tools' RPO)")
    w("  restore s = from the restore command's start until pg_is_in_recovery() is false on the new server")
    w("")
    hdr = "%-11s %8s %7s %7s %8s | %8s %8s %7s %9s | %8s %7s %7s %7s | %s"
    w(hdr % ("tool", "d1_s", "d1_cpu", "d1_srv", "repo_MB", "d2wal_MB", "d2_s", "d2_cpu", "d2grow_MB",
             "rest_s", "r_tool", "r_recov", "r_cpu", "verified"))
    w("-" * 134)
    fmt = lambda v, f="%.2f": "-" if v is None else f % v
    for t in tools:
        ok = [r for r in records if r["tool"] == t and "error" not in r]
        if not ok:
            errs = [r["error"] for r in records if r["tool"] == t and "error" in r]
            w("%-11s FAILED: %s" % (t, errs[0] if errs else "not run"))
            continue
        repo_d1 = med(records, t, "repo_d1")
        d2wal = statistics.median(r["repo_before_d2"] - r["repo_d1"] for r in ok)
        grow = statistics.median(r["repo_d2"] - r["repo_before_d2"] for r in ok)
        w(hdr % (t, fmt(med(records, t, "d1", "wall_s")), fmt(med(records, t, "d1", "cpu_s"), "%.1f"),
                 fmt(med(records, t, "d1", "srv_cpu_s"), "%.1f"), fmt(mb(repo_d1), "%.1f"),
                 fmt(mb(d2wal), "%.1f"), fmt(med(records, t, "d2", "wall_s")), fmt(med(records, t, "d2", "cpu_s"), "%.1f"),
                 fmt(mb(grow), "%.1f"), fmt(med(records, t, "restore", "wall_s")),
                 fmt(med(records, t, "restore", "tool_s")), fmt(med(records, t, "restore", "recovery_s")),
                 fmt(med(records, t, "restore", "cpu_s"), "%.1f"),
                 "%d/%d" % (sum(1 for r in ok if r.get("restore", {}).get("verified")),
                            len([r for r in records if r["tool"] == t]))))
    w("")
    hdr2 = "%-11s %9s %8s | %10s %10s %10s %9s %8s | %10s | %s"
    w(hdr2 % ("tool", "mid_s", "mid_rec", "WAL_MB", "lagmax_MB", "lagmean_MB", "pgwal_MB", "drain_s", "RPO_ms",
              "middle verified"))
    w("-" * 110)
    for t in tools:
        ok = [r for r in records if r["tool"] == t and "error" not in r]
        if not ok:
            continue
        rpo = [r["rpo"]["rpo_ms"] for r in ok if "rpo" in r]
        none = any(r["rpo"].get("nothing") for r in ok if "rpo" in r)
        w(hdr2 % (t, fmt(med(records, t, "restore_mid", "wall_s")), fmt(med(records, t, "restore_mid", "recovery_s")),
                  fmt(mb(med(records, t, "sustain", "wal_bytes") or 0), "%.0f"),
                  fmt(mb(med(records, t, "sustain", "lag_max") or 0), "%.1f"),
                  fmt(mb(med(records, t, "sustain", "lag_mean") or 0), "%.1f"),
                  fmt(mb(med(records, t, "sustain", "pg_wal_max") or 0), "%.0f"),
                  fmt(med(records, t, "sustain", "drain_s"), "%.1f"),
                  ("%d%s" % (statistics.median(rpo), "*" if none else "")) if rpo else "-",
                  "%d/%d" % (sum(1 for r in ok if r.get("restore_mid", {}).get("verified")), len(ok))))
    w("")
    w("columns: mid_s restore to the middle of day 2 (to a promoted server), of which mid_rec server start +")
    w("         recovery after the tool (Haven: all in mid_s); WAL_MB WAL written in the sustained phase; lagmax/")
    w("         lagmean how far behind the server the tool's copy was; pgwal_MB the server's pg_wal at most;")
    w("         drain_s from the end of the load until the tool had the last segment; RPO_ms newest acknowledged")
    w("         row minus newest restored row after kill -9 (* = none of the writer's rows restored: the whole")
    w("         window lost, which archive_timeout would have bounded)")
    w("")
    w("columns: d1_s/d1_cpu/d1_srv day-1 base backup wall, tool CPU, server CPU (s); repo_MB repository after day 1")
    w("         (du -sb, archived WAL included); d2wal_MB repository growth from archiving day 2's WAL; d2_s/d2_cpu")
    w("         day-2 backup; d2grow_MB repository growth of the day-2 backup alone; rest_s restore wall, of which")
    w("         r_tool the restore command and r_recov server start + recovery after it (Haven: all in r_tool);")
    w("         r_cpu restore tool CPU")
    w("")
    w("ratios haven / peer (<1: Haven faster or smaller):")
    metrics = [("day-1 backup wall", ("d1", "wall_s")), ("day-1 backup CPU", ("d1", "cpu_s")),
               ("day-1 backup CPU + server", "cpu+srv"),
               ("repository after day 1", ("repo_d1",)), ("day-2 backup wall", ("d2", "wall_s")),
               ("day-2 backup growth", None), ("restore wall", ("restore", "wall_s")),
               ("restore to the middle wall", ("restore_mid", "wall_s"))]

    def value(t, keys):
        ok = [r for r in records if r["tool"] == t and "error" not in r]
        if keys is None:
            return statistics.median(r["repo_d2"] - r["repo_before_d2"] for r in ok) if ok else None
        if keys == "cpu+srv":
            return statistics.median(r["d1"]["cpu_s"] + r["d1"]["srv_cpu_s"] for r in ok) if ok else None
        return med(records, t, *keys)

    peers = [t for t in tools if t != "haven"]
    if "haven" in tools and peers:
        w("  %-26s %s" % ("", "  ".join("%18s" % ("haven/" + p) for p in peers)))
        for label, keys in metrics:
            h = value("haven", keys)
            cells = []
            for p in peers:
                v = value(p, keys)
                cells.append("%18s" % ("-" if h is None or not v else "%.2fx" % (h / v)))
            w("  %-26s %s" % (label, "  ".join(cells)))
    w("")
    w("day-2 traffic per contestant (informational; same transactions for all):")
    for r in records:
        if "pgbench_s" in r:
            w("  %-11s rep %d: pgbench %.1f s, WAL %.1f MB, archive caught up %.1f s after the switch, server CPU"
              " during traffic+archiving %.1f s" % (r["tool"], r["rep"], r["pgbench_s"], mb(r["wal_bytes"]),
                                                     r["drain_s"], r["traffic_srv_cpu_s"]))
    for r in records:
        if (r.get("restore") or {}).get("report"):
            rr = r["restore"]["report"]
            w("  haven       rep %d: restore JSON: restore_seconds %s, validate_seconds %s, outcome %s" % (
                r["rep"], rr.get("restore_seconds"), rr.get("validate_seconds"), rr.get("outcome")))
    w("")
    w("verification (source after day 2 vs restored server):")
    for r in records:
        if "source" in r:
            w("  %-11s rep %d: latest %s, middle %s  source: %s; at the middle: %s" % (
                r["tool"], r["rep"], "OK" if r.get("restore", {}).get("verified") else "MISMATCH",
                "OK" if r.get("restore_mid", {}).get("verified") else "MISMATCH", r["source"], r.get("mid_source")))
    sources = set(r["source"] for r in records if "source" in r)
    if len(sources) > 1:
        w("  NOTE: the sources differ between contestants after day 2 (same pgbench seed): %s" % sorted(sources))
    fails = [r for r in records if "error" in r]
    if fails:
        w("")
        w("FAILURES:")
        for r in fails:
            w("  %s rep %d: %s" % (r["tool"], r["rep"], r["error"]))
    w("")
    w("raw (tool rep: d1 wall/cpu/srv/rss_MiB | d2 wall/cpu/srv/rss_MiB | restore wall/tool/recovery/cpu/rss_MiB | repo d1/before d2/after d2 bytes):")
    for r in records:
        if "restore" not in r:
            continue
        d1, d2, rs = r["d1"], r["d2"], r["restore"]
        w("  %-11s %d: %.2f/%.1f/%.1f/%.0f | %.2f/%.1f/%.1f/%.0f | %.2f/%.2f/%.2f/%.1f/%.0f | %d/%d/%d" % (
            r["tool"], r["rep"], d1["wall_s"], d1["cpu_s"], d1["srv_cpu_s"], d1["rss_kib"] / 1024,
            d2["wall_s"], d2["cpu_s"], d2["srv_cpu_s"], d2["rss_kib"] / 1024,
            rs["wall_s"], rs["tool_s"], rs["recovery_s"], rs["cpu_s"], rs["rss_kib"] / 1024,
            r["repo_d1"], r["repo_before_d2"], r["repo_d2"]))
    w("")
    w("bench run time %.0f s (incl. setup); logs %s" % (time.time() - m["started"], m["logdir"]))
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or os.path.join(REPO_ROOT, "bench", "results", "%s-pitr.txt" % now.strftime("%Y-%m-%d"))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    with open(os.path.join(m["logdir"], "results.json"), "w") as f:
        json.dump(records, f, indent=1, default=str)
    log("results written to %s" % out)


if __name__ == "__main__":
    main()
