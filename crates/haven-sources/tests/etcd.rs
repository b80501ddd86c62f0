//! The etcd component against real etcd members (Debian's etcd-server 3.4) that the tests
//! start on loopback with their own data directories and ports. Every member a test starts
//! or restores is stopped by a guard, also when the test fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use haven_sources::etcd::{EtcdClient, EtcdComponent, EtcdConfig};
use haven_sources::process::free_port;
use haven_sources::servers::etcd::EtcdServer;
use haven_sources::{Fingerprint, RestoreOptions, SourceError, StreamComponent};

fn component(endpoints: &[&str]) -> EtcdComponent {
    EtcdComponent::new(EtcdConfig {
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        data_dir: None,
        name: None,
        peer_url: None,
        bin_dir: None,
        timeout: None,
    })
}

/// A restore target: a new member on a free port with its data in `data_dir`.
fn target(data_dir: &Path) -> EtcdComponent {
    let endpoint = format!("http://127.0.0.1:{}", free_port().unwrap());
    EtcdComponent::new(EtcdConfig {
        data_dir: Some(data_dir.to_path_buf()),
        ..component(&[&endpoint]).config
    })
}

/// Stops whatever member a restore left running in `data_dir` when dropped (created
/// before the restore, so a test that fails half-way cleans up too).
struct Restored {
    data_dir: PathBuf,
    endpoint: String,
}

impl Restored {
    fn new(target: &EtcdComponent) -> Restored {
        Restored {
            data_dir: target.config.data_dir.clone().unwrap(),
            endpoint: target.config.endpoints[0].clone(),
        }
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        drop(EtcdServer::adopt(&self.data_dir, &self.endpoint));
    }
}

/// Workflow-like state: ~3000 keys under /registry, values from empty to 30 KB, a third
/// of them binary; then some deleted (one prefix entirely) and some overwritten, so the
/// store has history. Returns what should be live.
fn fill(client: &EtcdClient) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut live = BTreeMap::new();
    for i in 0..3000u64 {
        let kind = ["pods", "workflows", "configmaps", "leases", "secrets"][i as usize % 5];
        let key = format!("/registry/{kind}/ns{}/{kind}-{i:05}", i % 7);
        let size = match i % 20 {
            0 => 0,
            1..=13 => 50 + next() % 400,
            14..=18 => 1000 + next() % 4000,
            _ => 20_000 + next() % 10_000,
        } as usize;
        let value: Vec<u8> = if i % 3 == 0 {
            (0..size).map(|_| next() as u8).collect()
        } else {
            format!("{{\"kind\":\"{kind}\",\"n\":{i},\"spec\":\"")
                .bytes()
                .chain(std::iter::repeat(b'x'))
                .take(size)
                .collect()
        };
        live.insert(key.into_bytes(), value);
    }
    let pairs: Vec<_> = live.clone().into_iter().collect();
    client.put_all(&pairs).unwrap();

    let keys: Vec<Vec<u8>> = live.keys().cloned().collect();
    for key in keys.iter().step_by(23) {
        assert!(client.delete(key).unwrap());
        live.remove(key);
    }
    let prefix = b"/registry/leases/ns3/";
    let gone = client.delete_prefix(prefix).unwrap();
    let before = live.len();
    live.retain(|k, _| !k.starts_with(prefix));
    assert_eq!(gone as usize, before - live.len());
    let overwritten: Vec<_> = live
        .keys()
        .step_by(17)
        .map(|k| (k.clone(), [b"v2:".as_slice(), k].concat()))
        .collect();
    client.put_all(&overwritten).unwrap();
    live.extend(overwritten);
    live
}

