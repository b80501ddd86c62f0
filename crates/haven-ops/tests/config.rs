//! The config file: the example parses as written; every kind of mistake is
//! reported with the file, the line and the key.

use std::path::{Path, PathBuf};

use haven_ops::config::{ComponentConfig, Config};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/haven.toml")
}

#[test]
fn the_example_config_parses_as_written() {
    let config = Config::load(&example_path()).expect("examples/haven.toml is valid");
    assert_eq!(config.repositories["main"].url, "/var/backups/haven");
    assert_eq!(
        config.repositories["main"].password_file.as_deref(),
        Some(Path::new("/etc/haven/password"))
    );
    let acme = config.tenant("acme").unwrap();
    let kinds: Vec<(&str, &str)> = acme
        .components
        .iter()
        .map(|(n, c)| (n.as_str(), c.kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("cache", "redis"),
            ("db", "postgres"),
            ("ledger", "command"),
            ("state", "etcd"),
            ("uploads", "files"),
        ]
    );
    match &acme.components["uploads"] {
        ComponentConfig::Files(f) => {
            assert_eq!(f.paths, vec![PathBuf::from("/srv/acme/uploads")]);
            assert_eq!(f.pre.as_deref(), Some("sync"));
        }
        other => panic!("uploads is {other:?}"),
    }
    match &config.tenant("acme-dr").unwrap().components["db"] {
        ComponentConfig::Postgres(p) => {
            assert_eq!(p.url, "postgresql://postgres@127.0.0.1:5433/app")
        }
        other => panic!("acme-dr.db is {other:?}"),
    }
}

/// Parse `text` as /etc/haven/haven.toml and return the error's text.
fn error_of(text: &str) -> (String, Option<usize>, String) {
    let err = Config::parse(Path::new("/etc/haven/haven.toml"), text)
        .expect_err("the config must be refused");
    let shown = err.to_string();
    assert!(
        shown.starts_with("/etc/haven/haven.toml"),
        "names the file: {shown}"
    );
    (shown, err.line, err.key)
}

const REPO: &str = "[repositories.main]\nurl = \"/r\"\npassword-file = \"/p\"\n";

#[test]
fn mistakes_name_the_file_line_and_key() {
    // An unknown key inside a component.
    let (shown, line, _) = error_of(&format!(
        "{REPO}[tenants.a]\nrepository = \"main\"\n[tenants.a.components.db]\nkind = \"postgres\"\nurl = \"postgresql://x/y\"\nport = 5432\n"
    ));
    assert!(shown.contains("port"), "{shown}");
    assert!(
        line.is_some_and(|l| (6..=9).contains(&l)),
        "line {line:?}: {shown}"
    );

    // An unknown kind.
    let (shown, line, _) = error_of(&format!(
        "{REPO}[tenants.a]\nrepository = \"main\"\n[tenants.a.components.db]\nkind = \"mongodb\"\n"
    ));
    assert!(
        shown.contains("mongodb") && shown.contains("postgres"),
        "{shown}"
    );
    assert!(line.is_some(), "{shown}");

    // A repository that is not declared.
    let (shown, line, key) = error_of(&format!(
        "{REPO}\n[tenants.a]\nrepository = \"mian\"\n[tenants.a.components.f]\nkind = \"files\"\npaths = [\"/x\"]\n"
    ));
    assert_eq!(line, Some(6), "{shown}");
    assert_eq!(key, "tenants.a.repository");
    assert!(
        shown.contains("\"mian\"") && shown.contains("main"),
        "{shown}"
    );

    // A wrong type.
    let (shown, line, _) = error_of(&format!(
        "{REPO}[tenants.a]\nrepository = \"main\"\n[tenants.a.components.s]\nkind = \"etcd\"\nendpoints = \"http://127.0.0.1:2379\"\n"
    ));
    assert!(line.is_some(), "{shown}");
    assert!(
        shown.contains("endpoints") || shown.contains("sequence"),
        "{shown}"
    );

    // A relative path for files.
    let (shown, _, key) = error_of(&format!(
        "{REPO}[tenants.a]\nrepository = \"main\"\n[tenants.a.components.f]\nkind = \"files\"\npaths = [\"uploads\"]\n"
    ));
    assert_eq!(key, "tenants.a.components.f.paths", "{shown}");
    assert!(shown.contains("absolute"), "{shown}");

    // A tenant without components, and broken TOML.
    let (shown, _, key) = error_of(&format!("{REPO}[tenants.a]\nrepository = \"main\"\n"));
    assert_eq!(key, "tenants.a", "{shown}");
    let (shown, line, _) = error_of(&format!("{REPO}[tenants.a\n"));
    assert_eq!(line, Some(4), "{shown}");
}

#[test]
fn a_missing_config_file_says_how_to_name_one() {
    let err = Config::load(Path::new("/nonexistent/haven.toml")).unwrap_err();
    assert!(err.to_string().contains("--config"), "{err}");
}

#[test]
fn relative_secret_paths_are_relative_to_the_config_file() {
    let config = Config::parse(
        Path::new("/etc/haven/haven.toml"),
        "[repositories.main]\nurl = \"/r\"\npassword-file = \"password\"\n[tenants.a]\nrepository = \"main\"\n[tenants.a.components.f]\nkind = \"files\"\npaths = [\"/x\"]\n",
    )
    .unwrap();
    assert_eq!(
        config.repositories["main"].password_file.as_deref(),
        Some(Path::new("/etc/haven/password"))
    );
}

#[test]
fn a_short_rpo_is_probed_by_default_and_probe_every_off_turns_it_off() {
    use std::time::Duration;
    let probe = |tenant_keys: &str| {
        let text = format!(
            "[repositories.main]\nurl = \"/r\"\npassword-file = \"password\"\n[tenants.a]\nrepository = \"main\"\n{tenant_keys}[tenants.a.components.f]\nkind = \"files\"\npaths = [\"/x\"]\n"
        );
        let config = Config::parse(Path::new("/etc/haven/haven.toml"), &text).unwrap();
        config.tenant("a").unwrap().plan.probe_every
    };
    assert_eq!(probe(""), None, "the default 24 h RPO is not probed");
    assert_eq!(probe("rpo = \"2m\"\n"), Some(Duration::from_secs(30)));
    assert_eq!(probe("rpo = \"30s\"\n"), Some(Duration::from_secs(10)));
    assert_eq!(probe("rpo = \"30m\"\n"), Some(Duration::from_secs(60)));
    assert_eq!(probe("rpo = \"2m\"\nprobe-every = \"off\"\n"), None);
    assert_eq!(
        probe("rpo = \"2m\"\nprobe-every = \"5s\"\n"),
        Some(Duration::from_secs(5))
    );
}
