//! The CLI against a real S3 server (moto on loopback, see haven-s3's tests/moto):
//! init, backup, restore and check --read-data byte-identical; and bad input (closed
//! port, refused credentials, missing bucket, a bucket holding something else), each a
//! one-line error naming the URL, with nothing written.

mod common;
#[path = "../../haven-s3/tests/moto/mod.rs"]
mod moto;

use std::path::{Path, PathBuf};

use common::*;
use moto::Moto;

/// The child processes take their S3 credentials from the environment.
fn set_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY);
    std::env::remove_var("AWS_ENDPOINT_URL");
}

fn init_args() -> Vec<&'static str> {
    let mut args = vec!["init"];
    args.extend_from_slice(&FAST_KDF);
    args
}

#[test]
fn init_backup_restore_check_on_s3() {
    set_credentials();
    let server = Moto::start();
    server.create_bucket("backups");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 7, TreeSpec::SAMPLE);
    let expected = tmp.path().join("expected");
    copy_tree(&src, &expected);

    let url = format!("s3:{}/backups/host-a", server.endpoint);
    let repo = Repo::init(&PathBuf::from(&url), &["--pack-size-mib", "4"]);
    let (id, _) = repo.backup(&[&src], &[]);
    repo.assert_restores(&id, &src, &expected);
    repo.check_ok(true);
    let keys = server.keys("backups");
    assert!(
        keys.iter().any(|k| k.starts_with("host-a/data/")),
        "{keys:?}"
    );
    assert!(keys.iter().all(|k| k.starts_with("host-a/")), "{keys:?}");

    // The same repository through the s3:// form with AWS_ENDPOINT_URL.
    let same = Repo::at(Path::new("s3://backups/host-a"));
    let out = same.run_env(
        &["snapshots", "--json"],
        &[("AWS_ENDPOINT_URL", &server.endpoint)],
    );
    out.ok("snapshots via s3://");
    assert!(out.stdout.contains(&id), "{}", out.stdout);

    // A second init on the same prefix refuses.
    let out = repo.run(&init_args());
    out.assert_one_line_error(1, &[&url, "exists"]);
}

/// Commands that open an existing repository.
fn opening_commands(tmp: &Path) -> Vec<Vec<String>> {
    let t = tmp.to_str().unwrap().to_string();
    [
        vec!["snapshots"],
        vec!["check"],
        vec!["backup", t.as_str()],
        vec!["restore", "latest", "--target", t.as_str()],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect()
}

#[track_caller]
fn assert_refused(url: &str, args: &[&str], hints: &[&str]) {
    let repo = Repo::at(Path::new(url));
    let out = repo.run(args);
    let mut all = vec![url];
    all.extend_from_slice(hints);
    out.assert_one_line_error(1, &all);
}

#[test]
fn bad_locations_fail_with_one_line_naming_the_url_and_write_nothing() {
    set_credentials();
    let server = Moto::start();
    let tmp = tempfile::tempdir().unwrap();

    // Nothing listening on the endpoint.
    let url = format!("s3:http://127.0.0.1:{}/b/p", moto::closed_port());
    assert_refused(&url, &init_args(), &["did not answer"]);
    for cmd in opening_commands(tmp.path()) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        assert_refused(&url, &args, &["did not answer"]);
    }

    // A bucket that does not exist: said so, and not created.
    let url = format!("s3:{}/nosuchbucket/p", server.endpoint);
    assert_refused(&url, &init_args(), &["bucket nosuchbucket does not exist"]);
    for cmd in opening_commands(tmp.path()) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        assert_refused(&url, &args, &["bucket nosuchbucket does not exist"]);
    }
    assert!(!server.bucket_exists("nosuchbucket"));

    // A bucket holding something that is not a Haven repository.
    server.create_bucket("foreign");
    server.put_object("foreign", "p/notes.txt", b"not a repository");
    let url = format!("s3:{}/foreign/p", server.endpoint);
    assert_refused(&url, &init_args(), &["already holds objects"]);
    for cmd in opening_commands(tmp.path()) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        assert_refused(&url, &args, &["no haven repository", "haven init"]);
    }
    assert_eq!(server.keys("foreign"), vec!["p/notes.txt".to_string()]);
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "restore wrote nothing"
    );
}