/// A sink that keeps everything, calling `midway` once after the first 64 KiB.
fn backup_to_vec(
    component: &EtcdComponent,
    mut midway: impl FnMut(),
) -> Result<(Vec<u8>, Fingerprint), SourceError> {
    let mut stored = vec![];
    let work = tempfile::tempdir().unwrap();
    let fp = component.backup(
        &mut |r| {
            let mut first = vec![0; 64 << 10];
            let n = read_full(r, &mut first)?;
            stored.extend_from_slice(&first[..n]);
            midway();
            r.read_to_end(&mut stored)
                .map_err(|e| SourceError::io("storing the snapshot", e))?;
            Ok(())
        },
        work.path(),
    )?;
    Ok((stored, fp))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, SourceError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(SourceError::io("storing the snapshot", e)),
        }
    }
    Ok(n)
}

fn restore_from(target: &EtcdComponent, stored: &[u8], force: bool) -> Result<(), SourceError> {
    let work = tempfile::tempdir().unwrap();
    target.restore(
        &mut |w| {
            w.write_all(stored)
                .map_err(|e| SourceError::io("feeding", e))?;
            Ok(stored.len() as u64)
        },
        work.path(),
        &RestoreOptions { force },
    )
}

/// The revision `etcdctl snapshot status` reads from a snapshot file.
fn etcdctl_revision(stored: &[u8]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    std::fs::write(&file, stored).unwrap();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["revision"].as_u64().unwrap()
}

#[test]
fn a_backup_under_writes_restores_into_a_new_member_with_the_same_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let source = EtcdServer::start(dir.path()).unwrap();
    let client = source.client().clone();
    let live = fill(&client);

    // A writer keeps changing the source during the whole backup; and once the snapshot
    // has begun to stream, the sink itself writes keys that must not be in it.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, written) = (client.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = written.fetch_add(1, Ordering::Relaxed);
                client
                    .put(format!("/registry/events/e{n:06}").as_bytes(), b"{}")
                    .unwrap();
            }
        })
    };
    let during: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("/registry/during/k{i}").into_bytes())
        .collect();
    let source_component = component(&[source.endpoint()]);
    let backup = backup_to_vec(&source_component, || {
        for key in &during {
            client.put(key, b"after the snapshot began").unwrap();
        }
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let (stored, recorded) = backup.unwrap();

    let revision: u64 = recorded.facts["revision"].parse().unwrap();
    assert!(
        revision < client.revision().unwrap() as u64,
        "the source changed after the snapshot"
    );
    assert_eq!(
        revision,
        etcdctl_revision(&stored),
        "the revision read from the stream"
    );
    let keys: usize = recorded.facts["keys"].parse().unwrap();
    assert!(
        keys >= live.len(),
        "{keys} keys recorded, {} put",
        live.len()
    );

    // The source loses everything; the snapshot comes back as a new member.
    client.delete_prefix(b"").unwrap();
    let restored_dir = dir.path().join("restored");
    let target = target(&restored_dir);
    let _guard = Restored::new(&target);
    restore_from(&target, &stored, false).unwrap();

    let after = target.fingerprint().unwrap();
    assert_eq!(recorded.differences(&after, 10), Vec::<String>::new());
    let probe = target.probe().unwrap();
    assert!(probe.contains("healthy, etcd 3."), "{probe}");
    let restored = EtcdClient::new(&target.config.endpoints[0]).unwrap();
    for (key, value) in live.iter().step_by(41) {
        assert_eq!(restored.get(key).unwrap().as_ref(), Some(value), "{key:?}");
    }
    assert_eq!(
        restored.get(b"/registry/leases/ns3/leases-00003").unwrap(),
        None
    );
    for key in &during {
        assert_eq!(
            restored.get(key).unwrap(),
            None,
            "written after the snapshot began"
        );
    }

    // Any change on the restored member shows in its fingerprint.
    let (first, _) = live.iter().next().unwrap();
    restored.put(first, b"changed").unwrap();
    let changed = target.fingerprint().unwrap();
    let diff = recorded.differences(&changed, 10);
    assert!(diff.iter().any(|d| d.starts_with("kv-digest")), "{diff:?}");
    assert!(diff.iter().any(|d| d.starts_with("revision")), "{diff:?}");
}

#[test]
fn the_revision_read_from_the_stream_is_etcds_through_churn_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let source = EtcdServer::start(dir.path()).unwrap();
    let client = source.client();
    let c = component(&[source.endpoint()]);
    // Rounds of puts, overwrites and deletes leave freed pages with stale contents in the
    // database; each snapshot's revision must still be the one etcd reports for it.
    for round in 0..8u64 {
        let pairs: Vec<_> = (0..400u64)
            .map(|i| {
                let key = format!("/registry/jobs/j{:04}", (i * 7 + round * 131) % 900);
                (
                    key.into_bytes(),
                    vec![round as u8; ((i * 97 + round) % 3000) as usize],
                )
            })
            .collect();
        client.put_all(&pairs).unwrap();
        for (key, _) in pairs.iter().step_by(3) {
            client.delete(key).unwrap();
        }
        let (stored, fp) = backup_to_vec(&c, || {}).unwrap();
        assert_eq!(fp.facts["revision"], client.revision().unwrap().to_string());
        assert_eq!(fp.facts["revision"], etcdctl_revision(&stored).to_string());
    }

    // The newest change is a delete, then the history is compacted up to now: the
    // tombstone is gone from the database, and a restored member starts at the compaction
    // revision (which `etcdctl snapshot status` does not report).
    client.put(b"/registry/jobs/last", b"x").unwrap();
    client.delete(b"/registry/jobs/last").unwrap();
    let now = client.revision().unwrap();
    client.compact(now).unwrap();
    let (stored, recorded) = backup_to_vec(&c, || {}).unwrap();
    assert_eq!(recorded.facts["revision"], now.to_string());
    assert!(etcdctl_revision(&stored) < now as u64);
    let target = target(&dir.path().join("restored"));
    let _guard = Restored::new(&target);
    restore_from(&target, &stored, false).unwrap();
    assert_eq!(
        recorded.differences(&target.fingerprint().unwrap(), 10),
        Vec::<String>::new()
    );
}

