#!/usr/bin/python3
"""Jepsen-style fault test of Haven's replicated volumes (docs/VOLUMES.md, "Fault tests").

Topology: three sites a, b, c, each a network namespace joined to the host by a veth pair
(the host routes between them). Per site: one member of a 3-member etcd cluster and one
`haven replica serve` whose data folder is a small tmpfs of its own. Controller candidates
(`haven volume serve`) run on sites a and b. The client is this process, on the host:
two writers, each with its own libnbd handle (Debian's python3-libnbd), driven by one
event loop.

Each schedule (seeded random.Random(seed + index)) creates a fresh 64 MiB volume (RF 2,
min in sync 1) and writes 4 KiB stamped blocks to it (every block carries writer, seq,
block index, the epoch it was sent under and a CRC; the rest is derived from them) while
1 to 3 faults hit it: kill -9 of a replica or of the serving controller, SIGSTOP of the
serving controller past its lease (with requests in flight to it), a site's link cut, a
replica's disk filled. Then everything is healed and the checker proves:

  1. no acknowledged write was lost: every block holds its last acknowledged write or a
     write to it issued later (never acknowledged);
  2. no corruption: every block is zeros (only when no write to it was acknowledged) or
     exactly the stamped block of a write that was issued to it;
  3. no split brain: every epoch's acknowledgements came from one candidate, and no write
     sent after a higher epoch had acknowledged was acknowledged in a lower one;
  4. the two placed replicas' data files are identical (qemu-img compare) and equal to
     what the checker read through the controller.

Usage (root: network namespaces, tmpfs mounts):
  volume_faults.py --bin target/release/haven [--schedules N] [--seed S]
                   [--kinds kill-replica,kill-controller,stop-controller,partition,disk-full] [--keep]
Environment: HAVEN_FAULT_SCHEDULES (10), HAVEN_FAULT_SEED (random, printed first),
HAVEN_FAULT_KINDS (all), HAVEN_FAULT_KEEP=1 (keep the work folder and logs; a failing run
keeps them anyway), HAVEN_FAULT_DIR (where the work folder goes; /tmp).
Exit status: 0 every schedule's checks hold; 1 a check failed (the report says which
schedule, seed, block, expected and found, and where the logs are); 2 the harness could
not run (missing tools, a server that did not start).
"""

import argparse
import atexit
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

try:
    import nbd
except ImportError:
    print("volume_faults: needs python3-libnbd (`apt-get install python3-libnbd`) for /usr/bin/python3",
          file=sys.stderr)
    sys.exit(2)

KINDS = ["kill-replica", "kill-controller", "stop-controller", "partition", "disk-full"]
SITES = ["a", "b", "c"]
CANDIDATE_SITES = ["a", "b"]
BLOCK = 4096
VOLUME_SIZE = 64 << 20
NBLOCKS = VOLUME_SIZE // BLOCK
HOT_BLOCKS = (8 << 20) // BLOCK  # the first 8 MiB: overwritten many times
FRESH_SHARE = 0.2  # writes anywhere in the volume (new blocks: tmpfs allocations)
WRITERS = 2
WINDOW = 4  # requests in flight per writer
RATE = 250.0  # writes per second per writer, at most (two cores shared by everything)
FUA_SHARE = 0.3
FLUSH_SHARE = 0.02
REQ_TIMEOUT = 10.0  # no reply within this long: uncertain, reconnect
CONNECT_TIMEOUT = 2.0
LEASE = 3.0  # `haven volume serve`'s default --lease
FAULT_WINDOW = (1.0, 12.0)  # faults start within this many seconds of the first ack
AFTER_HEAL = 3.0  # seconds of writing after the last heal
AFTER_HEAL_LIMIT = 60.0  # no ack within this long after the heal: the schedule fails
IN_SYNC_LIMIT = 120.0
TMPFS_MIB = 192  # each replica's disk
BALLAST_MIB = 64  # on the site that should not hold the schedule's volume
NBD_PORT = 10809
REPLICA_PORT = 7410
MAGIC = b"HVFAULT1"
# magic, writer, block, seq, epoch it was sent under; then crc32 of the block with this
# field zeroed; then filler derived from the header.
HDR = struct.Struct("<8sIIQQ")
CRC = struct.Struct("<I")
HDR_LEN = HDR.size + CRC.size

PID = os.getpid()
TAG = "hvf%d" % PID
PROCS = []  # every Proc started, stopped at the end
NETNS = []  # sites to delete
MOUNTS = []
ROUTES = []  # unreachable fallback routes added on the host
STATE = {"ip_forward": None, "cleaned": False, "work": None, "keep": False}
STATE_LOCK = threading.RLock()


def now():
    return time.monotonic()


T_START = now()


def log(msg):
    print("[faults %7.2f] %s" % (now() - T_START, msg), flush=True)


