#!/usr/bin/env python3
"""
bench/run.py - side-by-side benchmark: Haven against restic, rustic and borg.

Python 3 standard library only. Run from anywhere; paths default relative to the repo root
(the parent of this file's directory). See bench/README.md.

    bash bench/run.sh --scale 1.0 --reps 3
    python3 bench/run.py --tools restic,borg --scale 0.05 --reps 1

For each repetition and each tool (order rotated per repetition), on a fresh repository:
  day-1 backup of LIVE (= cp -a day1), rsync -a --delete day2/ LIVE/, day-2 backup of LIVE,
  drop page cache, full restore of the latest snapshot into an empty dir (verified against day2),
  check reading all data.
Every phase is timed with /usr/bin/time -f '%e %M' (wall seconds, peak RSS KiB).
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
PASSWORD = "bench-password-not-secret"
ALL_TOOLS = ["haven", "restic", "rustic", "borg"]
PEERS = ["restic", "rustic", "borg"]
PHASES = [("backup1", "day-1 backup"), ("backup2", "day-2 backup"),
          ("restore", "restore (cache dropped)"), ("check", "check reading all data")]
TIME = "/usr/bin/time"


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def die(msg):
    log("ERROR: " + msg)
    sys.exit(2)


def sh(cmd, **kw):
    """Run a helper command (not timed); raise on failure."""
    return subprocess.run(cmd, check=True, **kw)


def rmtree(path):
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--", path], check=True)


def sync_and_drop_caches(drop):
    os.sync()
    if not drop:
        return
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def can_drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- setup
def find_rustic():
    p = shutil.which("rustic")
    if p:
        return p
    p = os.path.expanduser("~/.cargo/bin/rustic")
    return p if os.access(p, os.X_OK) else None


def install_peers(tools, args):
    if args.no_install:
        return
    need_apt = []
    if not os.access(TIME, os.X_OK):
        need_apt.append("time")
    if not shutil.which("rsync"):
        need_apt.append("rsync")
    if "restic" in tools and not shutil.which("restic"):
        need_apt.append("restic")
    if "borg" in tools and not shutil.which("borg"):
        need_apt.append("borgbackup")
    if need_apt:
        log("apt-get install %s" % " ".join(need_apt))
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq"] + need_apt, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if "rustic" in tools and not find_rustic():
        if args.skip_rustic_install:
            log("rustic not installed and --skip-rustic-install given: dropping rustic")
            tools.remove("rustic")
        else:
            tdir = os.environ.get("RUSTIC_BUILD_DIR", "/tmp/rustic-build")
            log("cargo install rustic-rs --locked (CARGO_TARGET_DIR=%s, ~10+ minutes)" % tdir)
            sh(["nice", "-n", "19", "cargo", "install", "rustic-rs", "--locked"],
               env=dict(os.environ, CARGO_TARGET_DIR=tdir), cwd="/tmp")


def build_haven(tools, args):
    if "haven" not in tools:
        return None
    if args.haven:
        path = os.path.abspath(args.haven)
    else:
        path = os.path.join(REPO_ROOT, "target", "release", "haven")
        if not args.no_build:
            log("cargo build --release -p haven")
            r = subprocess.run(["cargo", "build", "--release", "-p", "haven"], cwd=REPO_ROOT)
            if r.returncode != 0:
                log("haven build FAILED: dropping haven")
                tools.remove("haven")
                return None
    if not os.access(path, os.X_OK):
        log("haven binary %s not found: dropping haven" % path)
        tools.remove("haven")
        return None
    return path


def tool_version(tool, bins):
    cmd = {"restic": [bins["restic"], "version"], "borg": [bins["borg"], "--version"],
           "rustic": [bins["rustic"], "--version"], "haven": [bins["haven"], "--version"]}[tool]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        line = (out.stdout or out.stderr).strip().splitlines()
        return line[0].strip() if line else "unknown"
    except Exception as e:  # noqa: BLE001
        return "unknown (%s)" % e


# ----------------------------------------------------------------------------- dataset
def manifest(root):
    """Sorted list of (relpath, kind, size, sha256|link target, mtime, mode) of a tree."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        rel_d = os.path.relpath(d, root)
        if rel_d != ".":
            st = os.lstat(d)
            out.append((rel_d, "d", 0, "", 0, st.st_mode & 0o7777))
        for name in sorted(files + [x for x in dirs if os.path.islink(os.path.join(d, x))]):
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if os.path.islink(p):
                out.append((rel, "l", 0, os.readlink(p), 0, 0))
                continue
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
            out.append((rel, "f", st.st_size, h.hexdigest(), int(st.st_mtime), st.st_mode & 0o7777))
    out.sort()
    return out