#[test]
fn a_restore_refuses_a_non_empty_target_and_force_replaces_the_member_it_restored() {
    let dir = tempfile::tempdir().unwrap();
    let source = EtcdServer::start(dir.path()).unwrap();
    let pairs: Vec<_> = (0..50)
        .map(|i| (format!("/wf/{i}").into_bytes(), vec![i as u8; i]))
        .collect();
    source.client().put_all(&pairs).unwrap();
    let (stored, recorded) = backup_to_vec(&component(&[source.endpoint()]), || {}).unwrap();

    let data_dir = dir.path().join("restored");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("precious"), b"x").unwrap();
    let target = target(&data_dir);
    let _guard = Restored::new(&target);
    let err = restore_from(&target, &stored, false).unwrap_err();
    assert!(matches!(err, SourceError::TargetNotEmpty { .. }), "{err}");
    assert!(data_dir.join("precious").exists(), "nothing was touched");

    restore_from(&target, &stored, true).unwrap();
    assert!(!data_dir.join("precious").exists());
    assert!(recorded
        .differences(&target.fingerprint().unwrap(), 10)
        .is_empty());

    // The restored member runs: a second restore is refused, or with force replaces it.
    let err = restore_from(&target, &stored, false).unwrap_err();
    assert!(matches!(err, SourceError::TargetNotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("still runs"), "{err}");
    let client = EtcdClient::new(&target.config.endpoints[0]).unwrap();
    client.put(b"/wf/extra", b"1").unwrap();
    restore_from(&target, &stored, true).unwrap();
    assert_eq!(client.get(b"/wf/extra").unwrap(), None);
    assert!(recorded
        .differences(&target.fingerprint().unwrap(), 10)
        .is_empty());

    // Another server on the target's endpoint: never a new member, force or not.
    let other = EtcdServer::start(dir.path()).unwrap();
    let occupied = EtcdComponent::new(EtcdConfig {
        endpoints: vec![other.endpoint().to_string()],
        data_dir: Some(dir.path().join("elsewhere")),
        ..target.config.clone()
    });
    let _guard2 = Restored::new(&occupied);
    let err = restore_from(&occupied, &stored, true).unwrap_err();
    assert!(err.to_string().contains("already listens"), "{err}");
}