#[test]
fn refused_credentials_fail_with_one_line_naming_the_url() {
    set_credentials();
    // moto checks signatures against its own IAM when INITIAL_NO_AUTH_ACTION_COUNT is
    // 0; its IAM is empty, so every key is refused (403 InvalidAccessKeyId).
    let server = Moto::start_with_auth();
    let url = format!("s3:{}/bucket/p", server.endpoint);
    let hint =
        "access denied: check the credentials (from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)";
    assert_refused(&url, &init_args(), &[hint]);
    let tmp = tempfile::tempdir().unwrap();
    for cmd in opening_commands(tmp.path()) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let out = Repo::at(Path::new(&url)).run(&args);
        let line = out.assert_one_line_error(1, &[&url, hint]);
        assert!(!line.contains(moto::SECRET_KEY), "{line}");
    }

    // Keys from a profile: the message names the profile and its file, not variables.
    let creds = tmp.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            moto::ACCESS_KEY,
            moto::SECRET_KEY
        ),
    )
    .unwrap();
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
        ("AWS_PROFILE", "backup"),
    ];
    let hint = format!(
        "access denied: check the credentials (from profile backup in {})",
        creds.display()
    );
    let line = without_env_keys(&Repo::at(Path::new(&url)), &["snapshots"], &env)
        .assert_one_line_error(1, &[&url, &hint]);
    assert!(!line.contains(moto::SECRET_KEY), "{line}");
}

/// `--limit-upload` and `--limit-download` measured on loopback S3: the bytes on the
/// wire (the objects a backup adds to the bucket; for the restore, all the repository's
/// objects, which it reads but for a few small ones) over the command's wall time, for
/// 16 MiB of incompressible data at 4 MiB/s, is within 10 % below the setting (never
/// above: a booked request waits for its time; the wall time also holds process start
/// and the small first requests). Unlimited, the same restore takes a fraction of that.
#[test]
fn bandwidth_limits_hold_the_rate_within_ten_percent() {
    set_credentials();
    let server = Moto::start();
    server.create_bucket("paced");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(test_seed("bandwidth_limits"));
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), rng.random_bytes(4 << 20)).unwrap();
    }
    let url = format!("s3:{}/paced/repo", server.endpoint);
    let repo = Repo::init(&PathBuf::from(&url), &["--pack-size-mib", "4"]);
    let limit = 4u64 << 20;
    let bucket_bytes = || -> u64 { server.sizes("paced").iter().map(|(_, n)| n).sum() };
    let before = bucket_bytes();

    let started = std::time::Instant::now();
    let out = repo.run(&[
        "backup",
        "--json",
        "--limit-upload",
        "4MiB",
        src.to_str().unwrap(),
    ]);
    let wall = started.elapsed().as_secs_f64();
    out.ok("paced backup");
    let uploaded = bucket_bytes() - before;
    assert!(
        uploaded >= 16 << 20,
        "incompressible data is stored whole: {uploaded}"
    );
    let rate = uploaded as f64 / wall;
    eprintln!(
        "upload: {uploaded} bytes in {wall:.2} s = {:.0} B/s = {:.1} % of the limit {limit}",
        rate,
        rate * 100.0 / limit as f64
    );
    assert!(
        rate <= limit as f64 * 1.02 && rate >= limit as f64 * 0.9,
        "upload rate {rate:.0} B/s, limit {limit} B/s"
    );
    let id = out.json()["id"].as_str().unwrap().to_string();

    let target = tmp.path().join("restore");
    let args = |extra: &[&'static str]| {
        let mut a = vec!["restore", id.as_str(), "--target", target.to_str().unwrap()];
        a.extend_from_slice(extra);
        a
    };
    let started = std::time::Instant::now();
    let out = repo.run_env(
        &args(&["--limit-download", "4MiB"]),
        &[("HAVEN_CACHE_DIR", "off")],
    );
    let wall = started.elapsed().as_secs_f64();
    out.ok("paced restore");
    let downloaded = bucket_bytes();
    let rate = downloaded as f64 / wall;
    eprintln!(
        "download: {downloaded} bytes in {wall:.2} s = {:.0} B/s = {:.1} % of the limit {limit}",
        rate,
        rate * 100.0 / limit as f64
    );
    assert!(
        rate <= limit as f64 * 1.02 && rate >= limit as f64 * 0.9,
        "download rate {rate:.0} B/s, limit {limit} B/s"
    );

    // Unlimited, the same restore is much faster (the limit is what took the time).
    std::fs::remove_dir_all(&target).unwrap();
    let started = std::time::Instant::now();
    repo.run_env(&args(&[]), &[("HAVEN_CACHE_DIR", "off")])
        .ok("unpaced restore");
    assert!(started.elapsed().as_secs_f64() < wall / 2.0);

    // A malformed rate is a usage error before anything is read.
    let out = repo.run(&["snapshots", "--limit-upload", "fast"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("20MiB"), "{}", out.stderr);
}

