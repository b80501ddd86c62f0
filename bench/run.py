#!/usr/bin/env python3
"""
bench/run.py - side-by-side benchmark: Haven against restic, rustic and borg.

Python 3 standard library only. Run from anywhere; paths default relative to the repo root
(the parent of this file's directory). See bench/README.md.

    bash bench/run.sh --scale 1.0 --reps 3
    python3 bench/run.py --tools restic,borg --scale 0.05 --reps 1
    bash bench/run.sh --target s3 --scale 1.0 --reps 3    # haven local + haven/restic/rustic to S3

For each repetition and each tool (order rotated per repetition), on a fresh repository:
  day-1 backup of LIVE (= cp -a day1), rsync -a --delete day2/ LIVE/, day-2 backup of LIVE,
  drop page cache, full restore of the latest snapshot into an empty dir (verified against day2),
  check reading all data.
Every phase is timed with /usr/bin/time -f '%e %M %U %S' (wall seconds, peak RSS KiB, CPU seconds).

--target s3 (or local,s3) adds runs against a loopback S3 server (s3s-fs by default, moto as
fallback) started by this script: one fresh server process, data dir and bucket per tool and rep,
data dir on the same disk as the local repositories (the work dir).
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
S3_TOOLS = ["haven", "restic", "rustic"]  # borg has no S3 backend
TARGETS = ["local", "s3"]
S3_ACCESS_KEY = "benchaccesskey"
S3_SECRET_KEY = "bench-secret-key-not-secret"
S3_REGION = "us-east-1"
# s3s-fs 0.15+ needs a newer rustc than many machines have; 0.14.1 builds on rustc >= 1.92
S3S_FS_VERSION = "0.14.1"


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


# ----------------------------------------------------------------------------- S3 server
# Three small patches to s3s-fs 0.14.1 so that it behaves like a production S3 server on loopback:
#  1. the empty `delimiter=` that restic (minio-go) sends for a recursive listing is taken as a real
#     delimiter and nothing is listed (restic check then reports every pack missing); S3 treats an
#     empty delimiter as none;
#  2. accepted connections lack TCP_NODELAY: the response body waits for the ACK of the headers
#     (Nagle) while the client delays that ACK, ~40 ms per small GET;
#  3. object bodies are streamed in 4 KiB reads and writes (a syscall pair per 4 KiB); 256 KiB here.
S3S_PATCHES = [
    ("src/s3.rs", "let delimiter = input.delimiter.as_deref();",
     "let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());"),
    ("src/main.rs", "let conn = http_server.serve_connection(TokioIo::new(socket), service.clone());",
     "let _ = socket.set_nodelay(true);\n        "
     "let conn = http_server.serve_connection(TokioIo::new(socket), service.clone());"),
    ("src/s3.rs", "let body = bytes_stream(ReaderStream::with_capacity(file, 4096), content_length_usize);",
     "let body = bytes_stream(ReaderStream::with_capacity(file, 256 * 1024), content_length_usize);"),
]
S3S_PATCH_NOTE = "patched: empty list delimiter = none, TCP_NODELAY, 256 KiB read buffer"


def s3s_fs_path(work):
    return os.path.join(work, "s3s-fs", "bin", "s3s-fs")


def s3s_stamp():
    return "s3s-fs %s %s" % (S3S_FS_VERSION, json.dumps(S3S_PATCHES))


def find_s3s_fs(work):
    """The patched s3s-fs built by build_s3s_fs, if it was built with the current patches."""
    p = s3s_fs_path(work)
    try:
        with open(os.path.join(work, "s3s-fs", "STAMP")) as f:
            fresh = f.read() == s3s_stamp()
    except OSError:
        fresh = False
    return p if fresh and os.access(p, os.X_OK) else None


def build_s3s_fs(work):
    """Fetch s3s-fs S3S_FS_VERSION from crates.io with cargo, apply S3S_PATCHES, and build it into
    WORK/s3s-fs/bin (niced; sources and target dir under /tmp, outside this workspace)."""
    tdir = os.environ.get("S3S_BUILD_DIR", "/tmp/s3s-build")
    fetch, src = tdir + "-fetch", tdir + "-src"
    os.makedirs(os.path.join(fetch, "src"), exist_ok=True)
    with open(os.path.join(fetch, "Cargo.toml"), "w") as f:
        f.write('[package]\nname = "s3s-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n'
                '[dependencies]\ns3s-fs = "=%s"\n\n[workspace]\n' % S3S_FS_VERSION)
    open(os.path.join(fetch, "src", "lib.rs"), "w").close()
    log("fetching s3s-fs %s (cargo metadata)" % S3S_FS_VERSION)
    out = subprocess.run(["cargo", "metadata", "--format-version", "1"], cwd=fetch,
                         capture_output=True, text=True, check=True).stdout
    pkg = [x for x in json.loads(out)["packages"] if x["name"] == "s3s-fs"][0]
    rmtree(src)
    shutil.copytree(os.path.dirname(pkg["manifest_path"]), src)
    for rel, before, after in S3S_PATCHES:
        path = os.path.join(src, rel)
        with open(path) as f:
            code = f.read()
        if code.count(before) != 1:
            raise RuntimeError("s3s-fs %s: line to patch not found in %s: %s" % (S3S_FS_VERSION, rel, before))
        with open(path, "w") as f:
            f.write(code.replace(before, after))
    log("cargo install --path %s --features binary --locked (CARGO_TARGET_DIR=%s, ~5-10 minutes)" % (src, tdir))
    sh(["nice", "-n", "19", "cargo", "install", "--force", "--path", src, "--features", "binary", "--locked",
        "--root", os.path.join(work, "s3s-fs")], env=dict(os.environ, CARGO_TARGET_DIR=tdir), cwd=src)
    with open(os.path.join(work, "s3s-fs", "STAMP"), "w") as f:
        f.write(s3s_stamp())


def find_moto():
    return shutil.which("moto_server")


def install_s3_server(args, work):
    """Returns (kind, binary) of the loopback S3 server to use, installing it when missing."""
    if args.s3_server == "s3s-fs":
        b = find_s3s_fs(work)
        if not b and not args.no_install:
            try:
                build_s3s_fs(work)
            except (subprocess.CalledProcessError, RuntimeError, OSError, KeyError, IndexError, ValueError) as e:
                log("building s3s-fs failed: %s" % e)
            b = find_s3s_fs(work)
        if b:
            return "s3s-fs", b
        log("s3s-fs not available: falling back to moto (in-memory, Python; slower)")
    b = find_moto()
    if not b and not args.no_install:
        log("pip install 'moto[server]'")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "moto[server]"])
        b = find_moto()
    if not b:
        die("no S3 server available (s3s-fs or moto_server)")
    return "moto", b


def free_port():
    import socket
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def proc_cpu_s(pid):
    """user+system CPU seconds of a running process (and its reaped children)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class S3Server:
    """One loopback S3 server process with its data in `root` (s3s-fs) or in memory (moto)."""

    def __init__(self, kind, binary, root, logf):
        self.kind, self.bin, self.root, self.logf = kind, binary, root, logf
        self.proc, self.port = None, None

    def version(self):
        if self.kind == "s3s-fs":
            out = subprocess.run([self.bin, "--version"], capture_output=True, text=True)
            return "%s, %s" % ((out.stdout or out.stderr).strip() or "s3s-fs", S3S_PATCH_NOTE)
        try:
            out = subprocess.run([sys.executable, "-c", "import moto; print(moto.__version__)"],
                                 capture_output=True, text=True)
            return "moto_server %s" % out.stdout.strip()
        except Exception:  # noqa: BLE001
            return "moto_server"

    def start(self):
        rmtree(self.root)
        os.makedirs(self.root)
        self.port = free_port()
        if self.kind == "s3s-fs":
            argv = [self.bin, "--host", "127.0.0.1", "--port", str(self.port),
                    "--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY, self.root]
        else:
            argv = [self.bin, "-H", "127.0.0.1", "-p", str(self.port)]
        lf = open(self.logf, "ab")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(argv, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL, env=env)
        lf.close()
        import socket
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s (see %s)" % (self.kind, self.proc.returncode, self.logf))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("%s did not listen on port %d within 30 s" % (self.kind, self.port))

    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def make_bucket(self, bucket):
        if self.kind == "s3s-fs":
            os.makedirs(os.path.join(self.root, bucket))  # a bucket is a folder under the root
        else:
            import urllib.request
            req = urllib.request.Request("%s/%s" % (self.endpoint(), bucket), method="PUT")
            urllib.request.urlopen(req, timeout=30).read()  # moto does not check signatures

    def size(self, bucket):
        """Bytes stored in the bucket, or None when the server keeps data in memory."""
        if self.kind == "s3s-fs":
            return du_bytes(os.path.join(self.root, bucket))
        return None

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid) if self.proc else None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        rmtree(self.root)


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