class HarnessError(Exception):
    """The harness could not run (not a finding about Haven)."""


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise HarnessError("%s: exit %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
    return r


def wait_for(what, cond, limit, every=0.05):
    t = now()
    last = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - not ready yet
            last = e
        if now() - t > limit:
            raise HarnessError("%s did not happen within %d s%s" % (what, limit, " (last error: %s)" % last if last else ""))
        time.sleep(every)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---- processes ---------------------------------------------------------------------------


class Proc:
    """A server in a site's namespace; `ip netns exec` execs it, so the pid is the server's."""

    def __init__(self, name, site, cmd, logpath):
        self.name, self.site, self.cmd, self.logpath = name, site, cmd, logpath
        self.p = None
        self.stopped = False  # SIGSTOPped
        self.killed = False  # killed by a fault, not ready again yet
        with STATE_LOCK:
            PROCS.append(self)

    def start(self):
        logf = open(self.logpath, "a")
        logf.write("---- %s started at %.2f ----\n" % (self.name, now() - T_START))
        logf.flush()
        self.p = subprocess.Popen(["ip", "netns", "exec", self.site.ns] + self.cmd, stdout=logf,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.stopped = False
        return self

    def running(self):
        return self.p is not None and self.p.poll() is None

    def signal(self, sig):
        if self.running():
            try:
                os.kill(self.p.pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self):
        self.signal(signal.SIGCONT) if self.stopped else None
        self.signal(signal.SIGKILL)
        if self.p is not None:
            self.p.wait()
        self.stopped = False

    def terminate(self, limit=15.0):
        """SIGTERM (after SIGCONT), wait; SIGKILL past the limit. True when it ended by itself."""
        if not self.running():
            return True
        self.signal(signal.SIGCONT)
        self.stopped = False
        self.signal(signal.SIGTERM)
        try:
            self.p.wait(limit)
            return True
        except subprocess.TimeoutExpired:
            self.kill9()
            return False

    def start_until_ready(self, needle, limit=60):
        """Starts it and waits until its log shows `needle` (said once it is ready); a server
        that exits at start (its site's etcd member cut off, say) is started again, as a
        supervisor would."""
        deadline = now() + limit
        while True:
            before = self.log_count(needle)
            self.start()
            while self.log_count(needle) <= before:
                if not self.running():
                    break
                if now() > deadline:
                    raise HarnessError("%s not ready within %d s; its log (%s) ends:\n%s" % (
                        self.name, limit, self.logpath, self.tail()))
                time.sleep(0.05)
            else:
                # Only now: a fault overlapping this restart must not pick it (and kill it
                # while it starts, leaving this loop to start a second copy).
                self.killed = False
                return
            if now() > deadline:
                raise HarnessError("%s keeps exiting at start (exit %s); its log (%s) ends:\n%s" % (
                    self.name, self.p.returncode, self.logpath, self.tail()))
            time.sleep(0.5)  # before starting it again

    def log_count(self, needle):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read().count(needle)
        except FileNotFoundError:
            return 0

    def tail(self, n=25):
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return ""


# ---- sites -------------------------------------------------------------------------------


class Site:
    """A network namespace joined to the host by a veth pair: host 10.78.O.1, site 10.78.O.2."""

    def __init__(self, index, name, octet):
        self.index, self.name = index, name
        self.ns = "%s-%s" % (TAG, name)
        self.host_if = "%sh%d" % (TAG, index)
        self.subnet = "10.78.%d.0/24" % octet
        self.ip = "10.78.%d.2" % octet
        self.gw = "10.78.%d.1" % octet
        self.cut = False
        run(["ip", "netns", "add", self.ns])
        with STATE_LOCK:
            NETNS.append(self)
        run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.ns])
        run(["ip", "addr", "add", self.gw + "/24", "dev", self.host_if])
        run(["ip", "link", "set", self.host_if, "up"])
        ns = ["ip", "netns", "exec", self.ns]
        run(ns + ["ip", "addr", "add", self.ip + "/24", "dev", "eth0"])
        run(ns + ["ip", "link", "set", "eth0", "up"])
        run(ns + ["ip", "link", "set", "lo", "up"])
        run(ns + ["ip", "route", "add", "default", "via", self.gw])
        # A cut link must fail, not answer: without this the host would send the site's
        # traffic to its default gateway while the link is down (see tests/common/netns.rs).
        run(["ip", "route", "add", "unreachable", self.subnet, "metric", "4000"])
        with STATE_LOCK:
            ROUTES.append(self.subnet)

    def set_link(self, up):
        run(["ip", "link", "set", self.host_if, "up" if up else "down"])
        self.cut = not up

    def delete(self):
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def pick_octet():
    """Three free /24s in 10.78.0.0/16, starting from one derived from the pid."""
    routes = run(["ip", "route", "show"]).stdout
    used = set(int(m) for m in re.findall(r"10\.78\.(\d+)\.0/24", routes))
    n = PID % 80
    for k in range(80):
        base = ((n + k) % 80) * 3 + 1
        if not ({base, base + 1, base + 2} & used):
            return base
    raise HarnessError("no free /24 left in 10.78.0.0/16 (leftover routes?)")


def remove_leftovers():
    """Namespaces, links, routes and mounts of earlier runs whose process is gone."""
    out = run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        m = re.match(r"(hvf(\d+)-[abc])\b", line.strip())
        if m and not pid_alive(int(m.group(2))):
            ns = m.group(1)
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", ns], check=False)
            log("removed the leftover namespace %s" % ns)
    links = run(["ip", "-o", "link", "show"], check=False).stdout
    for m in re.finditer(r"^\d+: (hvf(\d+)h\d)[@:]", links, re.M):
        if not pid_alive(int(m.group(2))):
            run(["ip", "link", "del", m.group(1)], check=False)
    routes = run(["ip", "route", "show"], check=False).stdout
    live = set(re.findall(r"^(10\.78\.\d+\.0/24) dev", routes, re.M))
    for m in re.finditer(r"^unreachable (10\.78\.\d+\.0/24)", routes, re.M):
        if m.group(1) not in live:
            run(["ip", "route", "del", "unreachable", m.group(1), "metric", "4000"], check=False)
    with open("/proc/mounts") as f:
        for line in f:
            target = line.split()[1]
            m = re.search(r"/haven-volume-faults-(\d+)-[^/]*/", target + "/")
            if m and not pid_alive(int(m.group(1))):
                run(["umount", "-l", target], check=False)


def cleanup():
    with STATE_LOCK:
        if STATE["cleaned"]:
            return
        STATE["cleaned"] = True
        for p in PROCS:
            if p.running():
                p.signal(signal.SIGCONT)
                p.signal(signal.SIGKILL)
                try:
                    p.p.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for m in reversed(MOUNTS):
            subprocess.run(["umount", m], capture_output=True)
        for s in NETNS:
            s.delete()
        for subnet in ROUTES:
            subprocess.run(["ip", "route", "del", "unreachable", subnet, "metric", "4000"], capture_output=True)
        if STATE["ip_forward"] is not None:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write(STATE["ip_forward"])
        work = STATE["work"]
        if work and os.path.isdir(work):
            if STATE["keep"]:
                print("volume_faults: work folder and logs kept in %s" % work, flush=True)
            else:
                shutil.rmtree(work, ignore_errors=True)


def on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


# ---- the cluster -------------------------------------------------------------------------


