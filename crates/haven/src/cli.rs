//! Argument definitions (clap derive). Nothing here does work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "haven",
    version,
    about = "Haven: deduplicated, compressed, encrypted backups",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Repository location (a folder). Also HAVEN_REPOSITORY.
    #[arg(long, short = 'r', global = true, env = "HAVEN_REPOSITORY")]
    pub repo: Option<String>,
    /// File holding the passphrase. Also HAVEN_PASSWORD_FILE (or HAVEN_PASSWORD for the passphrase itself).
    #[arg(long, global = true, env = "HAVEN_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Command printing the passphrase on its standard output (run with `sh -c`). Also
    /// HAVEN_PASSWORD_COMMAND.
    #[arg(long, global = true, env = "HAVEN_PASSWORD_COMMAND")]
    pub password_command: Option<String>,
    /// Key file opening the repository instead of a passphrase. Also HAVEN_KEY_FILE.
    #[arg(long, global = true, env = "HAVEN_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Print results as JSON (for scripts); no progress bar.
    #[arg(long, global = true)]
    pub json: bool,
    /// Upload at most this many bytes per second to S3 and mirror sites, all together
    /// (e.g. 20MiB, 500KiB, 2MB).
    #[arg(long, global = true, env = "HAVEN_LIMIT_UPLOAD", value_name = "RATE", value_parser = haven_store::throttle::parse_rate)]
    pub limit_upload: Option<u64>,
    /// Download at most this many bytes per second from S3 and mirror sites, all together.
    #[arg(long, global = true, env = "HAVEN_LIMIT_DOWNLOAD", value_name = "RATE", value_parser = haven_store::throttle::parse_rate)]
    pub limit_download: Option<u64>,
    /// Print only errors.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// For mirror: repositories, how many sites must take each write (default: all).
    #[arg(long, global = true, env = "HAVEN_MIN_SITES", value_parser = clap::value_parser!(u32).range(1..))]
    pub min_sites: Option<u32>,
    /// Run read-only commands (snapshots, ls, restore, check, stats) without taking a lock.
    #[arg(long, global = true)]
    pub no_lock: bool,
    /// Wait this long for a lock held by another haven process (e.g. 30s, 10m).
    #[arg(long, global = true, value_parser = parse_wait, default_value = "0s")]
    pub lock_wait: std::time::Duration,
}

fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 30s, 10m or 1h");
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(bad()),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and folders, or standard input with --stdin.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(FilterArgs),
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Show what changed between two snapshots (added, removed, modified paths).
    Diff(DiffArgs),
    /// Find the snapshots holding paths that match patterns.
    Find(FindArgs),
    /// Add, remove or replace the tags of snapshots (each changed snapshot gets a new id).
    Tag(TagArgs),
    /// Browse the snapshots as read-only folders (FUSE): by id, by time, `latest`; until Ctrl-C.
    Mount(MountArgs),
    /// Restore a snapshot into a folder, or one file to standard output.
    Restore(RestoreArgs),
    /// Verify the repository's structure and, with --read-data, every byte.
    Check(CheckArgs),
    /// Remove snapshots by id or by a --keep-* policy.
    Forget(ForgetArgs),
    /// Delete data no snapshot references.
    Prune(PruneArgs),
    /// Copy snapshots to another repository (incremental; re-encrypts for its key).
    Copy(CopyArgs),
    /// Manage the key slots that open the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show repository statistics.
    Stats,
    /// Remove stale locks (left by killed processes), or all with --all.
    Unlock(UnlockArgs),
    /// Bring the sites of a mirror: repository back in sync, or `repair index`.
    Repair(RepairArgs),
    /// Tenants from the config file: back up, list recovery points, restore, verify.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Disaster recovery: plan, run, resume, abort, drill a runbook; fail back; readiness report.
    #[command(subcommand)]
    Dr(DrCommand),
    /// Run the daemon: scheduled backups, retries, retention, drills, RPO alerts, HTTP API, metrics, dashboard.
    Serve(ServeArgs),
    /// Show what Haven is for: back up a throwaway tenant (PostgreSQL, Redis, files), destroy it, re-create it elsewhere, validate.
    Demo(DemoArgs),
    /// The WAL archive of physical PostgreSQL components: archive_command and restore_command.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Replica servers of replicated volumes (one per node holding replicas).
    #[command(subcommand)]
    Replica(ReplicaCommand),
    /// Replicated block volumes served over NBD: create, serve, status, list, delete.
    #[command(subcommand)]
    Volume(VolumeCommand),
}