def prepare_pg_dataset(args, work):
    """The PostgreSQL dataset (bench/pg_dataset.py): a data directory and its dumps, two days."""
    ddir = os.path.join(work, "data", "pg-s%d-seed%d" % (args.pg_scale, args.seed))
    meta_path = os.path.join(ddir, "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("pg_scale") == args.pg_scale and meta.get("seed") == args.seed:
            log("reusing dataset %s" % ddir)
            return ddir, meta
    if not os.path.isdir(os.path.join(ddir, "day2")) or not os.path.isfile(os.path.join(ddir, "gen.json")):
        rmtree(ddir)
        os.makedirs(ddir)
        log("generating the PostgreSQL dataset (pgbench scale %d, seed %d) in %s" % (args.pg_scale, args.seed, ddir))
        with open(os.path.join(ddir, "gen.json.tmp"), "w") as out:
            r = subprocess.run([sys.executable, os.path.join(HERE, "pg_dataset.py"), "--out", ddir,
                                "--scale", str(args.pg_scale), "--seed", str(args.seed)], stdout=out)
        if r.returncode != 0:
            die("pg_dataset.py failed")
        os.rename(os.path.join(ddir, "gen.json.tmp"), os.path.join(ddir, "gen.json"))
    with open(os.path.join(ddir, "gen.json")) as f:
        summ = json.load(f)
    log("hashing day2 for restore verification")
    meta = {"scale": args.scale, "pg_scale": args.pg_scale, "seed": args.seed,
            "day1_bytes": summ["day1"]["total"]["bytes"], "day1_files": summ["day1"]["total"]["files"],
            "day2_bytes": summ["day2"]["total"]["bytes"], "day2_files": summ["day2"]["total"]["files"],
            "day2_manifest": manifest(os.path.join(ddir, "day2"))}
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f)
    os.rename(meta_path + ".tmp", meta_path)
    return ddir, meta