class Cluster:
    def __init__(self, binary, work, rng):
        self.bin, self.work = binary, work
        octet = pick_octet()
        self.sites = {n: Site(i + 1, n, octet + i) for i, n in enumerate(SITES)}
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            STATE["ip_forward"] = f.read()
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1\n")
        self.etcd_urls = ",".join("http://%s:2379" % s.ip for s in self.sites.values())
        self.etcd = {}
        initial = ",".join("%s=http://%s:2380" % (n, s.ip) for n, s in self.sites.items())
        for n, s in self.sites.items():
            cmd = ["etcd", "--name", n, "--data-dir", os.path.join(work, "etcd-" + n),
                   "--listen-client-urls", "http://%s:2379" % s.ip,
                   "--advertise-client-urls", "http://%s:2379" % s.ip,
                   "--listen-peer-urls", "http://%s:2380" % s.ip,
                   "--initial-advertise-peer-urls", "http://%s:2380" % s.ip,
                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                   "--initial-cluster-token", TAG]
            self.etcd[n] = Proc("etcd-" + n, s, cmd, os.path.join(work, "etcd-%s.log" % n)).start()
        for n, s in self.sites.items():
            wait_for("etcd member %s healthy" % n, lambda s=s: etcd_healthy(s.ip), 60)
        log("etcd: 3 members up (%s)" % self.etcd_urls)
        self.replicas = {}
        self.ballast = {n: False for n in SITES}
        for n, s in self.sites.items():
            data = os.path.join(work, "replica-" + n)
            os.makedirs(data)
            run(["mount", "-t", "tmpfs", "-o", "size=%dm" % TMPFS_MIB, "tmpfs", data])
            with STATE_LOCK:
                MOUNTS.append(data)
            cmd = [self.bin, "replica", "serve", "--data", data, "--site", n, "--node", "n" + n,
                   "--listen", "%s:%d" % (s.ip, REPLICA_PORT), "--etcd", self.etcd_urls]
            r = Proc("replica-" + n, s, cmd, os.path.join(work, "replica-%s.log" % n))
            r.data = data
            self.replicas[n] = r
            self.start_replica(n)
            r.registered = True  # False: its advertised free space may be stale (restart it)
        log("replicas: %s" % ", ".join("%s/n%s at %s:%d" % (n, n, s.ip, REPLICA_PORT) for n, s in self.sites.items()))

    def start_replica(self, n, limit=60):
        # Ready once it has registered in etcd (it says so on stderr after registering).
        self.replicas[n].start_until_ready("haven: replica %s/n%s serving" % (n, n), limit)

    def cli(self, *args, check=True):
        r = subprocess.run([self.bin] + list(args) + ["--etcd", self.etcd_urls], capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise HarnessError("haven %s: %s" % (" ".join(args), r.stderr.strip()))
        return r

    def status(self, name):
        return json.loads(self.cli("volume", "status", name, "--json").stdout)

    def set_ballast(self, avoid):
        """A ballast file on the site that should not hold the next volume (placement takes the
        replicas with the most free space); replicas whose advertised free space changed are
        restarted, since a replica refreshes it only every 30 s."""
        for n in SITES:
            r = self.replicas[n]
            path = os.path.join(r.data, "ballast")
            want = n == avoid
            if want != self.ballast[n]:
                if want:
                    with open(path, "wb") as f:
                        os.posix_fallocate(f.fileno(), 0, BALLAST_MIB << 20)
                else:
                    os.unlink(path)
                self.ballast[n] = want
                r.registered = False
            if not r.registered or not r.running():
                r.terminate()
                self.start_replica(n)
                r.registered = True

    def candidate(self, vol, n, work):
        s = self.sites[n]
        cmd = [self.bin, "volume", "serve", vol, "--listen", "%s:%d" % (s.ip, NBD_PORT), "--name", "ctl-" + n,
               "--etcd", self.etcd_urls]
        c = Proc("ctl-%s" % n, s, cmd, os.path.join(work, "ctl-%s-%s.log" % (n, vol)))
        c.addr = (s.ip, NBD_PORT)
        c.ready_line = "haven: volume %s: candidate ctl-%s, NBD on" % (vol, n)
        c.start_until_ready(c.ready_line)
        return c


def etcd_healthy(ip):
    with urllib.request.urlopen("http://%s:2379/health" % ip, timeout=1) as r:
        return json.loads(r.read().decode()).get("health") == "true"


# ---- stamped blocks --------------------------------------------------------------------


def make_block(writer, block, seq, epoch):
    head = HDR.pack(MAGIC, writer, block, seq, epoch)
    filler = hashlib.shake_128(head).digest(BLOCK - HDR_LEN)
    crc = zlib.crc32(head + b"\0\0\0\0" + filler)
    return head + CRC.pack(crc) + filler


def parse_block(data):
    """(writer, block, seq, epoch) of a well-formed stamped block, 'zero', or a reason it is not."""
    if data == bytes(BLOCK):
        return "zero"
    magic, writer, block, seq, epoch = HDR.unpack_from(data)
    if magic != MAGIC:
        return "bad magic %r" % data[:8]
    (crc,) = CRC.unpack_from(data, HDR.size)
    if zlib.crc32(data[:HDR.size] + b"\0\0\0\0" + data[HDR_LEN:]) != crc:
        return "bad crc (writer %d block %d seq %d in the header)" % (writer, block, seq)
    return (writer, block, seq, epoch)


# ---- the writers -------------------------------------------------------------------------


def parse_epoch(desc, vol):
    m = re.fullmatch(r"haven volume (\S+) epoch (\d+)", desc or "")
    if not m or m.group(1) != vol:
        raise HarnessError("the export description %r is not `haven volume %s epoch N` (a haven without it?)" % (desc, vol))
    return int(m.group(2))


class Conn:
    """One libnbd handle: connecting, then ready."""

    def __init__(self, vol, addr):
        self.addr = addr
        self.h = nbd.NBD()
        self.h.set_export_name(vol)
        self.h.set_full_info(True)
        self.deadline = now() + CONNECT_TIMEOUT
        self.ready = False
        self.epoch = None
        self.h.aio_connect_tcp(addr[0], str(addr[1]))


class Run:
    """Everything the writers issued and what came back, for one schedule."""

    def __init__(self, vol, rng):
        self.vol, self.rng = vol, rng
        self.writes = {}  # (writer, seq) -> dict
        self.by_block = {}  # block -> [(writer, seq)] in issue order
        self.acks = []  # (t, writer, seq, epoch, addr)
        self.first_ack_of_epoch = {}  # epoch -> t
        self.uncertain = 0
        self.flushes = 0
        self.connects = []  # (t, addr, epoch)
        self.lock = threading.Lock()


class Writer:
    def __init__(self, wid, run_, addrs):
        self.wid, self.run, self.addrs = wid, run_, addrs
        self.conn = None
        self.rr = wid % len(addrs)
        self.retry_at = 0.0
        self.inflight = {}  # cookie -> (key or None for flush, issue time, buffer)
        self.busy = set()  # blocks in flight
        self.redo = []  # blocks whose last write is uncertain: written again first
        self.seq = 0
        self.next_issue = 0.0
        self.owned_hot = [b for b in range(HOT_BLOCKS) if b % WRITERS == wid]
        self.owned_all = [b for b in range(NBLOCKS) if b % WRITERS == wid]

    def connected_to(self):
        c = self.conn
        return c.addr if c is not None and c.ready else None

    def drop(self, why):
        """Close the handle: whatever is in flight is uncertain."""
        for _, (key, t_issue, _buf) in self.inflight.items():
            if key is not None:
                self.mark(key, "uncertain", why)
                self.busy.discard(self.run.writes[key]["block"])
                self.redo.append(self.run.writes[key]["block"])
        self.inflight.clear()
        self.conn = None  # nbd_close: the socket closes, no NBD_CMD_DISC
        self.retry_at = now()

    def mark(self, key, status, why=None):
        w = self.run.writes[key]
        w["status"] = status
        w["t_done"] = now()
        if why:
            w["why"] = why
        if status == "uncertain":
            self.run.uncertain += 1

    def step_connect(self):
        c = self.conn
        if c is None:
            if now() < self.retry_at:
                return
            addr = self.addrs[self.rr % len(self.addrs)]
            self.rr += 1
            try:
                self.conn = Conn(self.run.vol, addr)
            except nbd.Error:
                self.conn = None
                self.retry_at = now() + 0.05
            return
        if c.ready:
            return
        try:
            if c.h.aio_is_ready():
                c.epoch = parse_epoch(c.h.get_export_description(), self.run.vol)
                c.ready = True
                with self.run.lock:
                    self.run.connects.append((now(), c.addr, c.epoch))
                return
            if c.h.aio_is_dead() or c.h.aio_is_closed() or now() > c.deadline:
                self.conn = None
                self.retry_at = now() + 0.05
        except nbd.Error:
            self.conn = None
            self.retry_at = now() + 0.05

    def issue(self, stopping):
        c = self.conn
        if c is None or not c.ready or stopping:
            return
        while len(self.inflight) < WINDOW and now() >= self.next_issue:
            rng = self.run.rng
            self.next_issue = max(self.next_issue, now() - 0.1) + 1.0 / RATE
            try:
                if rng.random() < FLUSH_SHARE:
                    cookie = c.h.aio_flush()
                    self.inflight[cookie] = (None, now(), None)
                    continue
                # The blocks of uncertain writes first: if such a write lands late (a fenced
                # controller's), it would overwrite the acknowledged one that follows.
                if self.redo and self.redo[0] not in self.busy:
                    block = self.redo.pop(0)
                else:
                    pool = self.owned_hot if rng.random() > FRESH_SHARE else self.owned_all
                    block = rng.choice(pool)
                if block in self.busy:
                    continue
                self.seq += 1
                key = (self.wid, self.seq)
                fua = rng.random() < FUA_SHARE
                buf = make_block(self.wid, block, self.seq, c.epoch)
                t = now()
                with self.run.lock:
                    self.run.writes[key] = {"block": block, "epoch": c.epoch, "addr": c.addr, "t_issue": t,
                                            "fua": fua, "status": "pending"}
                    self.run.by_block.setdefault(block, []).append(key)
                cookie = c.h.aio_pwrite(buf, block * BLOCK, flags=nbd.CMD_FLAG_FUA if fua else 0)
                self.inflight[cookie] = (key, t, buf)
                self.busy.add(block)
            except nbd.Error as e:
                self.drop("issue failed: %s" % e)
                return

    def reap(self):
        c = self.conn
        if c is None or not c.ready:
            return
        failed = None
        for cookie in list(self.inflight):
            key, t_issue, _ = self.inflight[cookie]
            try:
                done = c.h.aio_command_completed(cookie)
            except nbd.Error as e:
                failed = "error reply: %s" % e
                done = False
                if key is not None:
                    self.mark(key, "uncertain", failed)
                    self.busy.discard(self.run.writes[key]["block"])
                    self.redo.append(self.run.writes[key]["block"])
                del self.inflight[cookie]
                continue
            if done:
                del self.inflight[cookie]
                t = now()
                if key is None:
                    self.run.flushes += 1
                    continue
                self.busy.discard(self.run.writes[key]["block"])
                self.mark(key, "acked")
                with self.run.lock:
                    self.run.acks.append((t, key[0], key[1], c.epoch, c.addr))
                    self.run.first_ack_of_epoch.setdefault(c.epoch, t)
        if failed is not None:
            self.drop(failed)
            return
        try:
            dead = c.h.aio_is_dead() or c.h.aio_is_closed()
        except nbd.Error:
            dead = True
        if dead:
            self.drop("connection closed")
            return
        if self.inflight and min(t for _, t, _ in self.inflight.values()) < now() - REQ_TIMEOUT:
            self.drop("no reply within %d s" % REQ_TIMEOUT)

    def fds(self):
        c = self.conn
        if c is None:
            return None
        try:
            return c.h.aio_get_fd(), c.h.aio_get_direction()
        except nbd.Error:
            return None

    def notify(self, readable, writable):
        c = self.conn
        if c is None:
            return
        try:
            if readable:
                c.h.aio_notify_read()
            if writable:
                c.h.aio_notify_write()
        except nbd.Error as e:
            if c.ready:
                self.drop("notify failed: %s" % e)
            else:
                self.conn = None
                self.retry_at = now() + 0.05


def writer_loop(writers, until):
    """Runs the writers until until() says stop; then lets the requests in flight finish
    (or time out)."""
    stopping = False
    while True:
        if not stopping and until():
            stopping = True
        if stopping and all(not w.inflight for w in writers):
            return
        for w in writers:
            if not stopping:
                w.step_connect()
            w.issue(stopping)
        rd, wr, fdmap = [], [], {}
        for w in writers:
            f = w.fds()
            if f is None:
                continue
            fd, d = f
            fdmap[fd] = w
            if d & nbd.AIO_DIRECTION_READ:
                rd.append(fd)
            if d & nbd.AIO_DIRECTION_WRITE:
                wr.append(fd)
        try:
            r, wl, _ = select.select(rd, wr, [], 0.01)
        except (OSError, ValueError):
            r, wl = [], []
        for fd, w in fdmap.items():
            if fd in r or fd in wl:
                w.notify(fd in r, fd in wl)
        for w in writers:
            w.reap()


def connect_sync(vol, addr, limit=CONNECT_TIMEOUT):
    """A blocking connection with a deadline; returns (handle, epoch) or raises."""
    c = Conn(vol, addr)
    while not c.h.aio_is_ready():
        if c.h.aio_is_dead() or c.h.aio_is_closed():
            raise nbd.Error("refused")
        if now() > c.deadline:
            raise nbd.Error("no answer within %d s" % limit)
        fd = c.h.aio_get_fd()
        d = c.h.aio_get_direction()
        r, w, _ = select.select([fd] if d & nbd.AIO_DIRECTION_READ else [],
                                [fd] if d & nbd.AIO_DIRECTION_WRITE else [], [], 0.05)
        if r:
            c.h.aio_notify_read()
        if w:
            c.h.aio_notify_write()
    return c.h, parse_epoch(c.h.get_export_description(), vol)


# ---- faults ------------------------------------------------------------------------------


class Fault:
    def __init__(self, kind, start, hold, pick):
        self.kind, self.start, self.hold, self.pick = kind, start, hold, pick
        self.target = None
        self.t_on = None
        self.t_off = None
        self.note = ""
        self.error = None

    def describe(self):
        return "%s(%s %s..%s%s)" % (self.kind, self.target,
                                    "%.1fs" % self.t_on if self.t_on is not None else "?",
                                    "%.1fs" % self.t_off if self.t_off is not None else "?",
                                    ", " + self.note if self.note else "")


def plan_faults(rng, kinds, seed):
    n = rng.randint(1, 3)
    faults = []
    for k in range(n):
        # The first fault's kind goes round the enabled kinds (schedule seeds are the run's
        # seed + index), so that every kind comes up within len(kinds) schedules; the others
        # are drawn. It depends on the schedule's seed alone, so a schedule replays alone.
        kind = kinds[seed % len(kinds)] if k == 0 else rng.choice(kinds)
        start = rng.uniform(*FAULT_WINDOW)
        if kind == "kill-replica":
            hold = rng.uniform(1, 5)
        elif kind == "kill-controller":
            hold = rng.uniform(1, 5)
        elif kind == "stop-controller":
            # Past the lease; half the time past the client's timeout too, so that the client
            # gives its requests up and writes those blocks again through the new controller
            # before the stopped one wakes up with them.
            hold = rng.uniform(LEASE + 1, 8) if rng.random() < 0.5 else rng.uniform(REQ_TIMEOUT + 0.5, 13)
        elif kind == "partition":
            hold = rng.uniform(3, 10)
        else:
            hold = rng.uniform(2, 6)
        faults.append(Fault(kind, start, hold, rng.random()))
    faults.sort(key=lambda f: f.start)
    return faults


class Schedule:
    def __init__(self, cluster, index, seed, kinds, work):
        self.cluster, self.index, self.seed = cluster, index, seed
        self.rng = random.Random(seed)
        self.vol = "f%d" % index
        self.work = work
        self.faults = plan_faults(self.rng, kinds, seed)
        self.avoid = SITES[self.rng.randrange(3)]
        self.failures = []
        self.candidates = {}
        self.placement = []
        self.lock = threading.RLock()

    def fail(self, msg):
        self.failures.append(msg)
        log("schedule %d: FAIL: %s" % (self.index, msg))

    # -- targets --

    def placed_replicas(self):
        return [p.split("/")[0] for p in self.placement]

    def serving(self):
        try:
            st = self.cluster.status(self.vol)
        except (HarnessError, ValueError, subprocess.TimeoutExpired):
            return None
        c = st.get("controller")
        return c["name"][len("ctl-"):] if c and c.get("name", "").startswith("ctl-") else None

    def controller_target(self, f, deadline, need_connected):
        """The serving candidate, when it is running and not stopped (and, for a stop, a writer
        is connected to it: it goes on sending requests to it); past the deadline any running
        candidate."""
        while True:
            n = self.serving()
            with self.lock:
                c = self.candidates.get(n)
                ok = (c is not None and c.running() and not c.stopped and not c.killed
                      and not self.cluster.sites[n].cut)
            if ok and need_connected:
                ok = any(w.connected_to() == c.addr for w in self.writers)
            if ok:
                return n
            if now() > deadline:
                with self.lock:
                    live = [k for k, c in sorted(self.candidates.items())
                            if c.running() and not c.stopped and not c.killed]
                if not live:
                    return None
                f.note = "not the serving one"
                return live[int(f.pick * len(live))]
            time.sleep(0.05)

    def run_fault(self, f):
        try:
            t_wait = self.t0 + f.start - now()
            if t_wait > 0:
                time.sleep(t_wait)  # the planned start time (a schedule, not a readiness wait)
            getattr(self, "fault_" + f.kind.replace("-", "_"))(f)
        except Exception as e:  # noqa: BLE001 - reported as a harness error of the schedule
            f.error = "%s: %s" % (type(e).__name__, e)
            log("schedule %d: fault %s: %s" % (self.index, f.kind, f.error))

    def hold(self, f):
        f.t_on = now() - self.t0
        log("schedule %d: %s on %s for %.1f s%s" % (self.index, f.kind, f.target, f.hold,
                                                   " (" + f.note + ")" if f.note else ""))
        time.sleep(f.hold)  # the fault's planned duration

    def healed(self, f):
        f.t_off = now() - self.t0
        f.healed_at = now()
        log("schedule %d: %s on %s healed" % (self.index, f.kind, f.target))

    def fault_kill_replica(self, f):
        deadline = now() + 10
        while True:
            with self.lock:
                live = [n for n in self.placed_replicas() if not self.cluster.replicas[n].killed]
                if live:
                    n = live[int(f.pick * len(live))]
                    r = self.cluster.replicas[n]
                    r.killed = True
                    break
            if now() > deadline:
                raise HarnessError("no placed replica left to kill")
            time.sleep(0.05)
        f.target = "replica %s" % n
        r.kill9()
        r.registered = False
        self.hold(f)
        self.cluster.start_replica(n)
        self.healed(f)

    def fault_kill_controller(self, f):
        n = self.controller_target(f, now() + 10, need_connected=False)
        if n is None:
            raise HarnessError("no candidate running to kill")
        with self.lock:
            c = self.candidates[n]
            c.killed = True
        f.target = "ctl-" + n
        c.kill9()
        self.hold(f)
        c.start_until_ready(c.ready_line)
        self.healed(f)

    def fault_stop_controller(self, f):
        n = self.controller_target(f, now() + 10, need_connected=True)
        if n is None:
            raise HarnessError("no candidate running to stop")
        with self.lock:
            c = self.candidates[n]
            c.signal(signal.SIGSTOP)
            c.stopped = True
        f.target = "ctl-" + n
        t_stop = now()
        self.hold(f)
        # Writes sent to it before SIGCONT and unanswered until a moment after the stop: they
        # were in the stopped controller's hands (or its socket's) while it was stopped.
        t_cont = now()
        with self.run.lock:
            sent = list(self.run.writes.values())
        stuck = sum(1 for w in sent
                    if w["addr"] == c.addr and w["t_issue"] < t_cont
                    and (w["status"] == "pending" or w.get("t_done", 0) > t_stop + 0.2))
        f.note = "%d write(s) in flight to it" % stuck
        f.stuck = stuck
        with self.lock:
            c.signal(signal.SIGCONT)
            c.stopped = False
        self.healed(f)

    def fault_partition(self, f):
        with self.lock:
            free = [n for n in SITES if not self.cluster.sites[n].cut]
            if not free:
                raise HarnessError("every site is cut already")
            n = free[int(f.pick * len(free))]
            self.cluster.sites[n].set_link(False)
        f.target = "site %s" % n
        self.hold(f)
        with self.lock:
            self.cluster.sites[n].set_link(True)
        self.healed(f)

    def fault_disk_full(self, f):
        with self.lock:
            free = [n for n in self.placed_replicas() if not getattr(self.cluster.replicas[n], "full", False)]
            if not free:
                raise HarnessError("every placed replica's disk is full already")
            n = free[int(f.pick * len(free))]
            r = self.cluster.replicas[n]
            r.full = True
        f.target = "replica %s" % n
        path = os.path.join(r.data, "filler")
        with open(path, "wb", buffering=0) as fh:
            st = os.statvfs(r.data)
            try:
                os.posix_fallocate(fh.fileno(), 0, max(st.f_bavail * st.f_frsize - (64 << 10), 4096))
            except OSError:
                pass
            chunk = b"\xff" * 4096
            try:
                while True:
                    fh.write(chunk)
                    fh.flush()
            except OSError:
                pass  # ENOSPC: full
        st = os.statvfs(r.data)
        f.note = "%d bytes left" % (st.f_bavail * st.f_frsize)
        self.hold(f)
        os.unlink(path)
        r.full = False
        r.registered = False  # it may have advertised a full disk meanwhile
        self.healed(f)

    # -- the schedule --

    def execute(self):
        cl = self.cluster
        kinds = ", ".join("%s@%.1fs+%.1fs" % (f.kind, f.start, f.hold) for f in self.faults)
        log("schedule %d (seed %d): volume %s, faults: %s" % (self.index, self.seed, self.vol, kinds))
        cl.set_ballast(self.avoid)
        wait_for("volume %s created" % self.vol,
                 lambda: cl.cli("volume", "create", self.vol, "--size", "64MiB", "--replicas", "2",
                                "--min-in-sync", "1").returncode == 0 or None, 30, every=0.2)
        st = cl.status(self.vol)
        self.placement = st["placement"]
        log("schedule %d: placement %s (the ballast was on %s)" % (self.index, ", ".join(self.placement), self.avoid))
        for n in CANDIDATE_SITES:
            self.candidates[n] = cl.candidate(self.vol, n, self.work)
        addrs = [self.candidates[n].addr for n in CANDIDATE_SITES]
        self.run = Run(self.vol, self.rng)
        self.writers = [Writer(w, self.run, addrs) for w in range(WRITERS)]
        # Writing starts; the fault clock starts at the first acknowledgement.
        t_begin = now()
        writer_loop(self.writers, lambda: bool(self.run.acks) or now() - t_begin > 60)
        if not self.run.acks:
            raise HarnessError("volume %s: no write acknowledged within 60 s of starting the candidates" % self.vol)
        self.t0 = self.run.acks[0][0]
        threads = [threading.Thread(target=self.run_fault, args=(f,), daemon=True) for f in self.faults]
        for t in threads:
            t.start()
        heal = {}

        def done_writing():
            if any(t.is_alive() for t in threads):
                return False
            if "t" not in heal:
                heal["t"] = now()
            last_heal = max([getattr(f, "healed_at", 0) for f in self.faults] + [heal["t"]])
            acked_after = self.run.acks and self.run.acks[-1][0] > last_heal
            if now() - last_heal > AFTER_HEAL_LIMIT:
                return True
            return acked_after and now() - last_heal >= AFTER_HEAL

        writer_loop(self.writers, done_writing)
        for t in threads:
            t.join()
        self.heal_all()
        for f in self.faults:
            if f.error:
                self.fail("fault %s could not be applied: %s" % (f.kind, f.error))
        last_heal = max(getattr(f, "healed_at", 0) for f in self.faults)
        # At least one acknowledged write after every fault (else the schedule proves nothing).
        for f in self.faults:
            h = getattr(f, "healed_at", None)
            if h is None or not any(a[0] > h for a in self.run.acks):
                self.fail("no write acknowledged after %s was healed (within %d s)" % (f.describe(), AFTER_HEAL_LIMIT))
        self.check()

    def heal_all(self):
        with self.lock:
            for c in self.candidates.values():
                if c.stopped:
                    c.signal(signal.SIGCONT)
                    c.stopped = False
                if not c.running():
                    c.start_until_ready(c.ready_line)
            for s in self.cluster.sites.values():
                if s.cut:
                    s.set_link(True)
            for n, r in self.cluster.replicas.items():
                p = os.path.join(r.data, "filler")
                if os.path.exists(p):
                    os.unlink(p)
                r.full = False
                if not r.running():
                    self.cluster.start_replica(n)

    # -- the checker --

    def check(self):
        cl = self.cluster
        # Both placed replicas in sync again.
        want = sorted(self.placement)

        def in_sync():
            st = cl.status(self.vol)
            return st.get("controller") and sorted(st["in_sync"]) == want and not st["out"] and st
        try:
            st = wait_for("both placed replicas of %s in sync" % self.vol, in_sync, IN_SYNC_LIMIT, every=0.2)
        except HarnessError as e:
            st = cl.cli("volume", "status", self.vol, check=False).stdout
            self.fail("%s; status:\n%s" % (e, st))
            self.stop_candidates()
            return
        # FLUSH and read everything through the serving controller. A controller may stop
        # serving meanwhile (a lease refresh late on a loaded machine): that is a client's
        # reconnect, not a lost write, so the read starts over through the next one.
        data, why = None, []
        for attempt in range(3):
            if attempt:
                try:
                    st = wait_for("both placed replicas of %s in sync" % self.vol, in_sync, IN_SYNC_LIMIT, every=0.2)
                except HarnessError as e:
                    why.append(str(e))
                    break
            n = st["controller"]["name"][len("ctl-"):]
            addr = self.candidates[n].addr
            try:
                h, epoch = wait_for("a connection to the serving controller ctl-%s" % n,
                                    lambda: connect_sync(self.vol, addr), 30, every=0.2)
                h.flush()
                buf = bytearray()
                for off in range(0, VOLUME_SIZE, 1 << 20):
                    buf += h.pread(1 << 20, off)
                h.shutdown()
                del h
                data = buf
                break
            except (HarnessError, nbd.Error) as e:
                why.append("through ctl-%s: %s" % (n, e))
                log("schedule %d: reading %s back through ctl-%s failed (%s); again through the serving one"
                    % (self.index, self.vol, n, e))
        if data is None:
            self.fail("reading %s back: %s" % (self.vol, "; ".join(why)))
            self.stop_candidates()
            return
        self.check_blocks(data)
        self.check_epochs()
        # Replicas identical: stop both candidates first.
        if not self.stop_candidates():
            self.fail("a candidate did not stop within 15 s of SIGTERM")
        files = [os.path.join(cl.replicas[p.split("/")[0]].data, "volumes", self.vol, "data") for p in self.placement]
        r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw"] + files, capture_output=True, text=True)
        if r.returncode != 0:
            self.fail("replicas %s differ (qemu-img compare exit %d): %s %s" % (
                " and ".join(self.placement), r.returncode, r.stdout.strip(), r.stderr.strip()))
        with open(files[0], "rb") as f:
            disk = f.read()
        if disk != bytes(data):
            first = next(i for i in range(NBLOCKS) if disk[i * BLOCK:(i + 1) * BLOCK] != data[i * BLOCK:(i + 1) * BLOCK]) \
                if len(disk) == len(data) else None
            self.fail("replica %s's data file differs from what was read through ctl-%s (size %d vs %d; first block %s)"
                      % (self.placement[0], n, len(disk), len(data), first))
        self.read_epoch = epoch

    def stop_candidates(self):
        ok = True
        for c in self.candidates.values():
            ok = c.terminate() and ok
        return ok

    def wdesc(self, key):
        w = self.run.writes[key]
        return "writer %d seq %d (%s, sent at %.2fs under epoch %d to %s, %s%s)" % (
            key[0], key[1], w["status"], w["t_issue"] - self.t0, w["epoch"], self.addr_name(w["addr"]),
            "FUA" if w["fua"] else "no FUA", ": " + w["why"] if w.get("why") else "")

    def addr_name(self, addr):
        for n, c in self.candidates.items():
            if c.addr == addr:
                return "ctl-" + n
        return str(addr)

    def check_blocks(self, data):
        lost, corrupt = [], []
        for b in range(NBLOCKS):
            chunk = bytes(data[b * BLOCK:(b + 1) * BLOCK])
            keys = self.run.by_block.get(b, [])
            acked = [k for k in keys if self.run.writes[k]["status"] == "acked"]
            last = max(acked, key=lambda k: k[1]) if acked else None
            found = parse_block(chunk)
            if found == "zero":
                if last is not None:
                    lost.append("block %d: expected %s, found zeros" % (b, self.wdesc(last)))
                continue
            if isinstance(found, str):
                corrupt.append("block %d: not a stamped block: %s" % (b, found))
                continue
            writer, block, seq, epoch = found
            key = (writer, seq)
            if block != b:
                corrupt.append("block %d: holds the stamp of block %d (writer %d seq %d)" % (b, block, writer, seq))
                continue
            w = self.run.writes.get(key)
            if w is None or w["block"] != b:
                corrupt.append("block %d: writer %d seq %d was never issued to it" % (b, writer, seq))
                continue
            if chunk != make_block(writer, b, seq, w["epoch"]):
                corrupt.append("block %d: writer %d seq %d's bytes differ from what was sent" % (b, writer, seq))
                continue
            if last is not None and seq < last[1]:
                kind = "a fenced controller's stale write landed" if w["epoch"] < self.run.writes[last]["epoch"] \
                    else "an older write landed after it"
                lost.append("block %d: expected %s, found the older %s: %s" % (b, self.wdesc(last), self.wdesc(key), kind))
        if lost:
            self.fail("%d acknowledged write(s) lost, e.g.\n    %s" % (len(lost), "\n    ".join(lost[:10])))
        if corrupt:
            self.fail("%d corrupt block(s), e.g.\n    %s" % (len(corrupt), "\n    ".join(corrupt[:10])))

    def check_epochs(self):
        by_epoch = {}
        for t, w, seq, epoch, addr in self.run.acks:
            by_epoch.setdefault(epoch, set()).add(addr)
        for epoch, addrs in sorted(by_epoch.items()):
            if len(addrs) > 1:
                self.fail("split brain: epoch %d acknowledged by %s" % (epoch, " and ".join(self.addr_name(a) for a in sorted(addrs))))
        # A write sent after some writer had an acknowledgement of epoch E may not be
        # acknowledged in an epoch below E: the new controller sealed the replicas first.
        firsts = sorted(self.run.first_ack_of_epoch.items(), key=lambda kv: kv[1])
        bad = []
        for t, w, seq, epoch, addr in self.run.acks:
            t_issue = self.run.writes[(w, seq)]["t_issue"]
            higher = [e for e, t_first in firsts if e > epoch and t_first < t_issue]
            if higher:
                bad.append("%s acknowledged after epoch %d had acknowledged (at %.2fs)" % (
                    self.wdesc((w, seq)), max(higher), self.run.first_ack_of_epoch[max(higher)] - self.t0))
        if bad:
            self.fail("%d write(s) acknowledged by a superseded epoch, e.g.\n    %s" % (len(bad), "\n    ".join(bad[:10])))

    def stats(self):
        acks = sorted(a[0] for a in self.run.acks)
        gaps = [b - a for a, b in zip(acks, acks[1:])]
        return {
            "acks": len(acks),
            "uncertain": self.run.uncertain,
            "epochs": sorted(set(a[3] for a in self.run.acks)),
            "max_gap": max(gaps) if gaps else 0.0,
            "flushes": self.run.flushes,
        }

    def cleanup_volume(self):
        self.stop_candidates()
        r = self.cluster.cli("volume", "delete", self.vol, check=False)
        if r.returncode != 0:
            log("schedule %d: volume delete %s failed: %s" % (self.index, self.vol, r.stderr.strip()))


# ---- main --------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the haven binary")
    ap.add_argument("--schedules", type=int, default=int(os.environ.get("HAVEN_FAULT_SCHEDULES", "10")))
    ap.add_argument("--seed", type=int, default=int(os.environ["HAVEN_FAULT_SEED"]) if os.environ.get("HAVEN_FAULT_SEED") else None)
    ap.add_argument("--kinds", default=os.environ.get("HAVEN_FAULT_KINDS") or ",".join(KINDS))
    ap.add_argument("--keep", action="store_true", default=os.environ.get("HAVEN_FAULT_KEEP", "") not in ("", "0"))
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    replay = "HAVEN_FAULT_SEED=%d HAVEN_FAULT_SCHEDULES=%d%s" % (
        seed, a.schedules, "" if kinds == KINDS else " HAVEN_FAULT_KINDS=%s" % ",".join(kinds))
    print("seed %d: replay with %s cargo nextest run -p haven --test volume_faults --no-capture" % (seed, replay), flush=True)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        print("volume_faults: unknown fault kind(s) %s; known: %s" % (",".join(bad), ",".join(KINDS)), file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("volume_faults: needs root (network namespaces, tmpfs mounts)", file=sys.stderr)
        return 2
    missing = [t for t in ("ip", "etcd", "qemu-img", "mount") if shutil.which(t) is None]
    if missing:
        print("volume_faults: missing %s (apt-get install iproute2 etcd-server qemu-utils)" % ", ".join(missing), file=sys.stderr)
        return 2
    if not os.access(a.bin, os.X_OK):
        print("volume_faults: no haven binary at %s" % a.bin, file=sys.stderr)
        return 2
    STATE["keep"] = a.keep
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    atexit.register(cleanup)
    remove_leftovers()
    base = os.environ.get("HAVEN_FAULT_DIR", tempfile.gettempdir())
    work = tempfile.mkdtemp(prefix="haven-volume-faults-%d-" % PID, dir=base)
    STATE["work"] = work
    results = []
    failed = []
    t_run = now()
    try:
        cluster = Cluster(os.path.abspath(a.bin), work, random.Random(seed))
        for i in range(a.schedules):
            s = Schedule(cluster, i, seed + i, kinds, work)
            t = now()
            try:
                s.execute()
            except HarnessError as e:
                s.fail("harness: %s" % e)
            finally:
                s.cleanup_volume()
            st = s.stats() if hasattr(s, "run") else {"acks": 0, "uncertain": 0, "epochs": [], "max_gap": 0.0, "flushes": 0}
            st["secs"] = now() - t
            results.append((s, st))
            faults = " ".join(f.describe() for f in s.faults)
            if s.failures:
                failed.append(s)
                print("schedule %d seed %d: FAIL (%d check(s)) %s" % (i, s.seed, len(s.failures), faults), flush=True)
            else:
                print("schedule %d seed %d: OK acks %d uncertain %d epochs %s max gap %.2fs %s (%.0f s)" % (
                    i, s.seed, st["acks"], st["uncertain"], ",".join(map(str, st["epochs"])), st["max_gap"], faults,
                    st["secs"]), flush=True)
    except HarnessError as e:
        STATE["keep"] = True
        print("volume_faults: the harness could not run: %s\nlogs: %s" % (e, work), file=sys.stderr, flush=True)
        return 2
    summary(results, time.monotonic() - t_run)
    if failed:
        STATE["keep"] = True
        print("\nFAILED: %d of %d schedule(s)" % (len(failed), len(results)))
        for s in failed:
            print("\nschedule %d (seed %d; this schedule alone: HAVEN_FAULT_SEED=%d HAVEN_FAULT_SCHEDULES=1%s; the whole run: %s)"
                  % (s.index, s.seed, s.seed, "" if kinds == KINDS else " HAVEN_FAULT_KINDS=" + ",".join(kinds), replay))
            print("  faults: %s" % " ".join(f.describe() for f in s.faults))
            print("  placement: %s" % ", ".join(s.placement))
            for msg in s.failures:
                print("  - " + msg)
            print("  logs: %s (ctl-a-%s.log, ctl-b-%s.log, replica-*.log, etcd-*.log)" % (work, s.vol, s.vol))
            for n, c in sorted(s.candidates.items()):
                print("  --- last lines of %s ---\n%s" % (c.logpath, c.tail(15)))
        return 1
    return 0


def summary(results, secs):
    kinds = {}
    for s, _ in results:
        for f in s.faults:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
    acks = sum(st["acks"] for _, st in results)
    unc = sum(st["uncertain"] for _, st in results)
    failovers = sum(max(len(st["epochs"]) - 1, 0) for _, st in results)
    gap = max([st["max_gap"] for _, st in results] + [0.0])
    stuck = [getattr(f, "stuck", 0) for s, _ in results for f in s.faults if f.kind == "stop-controller"]
    print("\nsummary (%.0f s)" % secs)
    print("  %-34s %d (%d failed)" % ("schedules", len(results), sum(1 for s, _ in results if s.failures)))
    for k in KINDS:
        if k in kinds:
            print("  %-34s %d" % ("faults: " + k, kinds[k]))
    if stuck:
        print("  %-34s %s" % ("writes in flight at each SIGSTOP", ",".join(map(str, stuck))))
    print("  %-34s %d" % ("acknowledged writes", acks))
    print("  %-34s %d" % ("uncertain writes", unc))
    print("  %-34s %d" % ("failovers seen (new epochs)", failovers))
    print("  %-34s %.2f s" % ("max gap between acks", gap))
    print("  %-5s %6s %6s %5s %8s %7s  %s" % ("sched", "acks", "uncert", "epoch", "max gap", "secs", "faults"))
    for s, st in results:
        print("  %-5d %6d %6d %5d %7.2fs %6.0fs  %s%s" % (s.index, st["acks"], st["uncertain"], len(st["epochs"]),
                                                       st["max_gap"], st["secs"], " ".join(f.kind for f in s.faults),
                                                       "  FAIL" if s.failures else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    code = 2
    try:
        code = main()
    except KeyboardInterrupt as e:
        print("volume_faults: interrupted (%s); cleaning up" % e, file=sys.stderr)
        code = 130
    finally:
        cleanup()
    sys.exit(code)