def compare_manifests(want, got):
    """Returns (content_errors, metadata_warnings) as short strings."""
    w = {e[0]: e for e in want}
    g = {e[0]: e for e in got}
    errors, warns = [], []
    missing = sorted(set(w) - set(g))
    extra = sorted(set(g) - set(w))
    if missing:
        errors.append("%d missing (e.g. %s)" % (len(missing), missing[0]))
    if extra:
        errors.append("%d unexpected (e.g. %s)" % (len(extra), extra[0]))
    bad_content = [p for p in w if p in g and (w[p][1] != g[p][1] or w[p][2] != g[p][2] or w[p][3] != g[p][3])]
    if bad_content:
        errors.append("%d differ in type/size/content (e.g. %s)" % (len(bad_content), sorted(bad_content)[0]))
    bad_mtime = [p for p in w if p in g and w[p][1] == "f" and w[p][4] != g[p][4]]
    bad_mode = [p for p in w if p in g and w[p][5] != g[p][5]]
    if bad_mtime:
        warns.append("%d files with different mtime" % len(bad_mtime))
    if bad_mode:
        warns.append("%d entries with different mode" % len(bad_mode))
    return errors, warns


def prepare_dataset(args, work):
    gen = os.path.join(args.shared, "bench", "gen_dataset.py")
    if not os.path.isfile(gen):
        die("dataset generator not found: %s (use --shared DIR)" % gen)
    ddir = os.path.join(work, "data", "scale%s-seed%d" % (args.scale, args.seed))
    meta_path = os.path.join(ddir, "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("scale") == args.scale and meta.get("seed") == args.seed:
            log("reusing dataset %s" % ddir)
            return ddir, meta
    rmtree(ddir)
    os.makedirs(ddir)
    log("generating dataset scale=%s seed=%d in %s" % (args.scale, args.seed, ddir))
    procs = {}
    for day in (1, 2):
        out = open(os.path.join(ddir, "gen-day%d.json" % day), "w")
        procs[day] = (subprocess.Popen([sys.executable, gen, "--out", os.path.join(ddir, "day%d" % day),
                                        "--day", str(day), "--seed", str(args.seed), "--scale", str(args.scale)],
                                       stdout=out), out)
    summ = {}
    for day, (p, out) in procs.items():
        if p.wait() != 0:
            die("gen_dataset.py --day %d failed" % day)
        out.close()
        with open(os.path.join(ddir, "gen-day%d.json" % day)) as f:
            summ[day] = json.load(f)
    log("hashing day2 for restore verification")
    meta = {"scale": args.scale, "seed": args.seed,
            "day1_bytes": summ[1]["total"]["bytes"], "day1_files": summ[1]["total"]["files"],
            "day2_bytes": summ[2]["total"]["bytes"], "day2_files": summ[2]["total"]["files"],
            "day2_manifest": manifest(os.path.join(ddir, "day2"))}
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f)
    os.rename(meta_path + ".tmp", meta_path)
    return ddir, meta


