#!/usr/bin/env python3
"""
bench/dr.py - the disaster-recovery benchmark of issue 11 ("Speed"): the whole runbook
`haven dr run acme-failover` for a tenant of about 2 GB, from the command's start to the DNS
answer switched, beside the bare tools doing the same restores in the same run; and the time
from a site's death to the first alert of `haven serve`.

Python 3 standard library only; needs root (runuser for PostgreSQL, page-cache drop), the
PostgreSQL server packages, redis-server, etcd/etcdctl, BIND 9 (named), python3.

    bash bench/dr.sh                       # full size: SCALE=1 (~2 GB)
    SCALE=0.1 bash bench/dr.sh --haven target/debug/haven   # smoke run of the script

The tenant at SCALE=1 (each count multiplied by SCALE): PostgreSQL pgbench scale 130,
1,000,000 Redis keys (100-byte values), 2,000 etcd keys, 300 MB of files (1 MiB random
files). Site A on 127.0.0.1, site B on 127.0.0.2 (the tests' world: provision.sh and app.py
from crates/haven-dr/tests/support), a BIND 9 for example.test. with a TSIG key, a webhook
receiver. One run:

  1. site A built and filled (untimed; sizes reported); `haven tenant backup acme` (timed,
     informational).
  2. bare tools, each alone, after `sync; drop_caches`, into a third site (127.0.0.3,
     servers as provision.sh starts them):
       pg_restore -j 2 --no-owner --no-privileges of a `pg_dump -Fc` file (made untimed)
       redis-server loading the RDB (`redis-cli --rdb`, untimed) until PING answers and
         INFO says loading:0
       etcdctl snapshot restore of an `etcdctl snapshot save` file (untimed)
       cp -a of the files
  3. site death -> first alert (unless --skip-alert): `haven serve` with the tenant on
     `schedule = "* * * * *"`, `rpo = "2m"`; after its first complete backup and a random
     delay of 0-60 s (--seed), site A is killed (kill -9, data deleted) and the clock runs until the webhook receives the first
     alert (any kind; its kind is reported).
  4. `haven dr run acme-failover --json`, timed from its start to (a) BIND answering
     127.0.0.2 for acme.example.test. (polled every 20 ms) and (b) the command's exit; every
     step's time from `haven dr status RUN --json`.
  5. the table, ratio = RTO (to DNS switched) / slowest bare restore; targets <= 1.3x and
     < 40 s, alert < 60 s; written to bench/results/<date>-dr[-scaleS].txt.

Work files in --work (default bench/work/dr, gitignored); everything started is stopped at
the end (also on failure).
"""
import argparse
import base64
import datetime
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SUPPORT = os.path.join(ROOT, "crates/haven-dr/tests/support")
A, B, BARE = "127.0.0.1", "127.0.0.2", "127.0.0.3"
RECORD = "acme.example.test."
PASSWORD = "bench-password-not-secret"
STARTED = []  # (what, popen or pid) to stop at the end