/// Every variable the credential chain reads.
const CHAIN_VARIABLES: [&str; 18] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_REGION",
];

/// A `haven` command with no credential source but `env`: the chain's variables taken
/// out of its environment, no ~/.aws, and (unless `env` says otherwise) no
/// instance-metadata probe.
fn without_env_keys(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = repo.command(args);
    for k in CHAIN_VARIABLES {
        cmd.env_remove(k);
    }
    cmd.env("HOME", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_to_end(cmd, None, std::time::Duration::from_secs(120))
}

/// Keys from a named profile of a shared credentials file (none in the environment);
/// an unknown profile and no source at all are one-line errors saying what to set.
#[test]
fn credentials_come_from_a_profile_in_the_shared_files() {
    set_credentials();
    let server = Moto::start();
    server.create_bucket("profiles");
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            moto::ACCESS_KEY,
            moto::SECRET_KEY
        ),
    )
    .unwrap();
    let config = tmp.path().join("config");
    std::fs::write(&config, "[profile backup]\nregion = eu-central-1\n").unwrap();
    let url = format!("s3:{}/profiles/repo", server.endpoint);
    let repo = Repo::at(Path::new(&url));
    let files = [
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
        ("AWS_CONFIG_FILE", config.to_str().unwrap()),
    ];
    let mut env = files.to_vec();
    env.push(("AWS_PROFILE", "backup"));
    let mut init = init_args();
    init.push("--json");
    without_env_keys(&repo, &init, &env).ok("init with profile keys");
    let src = tmp.path().join("src");
    make_tree(&src, 3, TreeSpec::SAMPLE);
    let out = without_env_keys(&repo, &["backup", "--json", src.to_str().unwrap()], &env);
    out.ok("backup with profile keys");
    assert!(server
        .keys("profiles")
        .iter()
        .any(|k| k.starts_with("repo/snapshots/")));

    let mut env = files.to_vec();
    env.push(("AWS_PROFILE", "nope"));
    without_env_keys(&repo, &["snapshots"], &env)
        .assert_one_line_error(1, &["AWS_PROFILE=nope", "no such profile"]);
    without_env_keys(&repo, &["snapshots"], &[]).assert_one_line_error(
        1,
        &[
            "no S3 credentials",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "tried: no AWS_ACCESS_KEY_ID; no profile default in /nonexistent/.aws/credentials",
            "instance metadata disabled",
        ],
    );

    // With the instance-metadata probe allowed, a machine without it (or one where
    // 169.254.169.254 answers but is not EC2's service) gets the same error at once.
    let started = std::time::Instant::now();
    let out = without_env_keys(
        &repo,
        &["snapshots"],
        &[("AWS_EC2_METADATA_DISABLED", "false")],
    );
    let waited = started.elapsed();
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    if out.stderr.contains("no S3 credentials") {
        out.assert_one_line_error(1, &["no S3 credentials", "no instance metadata ("]);
    } else {
        eprintln!("this machine has instance metadata: {}", out.stderr);
    }
}