# ----------------------------------------------------------------------------- tools
class Tool:
    """Command lines of one tool. repo/cache/live/target are absolute paths."""

    def __init__(self, name, binary, cache):
        self.name, self.bin, self.cache = name, binary, cache

    def env(self):
        e = dict(os.environ)
        e["XDG_CACHE_HOME"] = self.cache  # anything that honours XDG keeps its cache in the work dir
        if self.name == "restic":
            e["RESTIC_PASSWORD"] = PASSWORD
            e["RESTIC_CACHE_DIR"] = self.cache
        elif self.name == "rustic":
            e["RUSTIC_PASSWORD"] = PASSWORD
            e["RUSTIC_CACHE_DIR"] = self.cache
        elif self.name == "borg":
            e["BORG_PASSPHRASE"] = PASSWORD
            e["BORG_BASE_DIR"] = self.cache  # config, keys, security and cache dirs
            e["BORG_DISPLAY_PASSPHRASE"] = "no"
            e["BORG_RELOCATED_REPO_ACCESS_IS_OK"] = "yes"
            e["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
        elif self.name == "haven":
            e["HAVEN_PASSWORD"] = PASSWORD
        return e

    def init(self, repo):
        b = self.bin
        return {"restic": [b, "-r", repo, "--cache-dir", self.cache, "init", "--repository-version", "2"],
                "rustic": [b, "-r", repo, "--cache-dir", self.cache, "init"],
                "borg": [b, "init", "-e", "repokey", repo],
                "haven": [b, "init", "--repo", repo]}[self.name]

    def backup(self, repo, live, day):
        b = self.bin
        return {"restic": [b, "-r", repo, "--cache-dir", self.cache, "backup", live],
                "rustic": [b, "-r", repo, "--cache-dir", self.cache, "backup", live],
                "borg": [b, "create", "--compression", "lz4", "%s::day%d" % (repo, day), live],
                "haven": [b, "backup", "--repo", repo, live]}[self.name]

    def restore(self, repo, target):
        """Returns (argv, cwd)."""
        b = self.bin
        return {"restic": ([b, "-r", repo, "--cache-dir", self.cache, "restore", "latest", "--target", target], None),
                "rustic": ([b, "-r", repo, "--cache-dir", self.cache, "restore", "latest", target], None),
                "borg": ([b, "extract", "%s::day2" % repo], target),
                "haven": ([b, "restore", "--repo", repo, "latest", "--target", target], None)}[self.name]

    def check(self, repo):
        b = self.bin
        return {"restic": [b, "-r", repo, "--cache-dir", self.cache, "check", "--read-data"],
                "rustic": [b, "-r", repo, "--cache-dir", self.cache, "check", "--read-data"],
                "borg": [b, "check", "--verify-data", repo],
                "haven": [b, "check", "--repo", repo, "--read-data"]}[self.name]


def timed(argv, env, logf, cwd=None):
    """Run argv under /usr/bin/time; returns (ok, wall_s, peak_rss_kib)."""
    tf = logf + ".time"
    with open(logf, "ab") as lf:
        lf.write(("$ %s%s\n" % (" ".join(argv), "   (cwd %s)" % cwd if cwd else "")).encode())
        lf.flush()
        r = subprocess.run([TIME, "-f", "%e %M", "-o", tf, "--"] + argv, env=env, cwd=cwd,
                           stdout=lf, stderr=lf, stdin=subprocess.DEVNULL)
    wall, rss = None, None
    try:
        with open(tf) as f:
            last = [l for l in f.read().splitlines() if l.strip()][-1].split()
        wall, rss = float(last[0]), int(last[1])
    except Exception:  # noqa: BLE001
        pass
    os.unlink(tf) if os.path.exists(tf) else None
    return r.returncode == 0 and wall is not None, wall, rss


def du_bytes(path):
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def find_restored_root(target, live, want_top):
    """Tools put the restored tree at different places under target; find it."""
    cands = [os.path.join(target, live.lstrip("/")), os.path.join(target, os.path.basename(live)), target]
    for c in cands:
        if os.path.isdir(c) and all(os.path.exists(os.path.join(c, t)) for t in want_top):
            return c
    return None


def run_one(tool, rep, dataset, meta, work, drop, logdir):
    """One fresh-repository run of one tool. Returns a result dict."""
    res = {"tool": tool.name, "rep": rep, "ok": True, "errors": [], "warnings": []}
    live = os.path.join(work, "live")
    repo = os.path.join(work, "repo-" + tool.name)
    target = os.path.join(work, "restore")
    for p in (live, repo, target, tool.cache):
        rmtree(p)
    os.makedirs(tool.cache)
    logf = os.path.join(logdir, "%s-rep%d.log" % (tool.name, rep))
    if os.path.exists(logf):
        os.unlink(logf)
    env = tool.env()

    def phase(key, argv, cwd=None):
        ok, wall, rss = timed(argv, env, logf, cwd)
        res[key] = {"s": wall, "rss_kib": rss, "ok": ok}
        if not ok:
            res["ok"] = False
            res["errors"].append("%s failed (see %s)" % (key, logf))
            log("  %s %s FAILED" % (tool.name, key))
        else:
            log("  %s %-8s %7.2f s  %6.0f MiB" % (tool.name, key, wall, rss / 1024))
        return ok

    try:
        sh(["cp", "-a", os.path.join(dataset, "day1"), live])
        ok, _, _ = timed(tool.init(repo), env, logf)
        if not ok:
            res["ok"] = False
            res["errors"].append("init failed (see %s)" % logf)
            return res
        os.sync()
        if not phase("backup1", tool.backup(repo, live, 1)):
            return res
        res["size_day1"] = du_bytes(repo)
        sh(["rsync", "-a", "--delete", os.path.join(dataset, "day2") + "/", live + "/"])
        os.sync()
        if not phase("backup2", tool.backup(repo, live, 2)):
            return res
        res["size_day2"] = du_bytes(repo)
        res["growth_day2"] = res["size_day2"] - res["size_day1"]
        os.makedirs(target)
        sync_and_drop_caches(drop)
        argv, cwd = tool.restore(repo, target)
        if phase("restore", argv, cwd=target if cwd else None):
            want = meta["day2_manifest"]
            top = sorted({e[0].split("/")[0] for e in want})
            root = find_restored_root(target, live, top)
            if root is None:
                res["ok"] = False
                res["errors"].append("RESTORE MISMATCH: restored tree not found under %s" % target)
            else:
                errs, warns = compare_manifests(want, manifest(root))
                if errs:
                    res["ok"] = False
                    res["errors"].append("RESTORE MISMATCH vs day2: " + "; ".join(errs))
                    log("  %s RESTORE MISMATCH: %s" % (tool.name, "; ".join(errs)))
                else:
                    res["restore_verified"] = True
                res["warnings"] += warns
        rmtree(target)
        os.sync()
        phase("check", tool.check(repo))
    except subprocess.CalledProcessError as e:
        res["ok"] = False
        res["errors"].append("harness step failed: %s" % e)
    finally:
        for p in (live, repo, target):
            rmtree(p)
    return res


# ----------------------------------------------------------------------------- report
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec, width):
    return ("%" + str(width) + spec) % v if v is not None else "%*s" % (width, "-")