def prepare_dataset(args, work):
    if args.dataset == "pg":
        return prepare_pg_dataset(args, work)
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
    """Command lines of one tool. repo/cache/live/target are absolute paths, or for target "s3"
    repo is the bucket's endpoint URL + bucket name (set by `for_s3`)."""

    def __init__(self, name, binary, cache, target="local"):
        self.name, self.bin, self.cache, self.target = name, binary, cache, target
        self.label = name if target == "local" else "%s-%s" % (name, target)
        self.s3 = None  # (endpoint, bucket) for target s3

    def for_s3(self, endpoint, bucket):
        """Point this tool at `bucket` on `endpoint`; returns the repository argument."""
        self.s3 = (endpoint, bucket)
        host = endpoint.split("://", 1)[1]
        prefix = self.name  # every tool writes under its own prefix of its own fresh bucket
        if self.name in ("haven", "restic"):
            return "s3:http://%s/%s/%s" % (host, bucket, prefix)
        if self.name == "rustic":
            return "opendal:s3"
        raise ValueError("%s has no S3 backend" % self.name)

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
        if self.s3:
            e.update(AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY,
                     AWS_REGION=S3_REGION, AWS_DEFAULT_REGION=S3_REGION)
            e.pop("AWS_ENDPOINT_URL", None)  # the URL carries the endpoint
            if self.name == "rustic":
                # rustic 0.11 takes backend options only from a config profile or from OPENDAL_*
                # (and RUSTIC_REPO_OPT_*) variables; it has no -o on the command line.
                endpoint, bucket = self.s3
                e.update(OPENDAL_ENDPOINT=endpoint, OPENDAL_BUCKET=bucket, OPENDAL_ROOT="/" + self.name,
                         OPENDAL_REGION=S3_REGION, OPENDAL_ACCESS_KEY_ID=S3_ACCESS_KEY,
                         OPENDAL_SECRET_ACCESS_KEY=S3_SECRET_KEY)
        return e

    def g(self, repo):
        """Global options of restic/rustic: repository, cache and backend options."""
        a = ["-r", repo, "--cache-dir", self.cache]
        if self.s3 and self.name == "restic":
            a += ["-o", "s3.bucket-lookup=path"]
        return a

    def init(self, repo):
        b = self.bin
        return {"restic": [b] + self.g(repo) + ["init", "--repository-version", "2"],
                "rustic": [b] + self.g(repo) + ["init"],
                "borg": [b, "init", "-e", "repokey", repo],
                "haven": [b, "init", "--repo", repo]}[self.name]

    def backup(self, repo, live, day):
        b = self.bin
        return {"restic": [b] + self.g(repo) + ["backup", live],
                "rustic": [b] + self.g(repo) + ["backup", live],
                "borg": [b, "create", "--compression", "lz4", "%s::day%d" % (repo, day), live],
                "haven": [b, "backup", "--repo", repo, live]}[self.name]

    def restore(self, repo, target):
        """Returns (argv, cwd)."""
        b = self.bin
        return {"restic": ([b] + self.g(repo) + ["restore", "latest", "--target", target], None),
                "rustic": ([b] + self.g(repo) + ["restore", "latest", target], None),
                "borg": ([b, "extract", "%s::day2" % repo], target),
                "haven": ([b, "restore", "--repo", repo, "latest", "--target", target], None)}[self.name]

    def check(self, repo):
        b = self.bin
        return {"restic": [b] + self.g(repo) + ["check", "--read-data"],
                "rustic": [b] + self.g(repo) + ["check", "--read-data"],
                "borg": [b, "check", "--verify-data", repo],
                "haven": [b, "check", "--repo", repo, "--read-data"]}[self.name]