/// Web identity as EKS pods get it: a token file and a role, exchanged with STS for
/// temporary keys the S3 requests are signed with. moto's STS issues keys without
/// checking the token or the role's trust policy (a real STS would), and this moto
/// accepts any keys on S3, so the proof that the keys came from STS is that nothing
/// else is configured and that moto issued exactly one session per command, under the
/// role and session name given.
#[test]
fn web_identity_tokens_are_exchanged_with_sts() {
    set_credentials();
    let server = Moto::start();
    server.create_bucket("pods");
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.test-token.signature\n").unwrap();
    let url = format!("s3:{}/pods/repo", server.endpoint);
    let repo = Repo::at(Path::new(&url));
    let env = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/haven-backup",
        ),
        ("AWS_ROLE_SESSION_NAME", "haven-web-identity-test"),
        ("AWS_ENDPOINT_URL_STS", server.endpoint.as_str()),
    ];
    let sessions = || {
        server
            .sts_sessions()
            .iter()
            .filter(|(role, name)| {
                role == "arn:aws:iam::123456789012:role/haven-backup"
                    && name == "haven-web-identity-test"
            })
            .count()
    };
    assert_eq!(sessions(), 0);
    without_env_keys(&repo, &init_args(), &env).ok("init with web identity");
    assert_eq!(sessions(), 1, "{:?}", server.sts_sessions());
    let src = tmp.path().join("src");
    make_tree(&src, 4, TreeSpec::SAMPLE);
    let expected = tmp.path().join("expected");
    copy_tree(&src, &expected);
    let out = without_env_keys(&repo, &["backup", "--json", src.to_str().unwrap()], &env);
    out.ok("backup with web identity");
    let id = out.json()["id"].as_str().unwrap().to_string();
    let target = tmp.path().join("restore");
    without_env_keys(
        &repo,
        &["restore", &id, "--target", target.to_str().unwrap()],
        &env,
    )
    .ok("restore with web identity");
    if let Err(d) = compare_trees(&expected, &restored_path(&target, &src)) {
        panic!("restore differs: {}", describe_differences(&d));
    }
    // One exchange per command: every request of a command reuses its keys.
    assert_eq!(sessions(), 3, "{:?}", server.sts_sessions());

    // Without AWS_ENDPOINT_URL_STS, STS is at the global AWS_ENDPOINT_URL (SDK order).
    let mut global = env.to_vec();
    global[3] = ("AWS_ENDPOINT_URL", server.endpoint.as_str());
    without_env_keys(&repo, &["snapshots"], &global).ok("STS at AWS_ENDPOINT_URL");
    assert_eq!(sessions(), 4);

    // The S3 requests need STS: with it unreachable, the command fails naming it.
    let closed = format!("http://127.0.0.1:{}", moto::closed_port());
    let mut unreachable = env.to_vec();
    unreachable[3].1 = closed.as_str();
    without_env_keys(&repo, &["snapshots"], &unreachable).assert_one_line_error(
        1,
        &[
            "no S3 credentials from web identity",
            &format!("STS at {closed} did not answer"),
        ],
    );

    // The token file is read for the exchange: without it, the error names it.
    let missing = tmp.path().join("no-token");
    let mut broken = env;
    broken[0].1 = missing.to_str().unwrap();
    without_env_keys(&repo, &["snapshots"], &broken).assert_one_line_error(
        1,
        &[
            "web identity token file",
            "no-token",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ],
    );
}
