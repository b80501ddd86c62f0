#!/usr/bin/python3
"""Replicated-volume benchmark of issue 12, side by side in one run.

Every configuration is driven by the same client (libnbd, the library behind nbdcopy, from
Python: Debian's python3-libnbd) from the host, against servers in two "site" network
namespaces (veth pairs; every replica shares this machine's one disk):

  qemu-nbd RF 1      qemu-nbd serving a raw file in site a
  2 x qemu-nbd       the same writes sent to two qemu-nbd exports at once (sites a and b):
                     the physical limit of RF 2 here, a request done when both answered
  haven RF 1         `haven volume serve` (host) -> one `haven replica serve` in site a
  haven RF 2         the same with replicas in sites a and b

Every configuration runs at once; ROUNDS (3) rounds measure the four in turn on fresh
storage, reported as medians (throughput, CPU) and pooled percentiles (latency).

Measures: sequential write throughput (SEQ_MIB of 1 MiB writes, 8 in flight, one FLUSH at
the end) and 4 KiB synchronous write latency (SYNC_WRITES writes with FUA at random
4 KiB-aligned offsets, one at a time; p50, p99). Then, for Haven only: failover time (a
client writing 4 KiB FUA writes continuously; `kill -9` of the serving controller; the gap
between the last acknowledgement before and the first after, reconnecting to the standby
candidate) and resync time of a replica that was away while 1 % of a 4 GiB volume was
written, against a full rebuild of the same replica.

  bash bench/volume.sh                  # the whole run; results in bench/results/
  SEQ_MIB=256 SYNC_WRITES=500 RESYNC_GIB=1 bash bench/volume.sh   # a quick run
Needs root (network namespaces), etcd, qemu-nbd, python3-libnbd.
"""

import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import nbd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEQ_MIB = int(os.environ.get("SEQ_MIB", "1024"))
SYNC_WRITES = int(os.environ.get("SYNC_WRITES", "10000"))
RESYNC_GIB = int(os.environ.get("RESYNC_GIB", "4"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
LEASE = os.environ.get("LEASE", "3s")
TAG = "hvb%d" % (os.getpid() % 10000)
STARTED = []  # Popen objects to stop at the end
NETNS = []  # namespaces to delete at the end


def log(msg):
    print("[volume-bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def die(msg):
    log("ERROR: " + msg)
    raise SystemExit(2)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def wait_for(what, cond, limit=60):
    t = time.time()
    while True:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
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
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# ---- sites -------------------------------------------------------------------------------


class Site:
    """A network namespace joined to the host by a veth pair: host 10.77.I.1, site 10.77.I.2."""

    def __init__(self, index, name):
        self.name = name
        self.ns = "%s-%s" % (TAG, name)
        self.host_if = "%sh%d" % (TAG, index)
        self.ip = "10.77.%d.2" % index
        run(["ip", "netns", "add", self.ns])
        NETNS.append(self)
        run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.ns])
        run(["ip", "addr", "add", "10.77.%d.1/24" % index, "dev", self.host_if])
        run(["ip", "link", "set", self.host_if, "up"])
        run(["ip", "netns", "exec", self.ns, "ip", "addr", "add", self.ip + "/24", "dev", "eth0"])
        run(["ip", "netns", "exec", self.ns, "ip", "link", "set", "eth0", "up"])
        run(["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"])
        run(["ip", "netns", "exec", self.ns, "ip", "route", "add", "default", "via", "10.77.%d.1" % index])

    def spawn(self, cmd, logfile):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + cmd, stdout=logfile, stderr=subprocess.STDOUT)
        STARTED.append(p)
        return p

    def delete(self):
        subprocess.run(["ip", "link", "del", self.host_if], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.ns], stderr=subprocess.DEVNULL)


def stop(p):
    if p.poll() is None:
        p.kill()
        p.wait()


def cleanup():
    for p in STARTED:
        stop(p)
    for s in NETNS:
        s.delete()