#[test]
fn unreachable_endpoints_missing_tools_and_tls_are_clear_errors() {
    let dead = [
        format!("http://127.0.0.1:{}", free_port().unwrap()),
        format!("http://127.0.0.1:{}", free_port().unwrap()),
    ];
    let c = component(&[&dead[0], &dead[1]]);
    let errors = [
        backup_to_vec(&c, || {}).map(|_| ()).unwrap_err(),
        c.fingerprint().map(|_| ()).unwrap_err(),
        c.probe().map(|_| ()).unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&dead[0]), "{err}");
        assert!(err.to_string().contains(&dead[1]), "{err}");
    }

    let err = component(&["https://127.0.0.1:2379"]).probe().unwrap_err();
    assert!(matches!(err, SourceError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");

    let tools = tempfile::tempdir().unwrap();
    let missing = EtcdComponent::new(EtcdConfig {
        bin_dir: Some(tools.path().to_path_buf()),
        ..target(&tools.path().join("data")).config
    });
    let err = restore_from(&missing, b"", false).unwrap_err();
    assert!(matches!(err, SourceError::MissingTool { .. }), "{err}");
    assert!(err.to_string().contains("etcdctl"), "{err}");
    assert!(err.to_string().contains("etcd-client"), "{err}");
}

#[test]
fn the_first_answering_endpoint_serves_and_a_scratch_target_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let source = EtcdServer::start(dir.path()).unwrap();
    source.client().put(b"/wf/a", b"1").unwrap();
    let dead = "http://127.0.0.1:1".to_string(); // a privileged port nothing listens on
    let c = component(&[&dead, source.endpoint()]);
    assert!(c.probe().unwrap().starts_with(source.endpoint()));
    let (stored, recorded) = backup_to_vec(&c, || {}).unwrap();
    assert_eq!(recorded.facts["keys"], "1");

    let work = tempfile::tempdir().unwrap();
    let scratch = c.scratch(work.path()).unwrap();
    let endpoint = scratch
        .component()
        .describe()
        .trim_start_matches("etcd at ")
        .to_string();
    let scratch_dir = work.path().join("etcd-scratch");
    let _guard = Restored {
        data_dir: scratch_dir.clone(),
        endpoint: endpoint.clone(),
    };
    let feed = &mut |w: &mut dyn std::io::Write| {
        w.write_all(&stored)
            .map_err(|e| SourceError::io("feeding", e))?;
        Ok(stored.len() as u64)
    };
    let restore_work = tempfile::tempdir().unwrap();
    scratch
        .component()
        .restore(feed, restore_work.path(), &RestoreOptions::default())
        .unwrap();
    let fp = scratch.component().fingerprint().unwrap();
    assert!(recorded.differences(&fp, 10).is_empty());
    assert!(scratch_dir.join("member").is_dir());

    drop(scratch);
    assert!(!scratch_dir.exists());
    let err = EtcdClient::new(&endpoint).unwrap().health().unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
}

#[test]
fn a_cluster_with_authentication_is_access_denied() {
    let dir = tempfile::tempdir().unwrap();
    let source = EtcdServer::start(dir.path()).unwrap();
    let etcdctl = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(source.endpoint())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    etcdctl(&["user", "add", "root:secret-pw"]);
    etcdctl(&["auth", "enable"]);
    let c = component(&[source.endpoint()]);
    for err in [
        backup_to_vec(&c, || {}).map(|_| ()).unwrap_err(),
        c.fingerprint().map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(err, SourceError::AccessDenied { .. }), "{err}");
        assert!(!err.to_string().contains("secret-pw"), "{err}");
    }
}