#[derive(Debug, Args)]
pub struct EtcdArg {
    /// etcd client URLs, comma-separated or repeated (e.g. http://10.0.1.5:2379). Also HAVEN_ETCD.
    #[arg(long, env = "HAVEN_ETCD", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Archive one WAL file (archive_command = 'haven wal push --config F TENANT COMPONENT %p').
    Push {
        tenant: String,
        component: String,
        /// The file PostgreSQL passes as %p.
        path: PathBuf,
        /// Also archive up to N-1 more segments the server has ready (their summaries in
        /// parallel, the repository opened once); the server's calls for them then return
        /// at once. 1: this file only.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        ahead: u16,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Restore one archived WAL file (restore_command = 'haven wal fetch --config F TENANT COMPONENT %f %p'); exit 1 when it is not archived.
    Fetch {
        tenant: String,
        component: String,
        /// The WAL file name PostgreSQL asks for (%f).
        name: String,
        /// Where to write it (%p).
        path: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Receive WAL over the replication protocol into the repository (`wal = "stream"`),
    /// through a replication slot, at most a second behind; until SIGINT or SIGTERM.
    /// `haven serve` runs one per streaming component itself.
    Receive {
        tenant: String,
        component: String,
        /// Where WAL waits on this host until it is stored (default: the daemon's
        /// state-dir/wal/TENANT/COMPONENT); keep it across restarts.
        #[arg(long)]
        spool: Option<PathBuf>,
        /// How often the slot's retained WAL is checked against slot-max-lag (e.g. 10s).
        #[arg(long, default_value = "10s", value_parser = parse_wait)]
        check_every: std::time::Duration,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReplicaCommand {
    /// Serve the replicas kept in a data folder and register this server in etcd (its
    /// liveness key is kept alive while it runs). Stops on SIGINT or SIGTERM.
    Serve(ReplicaServeArgs),
}

#[derive(Debug, Args)]
pub struct ReplicaServeArgs {
    /// The folder holding this server's copies of volumes (created if missing).
    #[arg(long)]
    pub data: PathBuf,
    /// The site (failure domain) this server is in, e.g. a.
    #[arg(long)]
    pub site: String,
    /// This server's node name, unique within its site, e.g. n1.
    #[arg(long)]
    pub node: String,
    /// Listen on this address, e.g. 10.0.1.5:7410.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// The address controllers connect to (default: --listen, which must then not be 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub etcd: EtcdArg,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume: place its replicas (distinct nodes; distinct sites when there
    /// are several), create the copies, record it in etcd.
    Create(VolumeCreateArgs),
    /// Be a controller candidate for a volume: serve it over NBD while holding its lease,
    /// stand by otherwise. Run one per site. Stops (resigning the lease) on SIGINT or SIGTERM.
    Serve(VolumeServeArgs),
    /// The serving controller and its epoch, replicas in sync / out (and how far behind), placement.
    Status {
        /// Only this volume.
        name: Option<String>,
        #[command(flatten)]
        etcd: EtcdArg,
    },
    /// List the volumes.
    List {
        #[command(flatten)]
        etcd: EtcdArg,
    },
    /// Delete a volume: its records in etcd and its copies on the replicas.
    Delete {
        name: String,
        #[command(flatten)]
        etcd: EtcdArg,
    },
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// The volume's name (1 to 64 of A-Z a-z 0-9 . _ -).
    pub name: String,
    /// Its size, e.g. 20GiB, 512MiB, 20G (binary units; a multiple of 512 bytes).
    #[arg(long, value_parser = parse_size)]
    pub size: u64,
    /// How many copies (each on its own node).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub replicas: u32,
    /// Fewest in-sync copies that still take writes: 1 keeps serving on one copy when the
    /// others fail (availability); 2 refuses writes rather than hold them on one copy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_in_sync: u32,
    /// Refuse to place two copies on one site.
    #[arg(long)]
    pub distinct_sites: bool,
    #[command(flatten)]
    pub etcd: EtcdArg,
}

#[derive(Debug, Args)]
pub struct VolumeServeArgs {
    /// The volume.
    pub name: String,
    /// Serve NBD on this address, e.g. 10.0.9.9:10809.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// This candidate's name, shown by `volume status` (default: HOSTNAME/LISTEN).
    #[arg(long = "name")]
    pub candidate: Option<String>,
    /// The lease's TTL: a dead controller is replaced after about this long (whole seconds).
    #[arg(long, value_parser = parse_wait, default_value = "3s")]
    pub lease: std::time::Duration,
    #[command(flatten)]
    pub etcd: EtcdArg,
}

/// `--compression`: `auto`, `fastest`, `max` or a zstd level 1-22.
pub fn parse_compression(s: &str) -> Result<i32, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(haven_repo::compress::AUTO),
        "fastest" => Ok(1),
        "max" => Ok(19),
        n => n
            .parse::<i32>()
            .ok()
            .filter(|l| (1..=22).contains(l))
            .ok_or_else(|| {
                format!("invalid compression {s:?}: use auto, fastest, max or a zstd level 1-22")
            }),
    }
}

/// `20GiB`, `512MiB`, `20G`, `1T`, `4096`: bytes, with binary units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: use e.g. 20GiB, 512MiB, 20G or a number of bytes");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on this address (default: [daemon] listen, else 127.0.0.1:8470).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work in this folder (kept afterwards) instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the temporary folder (servers' data, repository, config) afterwards.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file (default: ./haven.toml, else /etc/haven/haven.toml). Also HAVEN_CONFIG.
    #[arg(long, env = "HAVEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where private work folders (plaintext dumps, RDB copies, etcd snapshots) are made;
    /// replaces the config's `work-dir` (default: the system's temporary directory).
    /// Also HAVEN_WORK_DIR.
    #[arg(long, env = "HAVEN_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DrReportArgs {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Use the catalog's cached points; do not read the repositories.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Back up every component of a tenant as one recovery point.
    Backup {
        tenant: String,
        /// Label the point (kept by retention until unlabelled or the label expires).
        #[arg(long)]
        label: Option<String>,
        /// The label protects the point for this long only (e.g. 30d, 12h).
        #[arg(long, requires = "label", value_parser = haven_sources::process::parse_span)]
        label_expires: Option<std::time::Duration>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Label a recovery point: retention keeps it until it is unlabelled or the label expires.
    Label {
        tenant: String,
        /// The point: an id or unique prefix, or `latest` (the newest complete one).
        point: String,
        /// The label (letters, digits, '.', '_', '-'), e.g. pre-upgrade-2.4.
        name: String,
        /// The label protects the point for this long only (e.g. 30d, 12h).
        #[arg(long, value_parser = haven_sources::process::parse_span)]
        expires: Option<std::time::Duration>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a label: its point is subject to retention again.
    Unlabel {
        tenant: String,
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List a tenant's recovery points.
    Points {
        tenant: String,
        /// Prove every kept base backup of a physical component has its WAL, with no gap,
        /// up to the newest archived WAL; exit 1 naming the first gap otherwise.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Restore a recovery point into the tenant itself or into another one (--into), then validate.
    Restore(TenantRestoreArgs),
    /// Restore a recovery point into scratch targets, validate, measure, clean up.
    Verify {
        tenant: String,
        #[command(flatten)]
        point: PointArgs,
        #[command(flatten)]
        parallel: ParallelArg,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrCommand {
    /// Readiness of every tenant (or one): newest and proven points, verified RPO, predicted RTO, last drill, drift. Exit 3 when a tenant is not ready.
    Report(DrReportArgs),
    /// Preview a run: steps, recovery point, checks, predicted time per step; changes nothing.
    Plan {
        runbook: String,
        #[command(flatten)]
        point: PointArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run a runbook: prints the run id and a line per step as it happens.
    Run {
        runbook: String,
        #[command(flatten)]
        point: PointArgs,
        /// Check everything, change nothing (recorded as a dry-run).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show a run and its steps, or the recent runs.
    Status {
        run: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Continue a killed, failed or waiting run.
    Resume {
        run: String,
        /// Run this interrupted step again (repeatable).
        #[arg(long = "retry-step")]
        retry: Vec<String>,
        /// Consider this step done without running it (repeatable).
        #[arg(long = "skip-step")]
        skip: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stop a run: no further step starts.
    Abort {
        run: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the runbook against scratch targets and its drill record; cleans up; reports the RTO.
    Drill {
        runbook: String,
        #[command(flatten)]
        point: PointArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Fail back: back the tenant up from its own servers again.
    Release {
        tenant: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Args)]
pub struct PointArgs {
    /// The recovery point: an id or unique prefix, or label:NAME (default: the newest complete one).
    #[arg(long, conflicts_with = "at")]
    pub point: Option<String>,
    /// The newest complete point taken at or before this time (UTC: 2026-11-21T03:00:00Z, "2026-11-21 03:00").
    #[arg(long)]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct TenantRestoreArgs {
    pub tenant: String,
    #[command(flatten)]
    pub point: PointArgs,
    /// Restore only this component (repeatable).
    #[arg(long = "component")]
    pub components: Vec<String>,
    /// The tenant (from the config) whose components receive the data (default: the tenant itself).
    #[arg(long)]
    pub into: Option<String>,
    /// Overwrite targets that already hold data.
    #[arg(long)]
    pub force: bool,
    /// Physical PostgreSQL components: replay all archived WAL (the newest restorable state).
    #[arg(long, conflicts_with_all = ["lsn", "name", "at", "point"])]
    pub latest: bool,
    /// Physical PostgreSQL components: replay WAL up to this LSN (e.g. 3/5A0012C8).
    #[arg(long, conflicts_with_all = ["name", "at", "point"])]
    pub lsn: Option<String>,
    /// Physical PostgreSQL components: replay WAL up to this restore point (pg_create_restore_point).
    #[arg(long, conflicts_with_all = ["at", "point"])]
    pub name: Option<String>,
    #[command(flatten)]
    pub parallel: ParallelArg,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct ParallelArg {
    /// Restore at most N components at once (default: all of them, up to 4; 1: one after another).
    #[arg(long = "parallel", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: Option<u16>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Argon2id memory for the passphrase slot, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=4096))]
    pub kdf_memory_mib: u32,
    /// Argon2id passes for the passphrase slot.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub kdf_iterations: u32,
    /// Average chunk size in KiB (a power of two; min is a quarter, max four times).
    #[arg(long, default_value_t = 1024)]
    pub chunk_avg_kib: u32,
    /// Compression: `auto` (the default: zstd level 1, and level 3 where it stores less;
    /// docs/adr/0022), `fastest` (level 1 only), `max` (level 19: smallest, many times
    /// slower) or a zstd level 1-22. Stored in the repository.
    #[arg(long, default_value = "auto", value_parser = parse_compression)]
    pub compression: i32,
    /// Target pack file size in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pack_size_mib: u32,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and folders to back up.
    pub paths: Vec<PathBuf>,
    /// Read the data to back up from standard input.
    #[arg(long, conflicts_with_all = ["paths", "files_from"])]
    pub stdin: bool,
    /// File name for --stdin data.
    #[arg(long, default_value = "stdin", requires = "stdin")]
    pub stdin_name: String,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    pub host: Option<String>,
    /// Compare against this snapshot to skip unchanged files (default: the newest of the same host and paths).
    #[arg(long, conflicts_with = "force")]
    pub parent: Option<String>,
    /// Read every file, even unchanged ones.
    #[arg(long)]
    pub force: bool,
    /// Leave out entries matching PATTERN (restic's rules: `*.tmp` at any depth,
    /// `/srv/logs` anchored, `**` for any folders, `!PATTERN` puts back; repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// As --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexclude: Vec<String>,
    /// Read --exclude patterns from FILE (one per line, `#` comments, $VAR expanded).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Read --iexclude patterns from FILE.
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub iexclude_file: Vec<PathBuf>,
    /// Leave out the contents of folders holding a CACHEDIR.TAG (the tag is kept).
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out the contents of folders holding NAME (whose first bytes are HEADER).
    #[arg(long = "exclude-if-present", value_name = "NAME[:HEADER]")]
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than SIZE (e.g. 2GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Stay on the file systems of the given paths (mount points are kept, empty).
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Back up the paths listed in FILE (one per line, `#` comments), beside any given.
    #[arg(long = "files-from", value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Show what would be read and stored, without reading file contents or writing.
    #[arg(long, short = 'n', conflicts_with = "stdin")]
    pub dry_run: bool,
}

#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only snapshots with this tag (repeatable: any of them).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots that include this path.
    #[arg(long = "path")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot (id, unique prefix, or `latest`).
    pub first: String,
    /// The newer snapshot.
    pub second: String,
    /// Also list paths whose mode, owner or modification time changed (`U`).
    #[arg(long)]
    pub metadata: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Snapshots to change (ids, unique prefixes, or `latest`).
    #[arg(required = true)]
    pub snapshots: Vec<String>,
    /// Add this tag (repeatable).
    #[arg(long = "add", value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long = "remove", value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeatable; `--set ''` removes every tag).
    #[arg(long = "set", value_name = "TAG", conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// Patterns: `*.conf` matches names at any depth, `/etc/**/*.conf` paths.
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Only in this snapshot (repeatable; default: all).
    #[arg(long = "snapshot", short = 's')]
    pub snapshots: Vec<String>,
    /// Match without regard to case.
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// An empty folder to mount on.
    pub mountpoint: PathBuf,
    /// Memory for decoded file contents (the least recently read leave first), e.g. 256MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// Let other users than the one mounting see the files (their recorded permissions
    /// still apply); needs `user_allow_other` in /etc/fuse.conf when not root.
    #[arg(long)]
    pub allow_other: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id (or a unique prefix), or `latest`.
    pub snapshot: String,
    /// Only below this path of the snapshot.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (or a unique prefix), or `latest`.
    pub snapshot: String,
    /// Folder to restore into (paths of the snapshot are recreated below it).
    #[arg(long, required_unless_present = "stdout", conflicts_with = "stdout")]
    pub target: Option<PathBuf>,
    /// Restore only these paths of the snapshot (repeatable).
    #[arg(long)]
    pub include: Vec<PathBuf>,
    /// Write the snapshot's single file (or the one given by --include) to standard output.
    #[arg(long)]
    pub stdout: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also read, decrypt and verify every byte of every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify only a slice of the packs: `n/t` (slice n of t; runs 1/t..t/t
    /// read every pack once) or a random `p%`.
    #[arg(long, value_name = "n/t|p%", value_parser = haven_repo::check::Subset::parse)]
    pub read_data_subset: Option<haven_repo::check::Subset>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to remove by id (instead of a policy).
    pub snapshots: Vec<String>,
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep snapshots newer than this before the newest (e.g. 15d, 2w, 1y6m).
    #[arg(long, value_name = "DURATION", value_parser = parse_keep_within)]
    pub keep_within: Option<chrono::Duration>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Remove every snapshot (of those the filters select). A --keep-* policy that
    /// keeps nothing, such as --keep-last 0, is refused: this is the explicit way.
    #[arg(long)]
    pub keep_none: bool,
    /// Group snapshots by these fields before applying the policy.
    #[arg(long, default_value = "host,paths")]
    pub group_by: haven_repo::retention::GroupBy,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show what would be removed without removing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune right after forgetting.
    #[arg(long)]
    pub prune: bool,
}

fn parse_keep_within(s: &str) -> Result<chrono::Duration, String> {
    haven_repo::retention::parse_duration(s)
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be deleted without deleting it.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack packs with more than this percentage of unused bytes.
    #[arg(long, default_value_t = 10.0)]
    pub repack_unused_percent: f64,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy by id or unique prefix (default: all that pass the filters).
    pub snapshots: Vec<String>,
    /// Source repository (opened with the usual secret: --password-file, --key-file, ...).
    #[arg(long)]
    pub from_repo: String,
    /// Destination repository.
    #[arg(long)]
    pub to_repo: String,
    /// File holding the destination's passphrase (default: the source's secret). Also HAVEN_TO_PASSWORD.
    #[arg(long, env = "HAVEN_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Key file opening the destination.
    #[arg(long, conflicts_with = "to_password_file")]
    pub to_key_file: Option<PathBuf>,
    /// Only snapshots with this tag (repeatable: any of them).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only the newest N snapshots (after the other filters).
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List key slots.
    List,
    /// Add a key slot: a new passphrase (asked, or --new-password-file) or a new key file.
    Add(NewSecretArgs),
    /// Remove a key slot by id prefix.
    Remove { id: String },
    /// Change the passphrase of the slot in use.
    Passwd(NewSecretArgs),
}

#[derive(Debug, Args)]
pub struct NewSecretArgs {
    /// File holding the new passphrase.
    #[arg(long)]
    pub new_password_file: Option<PathBuf>,
    /// Create a new random key file at this path (mode 0600) and add a slot for it.
    #[arg(long, conflicts_with = "new_password_file")]
    pub new_key_file: Option<PathBuf>,
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=4096))]
    pub kdf_memory_mib: u32,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub kdf_iterations: u32,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no other haven runs).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    #[command(subcommand)]
    pub what: Option<RepairCommand>,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the pack headers.
    Index,
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 TiB"), Ok(1 << 40));
        assert!(parse_size("20 GB of data").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999T").is_err(), "overflow");
    }
}