def log(msg):
    print("[dr-bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def die(msg):
    log("ERROR: " + msg)
    raise SystemExit(2)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def out(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_for(what, cond, limit=120):
    t = time.time()
    while not cond():
        if time.time() - t > limit:
            die("%s did not happen within %d s" % (what, limit))
        time.sleep(0.02)


def listening(ip, port):
    try:
        socket.create_connection((ip, port), 0.5).close()
        return True
    except OSError:
        return False


def cpu_busy():
    """Seconds of CPU the whole machine has spent busy (all processes: the tools, the
    database servers, haven), from /proc/stat; the difference across a phase is its CPU cost."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def drop_caches():
    run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        log("warning: cannot drop the page cache (not root?)")


def du(path):
    return int(out(["du", "-sb", path]).split()[0])


def pg_bin():
    vs = [int(v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit()] if os.path.isdir("/usr/lib/postgresql") else []
    if vs:
        return "/usr/lib/postgresql/%d/bin" % max(vs)
    initdb = shutil.which("initdb") or die("initdb not found: apt-get install postgresql")
    return os.path.dirname(initdb)


def rmtree(path):
    if os.path.lexists(path):
        run(["rm", "-rf", "--", path])


# ------------------------------------------------------------------------------- site A
def pg_start(dir, ip, port, bin):
    """As provision.sh does, so site A, the bare site and site B run the same server."""
    rmtree(dir)
    os.makedirs(dir)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        run(["chown", "postgres:postgres", dir])
    run(as_pg + [bin + "/initdb", "-D", dir + "/data", "-U", "postgres", "-E", "UTF8", "--no-locale",
                 "--no-sync", "--auth=trust"], stdout=subprocess.DEVNULL)
    run(as_pg + [bin + "/pg_ctl", "start", "-w", "-s", "-t", "120", "-D", dir + "/data", "-l", dir + "/server.log",
                 "-o", "-p %d -c listen_addresses=%s -c unix_socket_directories=%s -c fsync=off "
                 "-c full_page_writes=off -c synchronous_commit=off" % (port, ip, dir)])
    with open(dir + "/data/postmaster.pid") as f:
        STARTED.append(("postgres " + dir, int(f.readline())))


def redis_start(dir, ip, port, extra=()):
    os.makedirs(dir, exist_ok=True)
    run(["redis-server", "--bind", ip, "--port", str(port), "--dir", dir, "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", dir + "/redis.pid", "--logfile", dir + "/redis.log"] + list(extra))
    wait_for("redis-server on %s:%d" % (ip, port),
             lambda: subprocess.run(["redis-cli", "-h", ip, "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG")
    with open(dir + "/redis.pid") as f:
        pid = int(f.read())
    STARTED.append(("redis " + dir, pid))
    return pid


def etcd_start(dir, ip, port, peer):
    rmtree(dir)
    url, purl = "http://%s:%d" % (ip, port), "http://%s:%d" % (ip, peer)
    p = subprocess.Popen(["etcd", "--name", "a", "--data-dir", dir, "--listen-client-urls", url,
                          "--advertise-client-urls", url, "--listen-peer-urls", purl,
                          "--initial-advertise-peer-urls", purl, "--initial-cluster", "a=" + purl],
                         stdout=subprocess.DEVNULL, stderr=open(dir + ".log", "w"))
    STARTED.append(("etcd " + dir, p))
    wait_for("etcd on %s" % url, lambda: http_status(url + "/health") == 200)
    return p


def http_status(url, method="GET", body=None):
    try:
        req = urllib.request.Request(url, method=method, data=body)
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except Exception:
        return None


def etcd_put(url, key, value):
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value.encode()).decode()}).encode()
    req = urllib.request.Request(url + "/v3/kv/put", data=body, method="POST")
    urllib.request.urlopen(req, timeout=10).read()


def app_start(ip, port, db, bin, what):
    p = subprocess.Popen(["python3", SUPPORT + "/app.py", "--host", ip, "--port", str(port), "--psql", bin + "/psql",
                          "--db", db], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    STARTED.append((what, p))
    wait_for(what, lambda: listening(ip, port))
    return p


# -------------------------------------------------------------------- BIND and webhook
def bind_start(dir):
    rmtree(dir)
    os.makedirs(dir)
    port = free_port(A)
    secret = base64.b64encode(os.urandom(32)).decode()
    key = dir + "/acme-dns.key"
    with open(key, "w") as f:
        f.write('key "haven-bench" {\n\talgorithm hmac-sha256;\n\tsecret "%s";\n};\n' % secret)
    with open(dir + "/example.test.db", "w") as f:
        f.write("$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. ( 1 3600 600 86400 300 )\n"
                "@ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\nacme 60 IN A 127.0.0.1\n")
    with open(dir + "/named.conf", "w") as f:
        f.write('include "%s";\noptions { directory "%s"; pid-file "%s/named.pid"; session-keyfile "%s/s.key";\n'
                ' managed-keys-directory "%s"; listen-on port %d { 127.0.0.1; }; listen-on-v6 { none; };\n'
                ' recursion no; dnssec-validation no; notify no; };\ncontrols { };\n'
                'zone "example.test" { type primary; file "%s/example.test.db"; allow-update { key "haven-bench"; }; };\n'
                % (key, dir, dir, dir, dir, port, dir))
    p = subprocess.Popen(["named", "-g", "-n", "1", "-c", dir + "/named.conf"], stdout=subprocess.DEVNULL,
                         stderr=open(dir + "/named.log", "w"))
    STARTED.append(("named", p))
    wait_for("named", lambda: dig(port) == ["127.0.0.1"])
    return port, key


def dig(port, name=RECORD):
    r = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "@127.0.0.1", "-p", str(port), name, "A"],
                       capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else None


class Hook:
    """A webhook receiver: every JSON body with the time it arrived."""

    def __init__(self):
        received = self.received = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                try:
                    received.append((time.time(), json.loads(body)))
                except ValueError:
                    received.append((time.time(), body.decode(errors="replace")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((A, 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# ---------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=float(os.environ.get("SCALE", "1")))
    ap.add_argument("--work", default=os.path.join(HERE, "work", "dr"))
    ap.add_argument("--haven", help="the haven binary (default: cargo build --release -p haven)")
    ap.add_argument("--skip-alert", action="store_true", help="no `haven serve` site-death measurement")
    ap.add_argument("--alert-limit", type=int, default=300)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000, help="for the moment site A dies")
    ap.add_argument("--out")
    args = ap.parse_args()
    s = args.scale
    work = os.path.abspath(args.work)
    rmtree(work)
    os.makedirs(work)
    os.chmod(work, 0o711)
    bin = pg_bin()
    if args.haven:
        haven = os.path.abspath(args.haven)
    else:
        log("cargo build --release -p haven")
        run(["cargo", "build", "--release", "-q", "-p", "haven"], cwd=ROOT)
        haven = os.path.join(ROOT, "target/release/haven")
    # A private copy: others building in this checkout cannot swap it mid-run.
    os.makedirs(work + "/bin")
    shutil.copy2(haven, work + "/bin/haven")
    haven = work + "/bin/haven"
    env = dict(os.environ, TMPDIR=work + "/tmp", XDG_CACHE_HOME=work + "/cache",
               HAVEN_API_TOKEN=base64.b64encode(os.urandom(18)).decode())
    # Stopped by a signal: still stop every server (the finally below).
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    os.makedirs(work + "/tmp")
    figures = {}
    try:
        body(args, s, work, bin, haven, env, figures)
    finally:
        stop_all(work)
    return 0


def stop_all(work):
    subprocess.run(["sh", SUPPORT + "/provision.sh", "--remove", work + "/site-b"], capture_output=True)
    subprocess.run(["sh", SUPPORT + "/provision.sh", "--remove", work + "/bare"], capture_output=True)
    for pidfile in [work + "/site-b/etcd.pid"]:
        try:
            os.kill(int(open(pidfile).read().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    for what, p in reversed(STARTED):
        try:
            if isinstance(p, int):
                os.kill(p, signal.SIGKILL)
            else:
                p.kill()
                p.wait()
        except OSError:
            pass


def body(args, s, work, bin, haven, env, fig):
    # 1. site A ---------------------------------------------------------------------------
    log("site A: PostgreSQL pgbench scale %d" % max(1, round(130 * s)))
    pa = free_port(A)
    pg_start(work + "/a-pg", A, pa, bin)
    url_a = "postgresql://postgres@%s:%d" % (A, pa)
    run([bin + "/psql", "-X", "-q", "-c", "CREATE DATABASE app", url_a + "/postgres"])
    run([bin + "/pgbench", "-i", "-q", "-s", str(max(1, round(130 * s))), url_a + "/app"], stderr=subprocess.DEVNULL)
    keys = int(1_000_000 * s)
    log("site A: Redis %d keys" % keys)
    ra = free_port(A)
    redis_start(work + "/a-redis", A, ra, ["--enable-debug-command", "yes"])
    run(["redis-cli", "-h", A, "-p", str(ra), "DEBUG", "POPULATE", str(keys), "session", "100"], stdout=subprocess.DEVNULL)
    ekeys = max(1, int(2000 * s))
    log("site A: etcd %d keys" % ekeys)
    ea, eap = free_port(A), free_port(A)
    etcd_start(work + "/a-etcd", A, ea, eap)
    for i in range(ekeys):
        etcd_put("http://%s:%d" % (A, ea), "/acme/workflows/wf-%d" % i, json.dumps({"state": "running", "n": i, "pad": "x" * 200}))
    mb = max(1, int(300 * s))
    log("site A: %d MB of files" % mb)
    files_a = work + "/a-files"
    for i in range(mb):
        d = "%s/d%d" % (files_a, i % 16)
        os.makedirs(d, exist_ok=True)
        with open("%s/upload-%d.bin" % (d, i), "wb") as f:
            f.write(os.urandom(1 << 20))
    app_a = free_port(A)
    app_start(A, app_a, url_a + "/app", bin, "site A app")
    fig["pg_bytes"] = int(out([bin + "/psql", "-X", "-At", "-c", "SELECT pg_database_size('app')", url_a + "/app"]))
    fig["redis_keys"] = int(out(["redis-cli", "-h", A, "-p", str(ra), "DBSIZE"]))
    fig["etcd_keys"] = ekeys
    fig["file_bytes"] = du(files_a)

    dns_port, key = bind_start(work + "/bind")
    hook = Hook()
    # site B: planned ports; provision.sh starts PostgreSQL, Redis, the app; the restore etcd.
    site_b = work + "/site-b"
    os.makedirs(site_b)
    pb, rb, appb, eb, ebp = [free_port(B) for _ in range(5)]
    with open(site_b + "/site.env", "w") as f:
        f.write("IP=%s\nPG_PORT=%d\nREDIS_PORT=%d\nAPP_PORT=%d\nPG_BIN=%s\nAPP=%s\nSITE_A_APP_PORT=%d\n"
                % (B, pb, rb, appb, bin, SUPPORT + "/app.py", app_a))
    with open(work + "/password", "w") as f:
        f.write(PASSWORD)
    config = work + "/haven.toml"
    with open(config, "w") as f:
        f.write(CONFIG % dict(
            repo=work + "/repo", work=work, hook=hook.url, listen="127.0.0.1:%d" % free_port(A),
            a_pg=url_a + "/app", a_redis="redis://%s:%d" % (A, ra), a_etcd="http://%s:%d" % (A, ea), a_files=files_a,
            b=B, b_pg=pb, b_redis=rb, b_etcd=eb, b_peer=ebp, b_etcd_data=site_b + "/etcd", b_files=site_b + "/files",
            provision=SUPPORT + "/provision.sh", site_b=site_b, a_app=app_a, dns="127.0.0.1:%d" % dns_port, key=key,
            record=RECORD))
    log("haven tenant backup acme")
    t = time.time()
    r = subprocess.run([haven, "tenant", "backup", "acme", "--config", config, "--json"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        die("haven tenant backup failed: %s" % r.stderr.strip())
    fig["backup_s"] = time.time() - t
    fig["repo_bytes"] = du(work + "/repo")

    # 2. bare tools -------------------------------------------------------------------------
    bare = work + "/bare"
    os.makedirs(bare)
    run([bin + "/pg_dump", "-Fc", "-f", bare + "/app.dump", url_a + "/app"])
    run(["redis-cli", "-h", A, "-p", str(ra), "--rdb", bare + "/dump.rdb"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run(["etcdctl", "--endpoints", "http://%s:%d" % (A, ea), "snapshot", "save", bare + "/etcd.snap"], stdout=subprocess.DEVNULL)
    pgbare, rbare = free_port(BARE), free_port(BARE)
    with open(bare + "/site.env", "w") as f:
        f.write("IP=%s\nPG_PORT=%d\nREDIS_PORT=%d\nAPP_PORT=%d\nPG_BIN=%s\nAPP=%s\nSITE_A_APP_PORT=%d\n"
                % (BARE, pgbare, rbare, free_port(BARE), bin, SUPPORT + "/app.py", app_a))
    run(["sh", SUPPORT + "/provision.sh", bare], stdout=subprocess.DEVNULL)
    url_bare = "postgresql://postgres@%s:%d" % (BARE, pgbare)
    run([bin + "/psql", "-X", "-q", "-c", "CREATE DATABASE app", url_bare + "/postgres"])
    bare_s = {}
    log("bare: pg_restore -j 2")
    drop_caches()
    t, c = time.time(), cpu_busy()
    run([bin + "/pg_restore", "-j", "2", "--exit-on-error", "--no-owner", "--no-privileges", "-d", url_bare + "/app", bare + "/app.dump"])
    bare_s["postgres: pg_restore -j 2 (-Fc dump)"] = time.time() - t
    fig["bare_pg_cpu"] = cpu_busy() - c
    log("bare: redis-server loading the RDB")
    rload = free_port(BARE)
    os.makedirs(bare + "/redis-load")
    shutil.copy(bare + "/dump.rdb", bare + "/redis-load/dump.rdb")
    drop_caches()
    t = time.time()
    redis_start(bare + "/redis-load", BARE, rload, ["--dbfilename", "dump.rdb"])
    wait_for("the RDB loaded", lambda: b"loading:0" in subprocess.run(
        ["redis-cli", "-h", BARE, "-p", str(rload), "INFO", "persistence"], capture_output=True).stdout)
    bare_s["redis: redis-server loads the RDB"] = time.time() - t
    loaded = int(out(["redis-cli", "-h", BARE, "-p", str(rload), "DBSIZE"]))
    if loaded != fig["redis_keys"]:
        die("the bare RDB load has %d keys, not %d" % (loaded, fig["redis_keys"]))
    log("bare: etcdctl snapshot restore")
    drop_caches()
    t = time.time()
    run(["etcdctl", "snapshot", "restore", bare + "/etcd.snap", "--data-dir", bare + "/etcd-restored"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, ETCDCTL_API="3"))
    bare_s["etcd: etcdctl snapshot restore"] = time.time() - t
    log("bare: cp -a")
    drop_caches()
    t = time.time()
    run(["cp", "-a", files_a, bare + "/files"])
    bare_s["files: cp -a"] = time.time() - t
    subprocess.run(["sh", SUPPORT + "/provision.sh", "--remove", bare], capture_output=True)
    rmtree(bare)
    fig["bare"] = bare_s

    # 3. site death -> first alert ----------------------------------------------------------
    if not args.skip_alert:
        log("haven serve; waiting for its first complete backup")
        serve = subprocess.Popen([haven, "serve", "--config", config], env=env, stdout=open(work + "/serve.log", "w"),
                                 stderr=subprocess.STDOUT)
        STARTED.append(("haven serve", serve))
        points_before = count_points(haven, config, env)

        def backed_up():
            if serve.poll() is not None:
                die("haven serve exited (%s): %s" % (serve.returncode, open(work + "/serve.log").read()[-1500:]))
            return count_points(haven, config, env) > points_before

        wait_for("the daemon's first backup", backed_up, limit=240)
        # The site dies at a random moment of the backup minute (the delay is reported).
        delay = random.Random(args.seed).uniform(0, 60)
        log("site A dies in %.1f s (seed %d)" % (delay, args.seed))
        time.sleep(delay)
        hook.received.clear()
        died = kill_site_a(work, STARTED)
        fig["death_delay"] = delay
        t_alert = None
        deadline = time.time() + args.alert_limit
        while time.time() < deadline and t_alert is None:
            if hook.received:
                t_alert, first = hook.received[0]
            time.sleep(0.05)
        if t_alert is None:
            fig["alert"] = (None, "no alert within %d s" % args.alert_limit)
        else:
            kind = first.get("kind") or first.get("alert", {}).get("kind") if isinstance(first, dict) else None
            fig["alert"] = (t_alert - died, str(kind or json.dumps(first)[:80]))
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
    else:
        kill_site_a(work, STARTED)

    # 4. the runbook --------------------------------------------------------------------------
    log("haven dr run acme-failover")
    drop_caches()
    switched = {}

    def watch():
        while "t" not in switched and not switched.get("stop"):
            if dig(dns_port) == [B]:
                switched["t"] = time.time()
            time.sleep(0.02)

    w = threading.Thread(target=watch, daemon=True)
    t0, c0 = time.time(), cpu_busy()
    w.start()
    r = subprocess.run([haven, "dr", "run", "acme-failover", "--config", config, "--json"], env=env,
                       capture_output=True, text=True)
    t_end, c_end = time.time(), cpu_busy()
    fig["dr_cpu"] = c_end - c0
    w.join(2)
    switched["stop"] = True
    with open(work + "/dr-run.json", "w") as f:
        f.write(r.stdout + "\n" + r.stderr)
    if r.returncode != 0:
        die("haven dr run failed (%d): %s %s" % (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
    run_id = json.loads(r.stdout)["run"]["id"]
    st = subprocess.run([haven, "dr", "status", run_id, "--config", config, "--json"], env=env, capture_output=True, text=True)
    fig["status"] = json.loads(st.stdout) if st.returncode == 0 else {}
    fig["rto_dns"] = switched["t"] - t0 if "t" in switched else None
    fig["rto_exit"] = t_end - t0
    try:
        fig["site_b_count"] = urllib.request.urlopen("http://%s:%d/count" % (B, appb), timeout=10).read().decode().strip()
    except Exception as e:
        fig["site_b_count"] = "unreachable (%s)" % e
    report(args, fig)


def count_points(haven, config, env):
    r = subprocess.run([haven, "tenant", "points", "acme", "--config", config, "--json"], env=env, capture_output=True, text=True)
    try:
        v = json.loads(r.stdout)
    except ValueError:
        return 0
    items = v if isinstance(v, list) else v.get("points", [])
    return sum(1 for p in items if p.get("status") == "complete")


def kill_site_a(work, started):
    """kill -9 every server of site A, delete its data; returns the time of death."""
    died = time.time()
    for what, p in started:
        if what.startswith(("postgres " + work + "/a-", "redis " + work + "/a-", "etcd " + work + "/a-", "site A app")):
            try:
                if isinstance(p, int):
                    os.kill(p, signal.SIGKILL)
                else:
                    p.kill()
            except OSError:
                pass
    for d in ["a-pg/data", "a-redis", "a-etcd", "a-files"]:
        rmtree(os.path.join(work, d))
    return died


def report(args, fig):
    lines = []
    p = lines.append
    now = datetime.datetime.now(datetime.timezone.utc)
    p("Haven disaster-recovery benchmark (issue 11)  %s  SCALE %g" % (now.strftime("%Y-%m-%d %H:%M"), args.scale))
    p("haven:   %s" % (args.haven or "target/release/haven (cargo build --release)"))
    p("machine: nproc %d, kernel %s, %s" % (os.cpu_count(), platform.release(), platform.processor() or platform.machine()))
    p("tenant:  PostgreSQL %.0f MB (pg_database_size, pgbench -s %d), Redis %d keys, etcd %d keys, files %.0f MB"
      % (fig["pg_bytes"] / 1e6, max(1, round(130 * args.scale)), fig["redis_keys"], fig["etcd_keys"], fig["file_bytes"] / 1e6))
    p("backup:  haven tenant backup acme %.1f s; repository %.0f MB" % (fig["backup_s"], fig["repo_bytes"] / 1e6))
    p("load:    %s (1/5/15 min, after; shared machine)" % open("/proc/loadavg").read().split()[:3])
    p("")
    p("bare tools, each alone, page cache dropped before each:")
    for k, v in fig["bare"].items():
        p("  %-44s %8.2f s" % (k, v))
    slowest = max(fig["bare"].values())
    p("  %-44s %8.2f s" % ("slowest bare restore", slowest))
    p("")
    p("haven dr run acme-failover, steps (haven dr status --json):")
    steps = fig["status"].get("steps", []) if isinstance(fig["status"], dict) else []
    for st in steps:
        secs = st.get("seconds")
        state = st.get("state") or st.get("outcome")
        p("  %-20s %-10s %8s s  %s" % (st.get("step") or st.get("name"), state, "%.2f" % secs if isinstance(secs, (int, float)) else "-",
                                       (st.get("message") or st.get("error") or "")[:70]))
    p("")
    rto = fig["rto_dns"]
    p("RTO, `dr run` start -> DNS answers site B:  %s" % ("%.2f s" % rto if rto else "never"))
    p("`dr run` start -> command exit:              %.2f s" % fig["rto_exit"])
    if rto:
        p("ratio RTO / slowest bare restore:           %.2fx   (target <= 1.3x: %s; < 40 s: %s)"
          % (rto / slowest, "met" if rto / slowest <= 1.3 else "NOT met", "met" if rto < 40 else "NOT met"))
    if "alert" in fig:
        a, kind = fig["alert"]
        p("site death -> first alert (haven serve):     %s   (target < 60 s: %s) first: %s; died %.1f s after the first backup (seed %d)"
          % ("%.1f s" % a if a is not None else "none", "met" if a is not None and a < 60 else "NOT met", kind,
             fig.get("death_delay", 0), args.seed))
    if "dr_cpu" in fig and "bare_pg_cpu" in fig:
        cores = os.cpu_count()
        p("CPU (whole machine, /proc/stat): bare pg_restore %.1f s busy; dr run %.1f s busy;"
          % (fig["bare_pg_cpu"], fig["dr_cpu"]))
        p("  the dr run's CPU on %d cores takes at least %.1f s, %.2fx the slowest bare restore"
          % (cores, fig["dr_cpu"] / cores, fig["dr_cpu"] / cores / slowest))
    p("site B serves /count = %s" % fig["site_b_count"])
    text = "\n".join(lines) + "\n"
    print(text)
    outp = args.out or os.path.join(HERE, "results", "%s-dr%s.txt" % (now.strftime("%Y-%m-%d"), "" if args.scale == 1 else "-scale%g" % args.scale))
    with open(outp, "w") as f:
        f.write(text)
    log("written to " + outp)


CONFIG = """
[repositories.main]
url = "%(repo)s"
password-file = "%(work)s/password"

[daemon]
listen = "%(listen)s"
state-dir = "%(work)s/state"

[alerts.ops]
kind = "webhook"
url = "%(hook)s"

[tenants.acme]
repository = "main"
schedule = "* * * * *"
rpo = "2m"
[tenants.acme.components.db]
kind = "postgres"
url = "%(a_pg)s"
[tenants.acme.components.cache]
kind = "redis"
url = "%(a_redis)s"
[tenants.acme.components.state]
kind = "etcd"
endpoints = ["%(a_etcd)s"]
[tenants.acme.components.uploads]
kind = "files"
paths = ["%(a_files)s"]

[tenants.acme-dr]
repository = "main"
schedule = "0 3 * * *"
[tenants.acme-dr.components.db]
kind = "postgres"
url = "postgresql://postgres@%(b)s:%(b_pg)d/app"
[tenants.acme-dr.components.cache]
kind = "redis"
url = "redis://%(b)s:%(b_redis)d"
[tenants.acme-dr.components.state]
kind = "etcd"
endpoints = ["http://%(b)s:%(b_etcd)d"]
peer-url = "http://%(b)s:%(b_peer)d"
data-dir = "%(b_etcd_data)s"
[tenants.acme-dr.components.uploads]
kind = "files"
paths = ["%(b_files)s"]

[runbooks.acme-failover]
tenant = "acme"
into = "acme-dr"
rto = "40s"
drill-record = "drill.acme.example.test."
alerts = ["ops"]

[[runbooks.acme-failover.steps]]
name = "provision"
kind = "command"
run = ["sh", "%(provision)s", "%(site_b)s", "${into}"]
outputs = ["lb_ip", "app_port", "pg_port", "redis_port"]
timeout = "2m"

[[runbooks.acme-failover.steps]]
name = "restore"
kind = "restore"
needs = ["provision"]

[[runbooks.acme-failover.steps]]
name = "smoke"
kind = "http"
url = "http://${steps.provision.lb_ip}:${steps.provision.app_port}/health"
expect-status = 200
expect-body = "ok"
timeout = "2m"
needs = ["restore"]

[[runbooks.acme-failover.steps]]
name = "accounts"
kind = "sql"
query = "SELECT count(*) > 0 FROM pgbench_accounts"
expect = "t"
needs = ["restore"]

[[runbooks.acme-failover.steps]]
name = "scale-down-old"
kind = "command"
run = ["python3", "-c", "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:%(a_app)d/scale-down', method='POST'), timeout=5)"]
on-failure = "continue"
timeout = "30s"
needs = ["smoke"]

[[runbooks.acme-failover.steps]]
name = "dns"
kind = "dns"
provider = "rfc2136"
server = "%(dns)s"
zone = "example.test."
record = "%(record)s"
type = "A"
value = "${steps.provision.lb_ip}"
ttl = 60
tsig-key-file = "%(key)s"
needs = ["smoke", "accounts"]

[[runbooks.acme-failover.steps]]
name = "tell"
kind = "notify"
alerts = ["ops"]
message = "acme now served from ${steps.provision.lb_ip} (run ${run.id})"
needs = ["dns"]
"""

if __name__ == "__main__":
    sys.exit(main())