# ---- the client: one event loop for every configuration ------------------------------


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def write_all(handles, requests, window, flags=0):
    """Sends every (offset, buffer) request to every handle, at most `window` requests in
    flight; a request is done when all handles answered. Returns per-request latencies."""
    requests = iter(requests)
    inflight = {}  # id -> [start, {handle index: cookie}]
    lat = []
    next_id = 0
    exhausted = False
    while True:
        while not exhausted and len(inflight) < window:
            try:
                off, buf = next(requests)
            except StopIteration:
                exhausted = True
                break
            start = time.perf_counter()
            cookies = {i: h.aio_pwrite(buf, off, flags=flags) for i, h in enumerate(handles)}
            inflight[next_id] = [start, cookies]
            next_id += 1
        if not inflight:
            return lat
        r, w = [], []
        for h in handles:
            d = h.aio_get_direction()
            if d & nbd.AIO_DIRECTION_READ:
                r.append(h.aio_get_fd())
            if d & nbd.AIO_DIRECTION_WRITE:
                w.append(h.aio_get_fd())
        rr, ww, _ = select.select(r, w, [], 5)
        for h in handles:
            fd = h.aio_get_fd()
            if fd in rr:
                h.aio_notify_read()
            if fd in ww:
                h.aio_notify_write()
        now = time.perf_counter()
        for rid in list(inflight):
            start, cookies = inflight[rid]
            for i in list(cookies):
                if handles[i].aio_command_completed(cookies[i]):
                    del cookies[i]
            if not cookies:
                lat.append(now - start)
                del inflight[rid]


def flush_all(handles):
    for h in handles:
        h.flush()


def measure(label, uris, size):
    """Sequential throughput and 4 KiB FUA latency of one configuration."""
    handles = [connect(u) for u in uris]
    for h in handles:
        if h.get_size() < size:
            die("%s: export of %d bytes, need %d" % (label, h.get_size(), size))
    mib = b"\xa5" * (1 << 20)
    seq_bytes = SEQ_MIB << 20
    cpu0 = cpu_busy()
    t0 = time.perf_counter()
    write_all(handles, ((i << 20, mib) for i in range(SEQ_MIB)), window=8)
    flush_all(handles)
    seq_s = time.perf_counter() - t0
    cpu_seq = cpu_busy() - cpu0
    # The sequential phase's data written back before the latency phase starts, so that no
    # configuration pays for the writeback of the one before it.
    os.sync()
    rng = random.Random(12)
    block = bytes(rng.getrandbits(8) for _ in range(4096))
    blocks = size // 4096
    offsets = [rng.randrange(blocks) * 4096 for _ in range(SYNC_WRITES)]
    lat = write_all(handles, ((o, block) for o in offsets), window=1, flags=nbd.CMD_FLAG_FUA)
    lat.sort()
    for h in handles:
        h.shutdown()
    row = {
        "label": label,
        "seq_mib_s": seq_bytes / seq_s / (1 << 20),
        "seq_cpu_s_per_gib": cpu_seq / (seq_bytes / (1 << 30)),
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
        "lat": lat,
    }
    log("%-12s seq %.0f MiB/s, 4K FUA p50 %.2f ms p99 %.2f ms" % (label, row["seq_mib_s"], row["p50_ms"], row["p99_ms"]))
    return row