def timed(argv, env, logf, cwd=None):
    """Run argv under /usr/bin/time; returns (ok, wall_s, peak_rss_kib, cpu_s)."""
    tf = logf + ".time"
    with open(logf, "ab") as lf:
        lf.write(("$ %s%s\n" % (" ".join(argv), "   (cwd %s)" % cwd if cwd else "")).encode())
        lf.flush()
        r = subprocess.run([TIME, "-f", "%e %M %U %S", "-o", tf, "--"] + argv, env=env, cwd=cwd,
                           stdout=lf, stderr=lf, stdin=subprocess.DEVNULL)
    wall, rss, cpu = None, None, None
    try:
        with open(tf) as f:
            last = [l for l in f.read().splitlines() if l.strip()][-1].split()
        wall, rss = float(last[0]), int(last[1])
        cpu = float(last[2]) + float(last[3])
    except Exception:  # noqa: BLE001
        pass
    os.unlink(tf) if os.path.exists(tf) else None
    return r.returncode == 0 and wall is not None, wall, rss, cpu


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


def run_one(tool, rep, dataset, meta, work, drop, logdir, server=None):
    """One fresh-repository run of one tool (on a fresh S3 server and bucket when `server` is
    given). Returns a result dict."""
    res = {"tool": tool.label, "rep": rep, "ok": True, "errors": [], "warnings": []}
    live = os.path.join(work, "live")
    repo = os.path.join(work, "repo-" + tool.name)
    target = os.path.join(work, "restore")
    for p in (live, repo, target, tool.cache):
        rmtree(p)
    os.makedirs(tool.cache)
    logf = os.path.join(logdir, "%s-rep%d.log" % (tool.label, rep))
    if os.path.exists(logf):
        os.unlink(logf)
    env = tool.env()

    def phase(key, argv, cwd=None):
        srv0 = server.cpu_s() if server else None
        ok, wall, rss, cpu = timed(argv, env, logf, cwd)
        res[key] = {"s": wall, "rss_kib": rss, "ok": ok, "cpu_s": cpu}
        if server and srv0 is not None:
            srv1 = server.cpu_s()
            res[key]["srv_cpu_s"] = srv1 - srv0 if srv1 is not None else None
        if not ok:
            res["ok"] = False
            res["errors"].append("%s failed (see %s)" % (key, logf))
            log("  %s %s FAILED" % (tool.label, key))
        else:
            log("  %s %-8s %7.2f s  %6.0f MiB%s" % (
                tool.label, key, wall, rss / 1024,
                "  (server cpu %.2f s)" % res[key]["srv_cpu_s"] if res[key].get("srv_cpu_s") is not None else ""))
        return ok

    bucket = "bench-%s-rep%d" % (tool.name, rep)

    def size():
        return server.size(bucket) if server else du_bytes(repo)

    try:
        if server:
            server.start()
            server.make_bucket(bucket)
            repo = tool.for_s3(server.endpoint(), bucket)
            env = tool.env()
        sh(["cp", "-a", os.path.join(dataset, "day1"), live])
        ok, _, _, _ = timed(tool.init(repo), env, logf)
        if not ok:
            res["ok"] = False
            res["errors"].append("init failed (see %s)" % logf)
            return res
        os.sync()
        if not phase("backup1", tool.backup(repo, live, 1)):
            return res
        s1 = size()
        if s1 is not None:
            res["size_day1"] = s1
        sh(["rsync", "-a", "--delete", os.path.join(dataset, "day2") + "/", live + "/"])
        os.sync()
        if not phase("backup2", tool.backup(repo, live, 2)):
            return res
        s2 = size()
        if s2 is not None:
            res["size_day2"] = s2
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
                    log("  %s RESTORE MISMATCH: %s" % (tool.label, "; ".join(errs)))
                else:
                    res["restore_verified"] = True
                res["warnings"] += warns
        rmtree(target)
        os.sync()
        phase("check", tool.check(repo))
    except subprocess.CalledProcessError as e:
        res["ok"] = False
        res["errors"].append("harness step failed: %s" % e)
    except (RuntimeError, OSError) as e:
        res["ok"] = False
        res["errors"].append("S3 server or harness step failed: %s" % e)
        log("  %s: %s" % (tool.label, e))
    finally:
        if server:
            server.stop()
        for p in (live, target) + (() if server else (repo,)):
            rmtree(p)
    return res