def report(args, tools, versions, meta, results, drop, started):
    mb = 1e6
    phase_bytes = {"backup1": meta["day1_bytes"], "backup2": meta["day2_bytes"],
                   "restore": meta["day2_bytes"], "check": meta["day2_bytes"]}
    L = []
    L.append("Haven side-by-side benchmark  %s  scale %s  reps %d" % (started.strftime("%Y-%m-%d %H:%M"), args.scale, args.reps))
    L.append("machine: nproc %d, kernel %s, %.1f GiB RAM, %s" % (
        os.cpu_count(), platform.release(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, cpu_model()))
    L.append("dataset: gen_dataset.py seed %d scale %s: day1 %.1f MB / %d files, day2 %.1f MB / %d files" % (
        args.seed, args.scale, meta["day1_bytes"] / mb, meta["day1_files"], meta["day2_bytes"] / mb, meta["day2_files"]))
    L.append("tools:")
    for t in tools:
        L.append("  %-7s %s" % (t, versions.get(t, "?")))
    L.append("settings: encryption on for all; restic repo v2 (compression auto); rustic defaults; borg repokey + lz4;")
    L.append("  fresh repo per tool and rep, tool order rotated per rep, caches in the work dir,")
    L.append("  page cache %s before restore; medians over reps; MB/s = dataset bytes (day1 for day-1 backup, else day2) / s" %
             ("dropped" if drop else "NOT DROPPED (no permission)"))
    L.append("")
    by_tool = {t: [r for r in results if r["tool"] == t] for t in tools}
    L.append("%-24s %-7s %9s %9s %9s" % ("phase", "tool", "time_s", "MB/s", "rss_MiB"))
    L.append("-" * 62)
    ratios = []
    for key, title in PHASES:
        meds = {}
        for i, t in enumerate(tools):
            # a phase counts if its command succeeded (and, for restore, the restored tree matched)
            rs = [r[key] for r in by_tool[t] if key in r and r[key]["ok"] and
                  (key != "restore" or r.get("restore_verified"))]
            s = med([x["s"] for x in rs])
            rss = med([x["rss_kib"] for x in rs])
            meds[t] = s
            thr = phase_bytes[key] / mb / s if s else None
            note = "  FAILED in %d/%d reps" % (len(by_tool[t]) - len(rs), len(by_tool[t])) if len(rs) < len(by_tool[t]) else ""
            L.append("%-24s %-7s %s %s %s%s" % (title if i == 0 else "", t, fmt(s, ".2f", 9), fmt(thr, ".1f", 9),
                                                 fmt(rss / 1024 if rss else None, ".0f", 9), note))
        peers = {t: v for t, v in meds.items() if t in PEERS and v}
        if "haven" in meds and meds["haven"] and peers:
            best = min(peers, key=peers.get)
            ratios.append("  %-24s %5.2fx  (fastest peer %s %.2f s / haven %.2f s)" % (
                title, peers[best] / meds["haven"], best, peers[best], meds["haven"]))
    L.append("")
    L.append("%-10s %18s %18s" % ("repository", "after day 1 (MiB)", "day-2 growth (MiB)"))
    L.append("-" * 48)
    sizes = {}
    for t in tools:
        s1 = med([r.get("size_day1") for r in by_tool[t]])
        g2 = med([r.get("growth_day2") for r in by_tool[t]])
        sizes[t] = (s1, g2)
        L.append("%-10s %18s %18s" % (t, fmt(s1 / 2**20 if s1 else None, ".1f", 18), fmt(g2 / 2**20 if g2 is not None else None, ".1f", 18)))
    if "haven" in sizes:
        for idx, title in ((0, "repo after day 1"), (1, "day-2 growth")):
            peers = {t: v[idx] for t, v in sizes.items() if t in PEERS and v[idx]}
            hv = sizes["haven"][idx]
            if peers and hv is not None:
                best = min(peers, key=peers.get)
                ratios.append("  %-24s %5.2fx  (haven / smallest peer %s; <1 = haven smaller)" % (title, hv / peers[best], best))
    if ratios:
        L.append("")
        L.append("Haven vs best peer (time: peer_s / haven_s, >1 = Haven faster; size: haven / peer)")
        L += ratios
    L.append("")
    L.append("restore verification (sha256 of every file, paths, sizes vs day2):")
    fails = []
    for t in tools:
        n = len(by_tool[t])
        okv = sum(1 for r in by_tool[t] if r.get("restore_verified"))
        warns = sorted({w for r in by_tool[t] for w in r["warnings"]})
        L.append("  %-7s %d/%d verified%s" % (t, okv, n, ("; warnings: " + ", ".join(warns)) if warns else ""))
        for r in by_tool[t]:
            for e in r["errors"]:
                fails.append("  %s rep %d: %s" % (t, r["rep"], e))
    L.append("")
    L.append("raw (rep: b1 b2 restore check seconds | repo day1 / growth MiB):")
    for r in results:
        g = lambda k: fmt(r[k]["s"] if k in r and r[k]["ok"] else None, ".2f", 7)  # noqa: E731
        L.append("  %-7s rep%d: %s %s %s %s | %s / %s%s" % (
            r["tool"], r["rep"], g("backup1"), g("backup2"), g("restore"), g("check"),
            fmt(r["size_day1"] / 2**20 if "size_day1" in r else None, ".1f", 7),
            fmt(r["growth_day2"] / 2**20 if "growth_day2" in r else None, ".1f", 6), "" if r["ok"] else "  FAILED"))
    if fails:
        L.append("")
        L.append("!!!!!!!!!! FAILURES !!!!!!!!!!")
        L += fails
    return "\n".join(L) + "\n", bool(fails)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma list of haven,restic,rustic,borg")
    ap.add_argument("--haven", help="haven binary to use (skips cargo build)")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build; use target/release/haven")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(REPO_ROOT), "shared"),
                    help="shared folder holding bench/gen_dataset.py (default ../shared next to the repo)")
    ap.add_argument("--work", default=os.path.join(HERE, "work"), help="work dir (datasets, repos, caches, logs)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--skip-rustic-install", action="store_true")
    ap.add_argument("--no-install", action="store_true", help="never install peers")
    a = ap.parse_args()
    a.shared = os.path.abspath(a.shared)
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ALL_TOOLS:
            die("unknown tool %s" % t)
    started = datetime.datetime.now()
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)

    install_peers(tools, a)
    bins = {"restic": shutil.which("restic"), "borg": shutil.which("borg"), "rustic": find_rustic()}
    bins["haven"] = build_haven(tools, a)
    for t in list(tools):
        if not bins[t]:
            log("%s not available: dropping it" % t)
            tools.remove(t)
    if not tools:
        die("no tools to run")
    versions = {t: tool_version(t, bins) for t in tools}
    for t in tools:
        log("%-7s %s  (%s)" % (t, versions[t], bins[t]))

    dataset, meta = prepare_dataset(a, work)
    drop = can_drop_caches()
    if not drop:
        log("WARNING: cannot write /proc/sys/vm/drop_caches (not root?): restores run with a warm page cache")
    logdir = os.path.join(work, "logs", started.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(logdir)
    results = []
    for rep in range(a.reps):
        order = tools[rep % len(tools):] + tools[:rep % len(tools)]
        log("rep %d/%d order %s" % (rep + 1, a.reps, ",".join(order)))
        for t in order:
            tool = Tool(t, bins[t], os.path.join(work, "cache", t))
            results.append(run_one(tool, rep + 1, dataset, meta, work, drop, logdir))
            with open(os.path.join(logdir, "results.json"), "w") as f:
                json.dump(results, f, indent=1)

    text, failed = report(a, tools, versions, meta, results, drop, started)
    os.makedirs(a.results, exist_ok=True)
    out = os.path.join(a.results, "%s-scale%s.txt" % (started.strftime("%Y-%m-%d"), a.scale))
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    log("written %s (logs in %s)" % (out, logdir))
    if failed:
        log("SOME RUNS FAILED - see FAILURES above")
        sys.exit(1)


if __name__ == "__main__":
    main()