def combine(label, rounds):
    """One configuration over every round: median throughput and CPU, latency
    percentiles of all rounds' samples pooled."""
    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]
    lat = sorted(x for r in rounds for x in r["lat"])
    return {
        "label": label,
        "seq_mib_s": median([r["seq_mib_s"] for r in rounds]),
        "seq_range": (min(r["seq_mib_s"] for r in rounds), max(r["seq_mib_s"] for r in rounds)),
        "seq_cpu_s_per_gib": median([r["seq_cpu_s_per_gib"] for r in rounds]),
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


# ---- the servers ---------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def qemu_nbd(site, path, size, logs):
    with open(path, "wb") as f:
        f.truncate(size)
    port = free_port()
    site.spawn(["qemu-nbd", "-f", "raw", "-x", "vol", "-b", site.ip, "-p", str(port), "-t",
                "--shared=8", "--cache=writeback", "--aio=threads", path], logs)
    wait_for("qemu-nbd in site %s" % site.name, lambda: listening(site.ip, port))
    return "nbd://%s:%d/vol" % (site.ip, port)


class Haven:
    def __init__(self, binary, work, sites, logs):
        self.bin, self.work, self.logs = binary, work, logs
        port = free_port()
        peer = free_port()
        self.etcd = "http://10.77.1.1:%d" % port
        p = subprocess.Popen(["etcd", "--name", "bench", "--data-dir", os.path.join(work, "etcd"),
                              "--listen-client-urls", "http://0.0.0.0:%d" % port,
                              "--advertise-client-urls", self.etcd,
                              "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
                              "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
                              "--initial-cluster", "bench=http://127.0.0.1:%d" % peer],
                             stdout=logs, stderr=subprocess.STDOUT)
        STARTED.append(p)
        wait_for("etcd", lambda: listening("10.77.1.1", port))
        self.replicas = {}
        for s in sites:
            self.start_replica(s)

    def start_replica(self, site):
        data = os.path.join(self.work, "replica-" + site.name)
        os.makedirs(data, exist_ok=True)
        p = site.spawn([self.bin, "replica", "serve", "--data", data, "--site", site.name, "--node",
                        "n-" + site.name, "--listen", "%s:7410" % site.ip, "--etcd", self.etcd], self.logs)
        self.replicas[site.name] = (site, p, data)
        wait_for("replica in site %s" % site.name, lambda: listening(site.ip, 7410))

    def cli(self, *args):
        r = subprocess.run([self.bin] + list(args) + ["--etcd", self.etcd], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("haven %s: %s" % (" ".join(args), r.stderr.strip()))
        return r.stdout

    def create(self, name, size, replicas):
        # The replicas register in etcd just after they listen: retried until placed.
        last = []

        def created():
            try:
                self.cli("volume", "create", name, "--size", str(size), "--replicas", str(replicas))
                return True
            except RuntimeError as e:
                last[:] = [str(e)]
                raise
        try:
            wait_for("volume %s created" % name, created, limit=30)
        except SystemExit:
            die(last[0] if last else "volume create failed")

    def serve(self, name, candidate):
        port = free_port()
        p = subprocess.Popen([self.bin, "volume", "serve", name, "--listen", "127.0.0.1:%d" % port,
                              "--name", candidate, "--lease", LEASE, "--etcd", self.etcd],
                             stdout=self.logs, stderr=subprocess.STDOUT)
        STARTED.append(p)
        return p, port

    def status(self, name):
        return json.loads(self.cli("volume", "status", name, "--json"))

    def wait_serving(self, name, port):
        def ready():
            h = connect("nbd://127.0.0.1:%d/%s" % (port, name))
            h.shutdown()
            return True
        wait_for("volume %s served on %d" % (name, port), ready, limit=30)

    def wait_in_sync(self, name, count, limit=600):
        wait_for("volume %s with %d replicas in sync" % (name, count),
                 lambda: len(in_sync(self.status(name))) == count, limit=limit)


def in_sync(status):
    """The in-sync replica ids from `haven volume status NAME --json`."""
    if isinstance(status, list):
        status = status[0]
    return status["in_sync"]


# ---- failover and resync (Haven only) ----------------------------------------------------


def failover_gap(haven, name, serving, standby_port, ports):
    """Writes 4 KiB FUA continuously; kill -9 of the serving controller after 2 s; returns
    the gap between the last acknowledgement before the kill and the first after."""
    rng = random.Random(7)
    block = b"\x5a" * 4096
    acks = []
    killed_at = None
    h = connect("nbd://127.0.0.1:%d/%s" % (serving[1], name))
    t0 = time.perf_counter()
    while True:
        now = time.perf_counter()
        if killed_at is None and now - t0 > 2:
            serving[0].kill()
            killed_at = time.perf_counter()
        try:
            h.pwrite(block, rng.randrange(1 << 14) * 4096, nbd.CMD_FLAG_FUA)
            acks.append(time.perf_counter())
            if killed_at is not None and acks[-1] > killed_at:
                break
        except nbd.Error:
            h = None
            while h is None:
                if time.perf_counter() - t0 > 120:
                    die("no controller took over within 120 s")
                for port in ports:
                    try:
                        h = connect("nbd://127.0.0.1:%d/%s" % (port, name))
                        break
                    except nbd.Error:
                        pass
                if h is None:
                    time.sleep(0.05)
    before = [a for a in acks if a <= killed_at]
    return acks[-1] - before[-1], killed_at - before[-1]


def main():
    if os.geteuid() != 0:
        die("needs root (network namespaces)")
    haven_bin = os.environ.get("HAVEN", os.path.join(ROOT, "target/release/haven"))
    if not os.path.exists(haven_bin):
        die("no %s: cargo build --release -p haven" % haven_bin)
    work = tempfile.mkdtemp(prefix="haven-volume-bench-", dir=os.environ.get("BENCH_DIR", "/work"))
    logs = open(os.path.join(work, "servers.log"), "w")
    rows, extra = [], {}
    try:
        a, b = Site(1, "a"), Site(2, "b")
        size = max(SEQ_MIB << 20, 1 << 30)
        # Every configuration up at once; ROUNDS rounds, each measuring the four in turn
        # on fresh storage (an emptied image, a new volume), so that the machine's drift
        # (a shared VM) falls on all of them alike.
        images = [os.path.join(work, f) for f in ("q1.img", "q2.img")]
        u1 = qemu_nbd(a, images[0], size, logs)
        u2 = qemu_nbd(b, images[1], size, logs)
        haven = Haven(haven_bin, work, [a, b], logs)
        samples = {k: [] for k in ("qemu-nbd RF1", "2x qemu-nbd", "haven RF1", "haven RF2")}
        for rnd in range(ROUNDS):
            log("round %d of %d" % (rnd + 1, ROUNDS))
            for img in images:
                os.truncate(img, 0)
                os.truncate(img, size)
            samples["qemu-nbd RF1"].append(measure("qemu-nbd RF1", [u1], size))
            for img in images:
                os.truncate(img, 0)
                os.truncate(img, size)
            samples["2x qemu-nbd"].append(measure("2x qemu-nbd", [u1, u2], size))
            for rf in (1, 2):
                name = "rf%d-%d" % (rf, rnd)
                haven.create(name, size, rf)
                p, port = haven.serve(name, "bench")
                haven.wait_serving(name, port)
                uri = "nbd://127.0.0.1:%d/%s" % (port, name)
                samples["haven RF%d" % rf].append(measure("haven RF%d" % rf, [uri], size))
                stop(p)
                haven.cli("volume", "delete", name)
        rows = [combine(k, v) for k, v in samples.items()]
        # Failover: two candidates, kill -9 the serving one.
        haven.create("fo", 1 << 30, 2)
        c1 = haven.serve("fo", "c1")
        haven.wait_serving("fo", c1[1])
        c2 = haven.serve("fo", "c2")
        gap, quiet = failover_gap(haven, "fo", c1, c2[1], [c2[1], c1[1]])
        extra["failover_s"] = gap
        extra["failover_lease"] = LEASE
        log("failover: %.2f s between the last ack before kill -9 and the first after" % gap)
        stop(c2[0])
        # Resync vs full rebuild.
        extra.update(resync_vs_rebuild(haven, b))
    finally:
        cleanup()
        logs.close()
    report(rows, extra, work)
    # The volumes' files are GiBs: kept only when asked (BENCH_KEEP=1), for their logs.
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(work, ignore_errors=True)


def resync_vs_rebuild(haven, site_b):
    name = "rs"
    size = RESYNC_GIB << 30
    haven.create(name, size, 2)
    p, port = haven.serve(name, "c1")
    haven.wait_serving(name, port)
    uri = "nbd://127.0.0.1:%d/%s" % (port, name)
    h = connect(uri)
    mib = b"\x33" * (1 << 20)
    write_all([h], ((i << 20, mib) for i in range(size >> 20)), window=8)
    h.flush()
    # Replica b away while 1 % of the volume is written (1 MiB extents at random places).
    _, rp, _ = haven.replicas[site_b.name]
    rp.kill()
    rp.wait()
    rng = random.Random(99)
    extents = rng.sample(range(size >> 20), max(1, (size >> 20) // 100))
    h2 = None
    for _ in range(2):  # the first write after the kill may find it failing: retried once
        try:
            write_all([h], ((e << 20, b"\x44" * (1 << 20)) for e in extents), window=8)
            h.flush()
            break
        except nbd.Error:
            h = connect(uri)
    t = time.perf_counter()
    haven.start_replica(site_b)
    haven.wait_in_sync(name, 2)
    resync = time.perf_counter() - t
    log("resync after 1 %% written: %.2f s" % resync)
    # Full rebuild: the same replica with its disk lost.
    _, rp, data = haven.replicas[site_b.name]
    rp.kill()
    rp.wait()
    shutil.rmtree(data)
    h.pwrite(b"\x55" * 4096, 0, nbd.CMD_FLAG_FUA)  # lets the controller see it gone
    t = time.perf_counter()
    haven.start_replica(site_b)
    haven.wait_in_sync(name, 2, limit=1800)
    rebuild = time.perf_counter() - t
    log("full rebuild: %.2f s" % rebuild)
    h.shutdown()
    stop(p)
    return {"resync_s": resync, "rebuild_s": rebuild, "resync_gib": RESYNC_GIB, "extents": len(extents)}


def report(rows, extra, work):
    by = {r["label"]: r for r in rows}
    q1, q2, h1, h2 = by["qemu-nbd RF1"], by["2x qemu-nbd"], by["haven RF1"], by["haven RF2"]
    lines = [
        "Haven replicated-volume benchmark (issue 12)  %s" % time.strftime("%Y-%m-%d %H:%M"),
        "machine: nproc %d, kernel %s; every replica on the same disk; client: python3-libnbd on the host"
        % (os.cpu_count(), os.uname().release),
        "sequential: %d MiB of 1 MiB writes, 8 in flight, FLUSH at the end; sync: %d x 4 KiB FUA writes, one at a time"
        % (SEQ_MIB, SYNC_WRITES),
        "%d rounds, each measuring the four configurations in turn on fresh storage; seq and CPU: median of the rounds"
        " (range in brackets); p50/p99: all rounds' sync writes pooled; CPU s/GiB: busy CPU of the whole machine" % ROUNDS,
        "",
        "%-14s %10s %13s %12s %10s %10s" % ("", "seq MiB/s", "(range)", "CPU s/GiB", "p50 ms", "p99 ms"),
    ]
    for r in rows:
        lines.append("%-14s %10.0f %13s %12.2f %10.3f %10.3f" % (r["label"], r["seq_mib_s"], "(%.0f-%.0f)" % r["seq_range"], r["seq_cpu_s_per_gib"], r["p50_ms"], r["p99_ms"]))
    lines += [
        "",
        "haven RF1 / qemu-nbd throughput: %.2f (target >= 0.90)" % (h1["seq_mib_s"] / q1["seq_mib_s"]),
        "haven RF2 / 2x qemu-nbd throughput: %.2f (target >= 0.80)" % (h2["seq_mib_s"] / q2["seq_mib_s"]),
        "haven RF2 / 2x qemu-nbd p99 latency: %.2f (target <= 1.5)" % (h2["p99_ms"] / q2["p99_ms"]),
        "failover (last ack before kill -9 of the serving controller -> first ack after, lease %s): %.3f s (target < 5 s)"
        % (extra["failover_lease"], extra["failover_s"]),
        "resync of a replica away while 1 %% of %d GiB was written (%d x 1 MiB extents): %.2f s; full rebuild %.2f s; ratio %.3f (target < 0.1)"
        % (extra["resync_gib"], extra["extents"], extra["resync_s"], extra["rebuild_s"], extra["resync_s"] / extra["rebuild_s"]),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(HERE, "results", time.strftime("%Y-%m-%d") + "-volume.txt")
    with open(out, "w") as f:
        f.write(text)
    log("written %s (work dir %s; BENCH_KEEP=1 keeps it)" % (out, work))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        cleanup()
        raise