# ----------------------------------------------------------------------------- report
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec, width):
    return ("%" + str(width) + spec) % v if v is not None else "%*s" % (width, "-")


def report(args, runs, versions, meta, results, drop, started, s3_info=None):
    """runs: list of (label, tool, target). s3_info: description of the S3 server, or None."""
    mb = 1e6
    phase_bytes = {"backup1": meta["day1_bytes"], "backup2": meta["day2_bytes"],
                   "restore": meta["day2_bytes"], "check": meta["day2_bytes"]}
    labels = [r[0] for r in runs]
    tool_of = {r[0]: r[1] for r in runs}
    target_of = {r[0]: r[2] for r in runs}
    s3 = any(t == "s3" for t in target_of.values())
    w = max([7] + [len(x) for x in labels])
    L = []
    L.append("Haven side-by-side benchmark%s  %s  %s  reps %d" % (
        " (S3)" if s3 else "", started.strftime("%Y-%m-%d %H:%M"),
        "PostgreSQL dataset, pgbench scale %d" % args.pg_scale if args.dataset == "pg" else "scale %s" % args.scale,
        args.reps))
    L.append("machine: nproc %d, kernel %s, %.1f GiB RAM, %s" % (
        os.cpu_count(), platform.release(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, cpu_model()))
    L.append("command: %sbash bench/run.sh %s" % ("nice -n %d " % os.nice(0) if os.nice(0) else "",
                                                   " ".join(sys.argv[1:])))
    if getattr(args, "load", None):
        L.append("load average (1/5/15 min; other jobs on the machine skew the figures): %s" % args.load)
    source = ("pg_dataset.py seed %d pgbench scale %d" % (args.seed, args.pg_scale) if args.dataset == "pg"
              else "gen_dataset.py seed %d scale %s" % (args.seed, args.scale))
    L.append("dataset: %s: day1 %.1f MB / %d files, day2 %.1f MB / %d files" % (
        source, meta["day1_bytes"] / mb, meta["day1_files"], meta["day2_bytes"] / mb, meta["day2_files"]))
    L.append("tools:")
    for t in sorted({r[1] for r in runs}, key=ALL_TOOLS.index):
        L.append("  %-7s %s" % (t, versions.get(t, "?")))
    L.append("settings: encryption on for all; restic repo v2 (compression auto); rustic defaults; borg repokey + lz4;")
    L.append("  fresh repo per tool and rep, tool order rotated per rep, caches in the work dir,")
    L.append("  page cache %s before restore; medians over reps; MB/s = dataset bytes (day1 for day-1 backup, else day2) / s" %
             ("dropped" if drop else "NOT DROPPED (no permission)"))
    if s3:
        L.append("S3: %s" % s3_info)
        L.append("  '<tool>-s3' = repository on that server (one fresh server process, data dir and bucket per tool")
        L.append("  and rep; each tool under its own prefix); plain '<tool>' = local folder in the work dir (same disk);")
        L.append("  haven s3:http://127.0.0.1:PORT/BUCKET/haven; restic s3:http://127.0.0.1:PORT/BUCKET/restic")
        L.append("  -o s3.bucket-lookup=path; rustic -r opendal:s3 with OPENDAL_ENDPOINT/BUCKET/ROOT=/rustic/REGION/")
        L.append("  ACCESS_KEY_ID/SECRET_ACCESS_KEY in the environment (rustic 0.11 has no -o);")
        L.append("  borg has no S3 backend and is not in the S3 part; cpu_s = the tool's user+sys CPU seconds,")
        L.append("  srv_cpu_s = the S3 server's CPU seconds during the phase (both cores are shared by tool and server)")
    L.append("")
    by_tool = {t: [r for r in results if r["tool"] == t] for t in labels}
    if s3:
        L.append("%-24s %-*s %9s %9s %9s %9s %9s" % ("phase", w, "tool", "time_s", "MB/s", "rss_MiB", "cpu_s", "srv_cpu_s"))
        L.append("-" * (82 + w - 7))
    else:
        L.append("%-24s %-7s %9s %9s %9s" % ("phase", "tool", "time_s", "MB/s", "rss_MiB"))
        L.append("-" * 62)
    ratios = []
    s3_ratios = []
    for key, title in PHASES:
        meds = {}
        for i, t in enumerate(labels):
            # a phase counts if its command succeeded (and, for restore, the restored tree matched)
            rs = [r[key] for r in by_tool[t] if key in r and r[key]["ok"] and
                  (key != "restore" or r.get("restore_verified"))]
            s = med([x["s"] for x in rs])
            rss = med([x["rss_kib"] for x in rs])
            meds[t] = s
            thr = phase_bytes[key] / mb / s if s else None
            note = "  FAILED in %d/%d reps" % (len(by_tool[t]) - len(rs), len(by_tool[t])) if len(rs) < len(by_tool[t]) else ""
            extra = ""
            if s3:
                extra = " %s %s" % (fmt(med([x.get("cpu_s") for x in rs]), ".2f", 9),
                                    fmt(med([x.get("srv_cpu_s") for x in rs]), ".2f", 9))
            L.append("%-24s %-*s %s %s %s%s%s" % (title if i == 0 else "", w, t, fmt(s, ".2f", 9), fmt(thr, ".1f", 9),
                                                   fmt(rss / 1024 if rss else None, ".0f", 9), extra, note))
        for tgt in ("local", "s3"):
            hl = "haven" if tgt == "local" else "haven-s3"
            peers = {t: v for t, v in meds.items() if tool_of[t] in PEERS and target_of[t] == tgt and v}
            if hl in meds and meds[hl] and peers:
                best = min(peers, key=peers.get)
                r = peers[best] / meds[hl]
                (ratios if tgt == "local" else s3_ratios).append("  %-24s %5.2fx  (fastest peer %s %.2f s / %s %.2f s)%s" % (
                    title, r, best, peers[best], hl, meds[hl],
                    "" if tgt == "local" else "; target >= 2.00: %s" % ("met" if r >= 2 else "MISSED")))
        if s3 and meds.get("haven") and meds.get("haven-s3"):
            r = meds["haven-s3"] / meds["haven"]
            s3_ratios.append("  %-24s %5.2fx  (haven-s3 %.2f s / haven local %.2f s; target <= 1.30: %s)" % (
                title, r, meds["haven-s3"], meds["haven"], "met" if r <= 1.3 else "MISSED"))
    L.append("")
    L.append("%-*s %18s %18s" % (max(10, w), "repository", "after day 1 (MiB)", "day-2 growth (MiB)"))
    L.append("-" * (48 + max(10, w) - 10))
    sizes = {}
    for t in labels:
        s1 = med([r.get("size_day1") for r in by_tool[t]])
        g2 = med([r.get("growth_day2") for r in by_tool[t]])
        sizes[t] = (s1, g2)
        L.append("%-*s %18s %18s" % (max(10, w), t, fmt(s1 / 2**20 if s1 else None, ".1f", 18),
                                     fmt(g2 / 2**20 if g2 is not None else None, ".1f", 18)))
    for tgt in ("local", "s3"):
        hl = "haven" if tgt == "local" else "haven-s3"
        if hl in sizes:
            for idx, title in ((0, "repo after day 1"), (1, "day-2 growth")):
                peers = {t: v[idx] for t, v in sizes.items() if tool_of[t] in PEERS and target_of[t] == tgt and v[idx]}
                hv = sizes[hl][idx]
                if peers and hv is not None:
                    best = min(peers, key=peers.get)
                    (ratios if tgt == "local" else s3_ratios).append(
                        "  %-24s %5.2fx  (%s / smallest peer %s; <1 = haven smaller)" % (title, hv / peers[best], hl, best))
    if ratios:
        L.append("")
        L.append("Haven vs best peer (time: peer_s / haven_s, >1 = Haven faster; size: haven / peer)")
        L += ratios
    if s3_ratios:
        L.append("")
        L.append("S3: Haven to S3 vs Haven to a local folder (haven-s3_s / haven_s, target <= 1.3) and vs the fastest")
        L.append("peer to the same S3 server (peer_s / haven-s3_s, target >= 2; size: haven-s3 / peer)")
        own = [x for x in s3_ratios if "haven local" in x]
        vs = [x for x in s3_ratios if "haven local" not in x]
        if own:
            L.append(" haven-s3 / haven local:")
            L += own
        if vs:
            L.append(" fastest S3 peer / haven-s3:")
            L += vs
    L.append("")
    L.append("restore verification (sha256 of every file, paths, sizes vs day2):")
    fails = []
    for t in labels:
        n = len(by_tool[t])
        okv = sum(1 for r in by_tool[t] if r.get("restore_verified"))
        warns = sorted({w_ for r in by_tool[t] for w_ in r["warnings"]})
        L.append("  %-*s %d/%d verified%s" % (w, t, okv, n, ("; warnings: " + ", ".join(warns)) if warns else ""))
        for r in by_tool[t]:
            for e in r["errors"]:
                fails.append("  %s rep %d: %s" % (t, r["rep"], e))
    L.append("")
    L.append("raw (rep: b1 b2 restore check seconds | repo day1 / growth MiB):")
    for r in results:
        g = lambda k: fmt(r[k]["s"] if k in r and r[k]["ok"] else None, ".2f", 7)  # noqa: E731
        L.append("  %-*s rep%d: %s %s %s %s | %s / %s%s" % (
            w, r["tool"], r["rep"], g("backup1"), g("backup2"), g("restore"), g("check"),
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


def wait_for_load(limit, max_wait=900):
    t0 = time.time()
    if os.getloadavg()[0] < limit:
        return
    log("waiting for the 1-minute load average %.2f to drop below %.2f" % (os.getloadavg()[0], limit))
    while os.getloadavg()[0] >= limit and time.time() - t0 < max_wait:
        time.sleep(5)
    log("load %.2f after %.0f s; going on" % (os.getloadavg()[0], time.time() - t0))


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dataset", choices=["gen", "pg"], default="gen",
                    help="gen: ../shared/bench/gen_dataset.py (default); pg: bench/pg_dataset.py, a PostgreSQL "
                         "data directory and its dumps on two days (issue 15)")
    ap.add_argument("--pg-scale", type=int, default=20, help="pgbench scale of --dataset pg (default 20)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma list of haven,restic,rustic,borg")
    ap.add_argument("--target", default="local",
                    help="comma list of local,s3 (default local). s3: every tool in --tools that has an S3 "
                         "backend (haven, restic, rustic) against a loopback S3 server, plus haven to a local "
                         "folder as the baseline; local,s3: every tool locally as well")
    ap.add_argument("--s3-server", choices=["s3s-fs", "moto"], default="s3s-fs",
                    help="loopback S3 server (default s3s-fs, installed with cargo when missing; moto is the fallback)")
    ap.add_argument("--wait-load", type=float, default=None, metavar="L",
                    help="before every tool run wait (up to 15 minutes) until the 1-minute load average is below L "
                         "(for machines shared with other jobs)")
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
    targets = [t.strip() for t in a.target.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            die("unknown target %s (local, s3)" % t)
    use_s3 = "s3" in targets
    if use_s3:
        if "borg" in tools:
            log("borg has no S3 backend: it is left out of the S3 part%s" % (
                "" if "local" in targets else " (and, with --target s3, of this run)"))
            if "local" not in targets:
                tools.remove("borg")
        if "local" not in targets and "haven" not in tools:
            tools.insert(0, "haven")  # haven to a local folder is the baseline of the S3 ratios
    started = datetime.datetime.now()
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)

    install_peers(tools, a)
    bins = {"restic": shutil.which("restic"), "borg": shutil.which("borg"), "rustic": find_rustic()}
    bins["haven"] = build_haven(tools, a)
    haven_rev = None
    if bins["haven"]:
        # A private copy: others building in the same checkout must not swap the binary mid-run.
        os.makedirs(os.path.join(work, "bin"), exist_ok=True)
        copy = os.path.join(work, "bin", "haven")
        shutil.copy2(bins["haven"], copy + ".tmp")
        os.replace(copy + ".tmp", copy)
        bins["haven"] = copy
        if not a.haven and not a.no_build:
            r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True, text=True)
            haven_rev = r.stdout.strip() or None
    for t in list(tools):
        if not bins[t]:
            log("%s not available: dropping it" % t)
            tools.remove(t)
    if not tools:
        die("no tools to run")
    versions = {t: tool_version(t, bins) for t in tools}
    if haven_rev and "haven" in versions:
        versions["haven"] += " (git %s)" % haven_rev
    for t in tools:
        log("%-7s %s  (%s)" % (t, versions[t], bins[t]))

    # (label, tool, target) of every run of one repetition
    runs = []
    if "local" in targets:
        runs += [(t, t, "local") for t in tools]
    if use_s3:
        if "local" not in targets and "haven" in tools:
            runs.append(("haven", "haven", "local"))
        runs += [(t + "-s3", t, "s3") for t in tools if t in S3_TOOLS]
    s3_kind, s3_bin, s3_info = None, None, None
    if use_s3:
        s3_kind, s3_bin = install_s3_server(a, work)
        v = S3Server(s3_kind, s3_bin, "/nonexistent", "/dev/null").version()
        s3_info = "%s (%s) on 127.0.0.1, %s" % (
            v, s3_bin, "data in %s/s3data, the same disk as the local repositories" % work
            if s3_kind == "s3s-fs" else "data in memory")
        log("S3 server: %s" % s3_info)

    dataset, meta = prepare_dataset(a, work)
    drop = can_drop_caches()
    if not drop:
        log("WARNING: cannot write /proc/sys/vm/drop_caches (not root?): restores run with a warm page cache")
    logdir = os.path.join(work, "logs", started.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(logdir)
    load_start = "%.2f %.2f %.2f" % os.getloadavg()
    results = []
    for rep in range(a.reps):
        order = runs[rep % len(runs):] + runs[:rep % len(runs)]
        log("rep %d/%d order %s" % (rep + 1, a.reps, ",".join(r[0] for r in order)))
        for label, t, tgt in order:
            if a.wait_load is not None:
                wait_for_load(a.wait_load)
            tool = Tool(t, bins[t], os.path.join(work, "cache", label), tgt)
            server = None
            if tgt == "s3":
                server = S3Server(s3_kind, s3_bin, os.path.join(work, "s3data"),
                                  os.path.join(logdir, "%s-rep%d.server.log" % (label, rep + 1)))
            results.append(run_one(tool, rep + 1, dataset, meta, work, drop, logdir, server))
            with open(os.path.join(logdir, "results.json"), "w") as f:
                json.dump(results, f, indent=1)

    a.load = "at start %s, at end %s" % (load_start, "%.2f %.2f %.2f" % os.getloadavg())
    text, failed = report(a, runs, versions, meta, results, drop, started, s3_info)
    os.makedirs(a.results, exist_ok=True)
    label = "pg-s%d" % a.pg_scale if a.dataset == "pg" else "scale%s" % a.scale
    out = os.path.join(a.results, "%s-%s%s.txt" % (started.strftime("%Y-%m-%d"), "s3-" if use_s3 else "", label))
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    log("written %s (logs in %s)" % (out, logdir))
    if failed:
        log("SOME RUNS FAILED - see FAILURES above")
        sys.exit(1)


if __name__ == "__main__":
    main()
