//! Runbooks in the config: the issue's example parses as written; every kind of mistake
//! (cycle, unknown step, undefined variable, unknown tenant, dns without key, bad
//! duration, duplicate name, wrong key for the kind) is refused with file, line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use haven_ops::config::Config;
use haven_ops::runbook::{DnsProvider, DnsType, OnFailure, StepKind, Var};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dr.toml")
}

#[test]
fn the_example_runbook_parses_as_written() {
    let config = Config::load(&example_path()).expect("examples/dr.toml is valid");
    let book = &config.runbooks["acme-failover"];
    assert_eq!(
        (book.tenant.as_str(), book.into.as_str()),
        ("acme", "acme-dr")
    );
    assert_eq!(book.rto, Some(Duration::from_secs(1800)));
    assert_eq!(
        book.drill_record.as_deref(),
        Some("drill.acme.example.com.")
    );
    assert!(book.drill_schedule.is_some());
    assert_eq!(book.alerts, vec!["ops".to_string()]);
    let names: Vec<&str> = book.order().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "provision",
            "restore",
            "smoke",
            "accounts",
            "scale-down-old",
            "dns",
            "tell"
        ]
    );
    let provision = book.step("provision").unwrap();
    assert_eq!(provision.timeout, Duration::from_secs(900));
    assert!(
        matches!(&provision.kind, StepKind::Command(c) if c.outputs.is_none() && !c.idempotent)
    );
    assert_eq!(
        book.step("scale-down-old").unwrap().on_failure,
        OnFailure::Continue
    );
    let dns = book.step("dns").unwrap();
    assert_eq!(dns.retries, 3);
    let StepKind::Dns(d) = &dns.kind else {
        panic!("dns step")
    };
    assert_eq!(d.rtype, DnsType::A);
    assert_eq!(d.ttl, 60);
    assert!(!d.allow_unproven);
    assert!(
        matches!(&d.provider, DnsProvider::Rfc2136 { server, zone, tsig_key_file }
        if server == "ns1.example.com:53" && zone == "example.com." && tsig_key_file == Path::new("/etc/haven/acme-dns.key"))
    );
    let vars: Vec<&Var> = d.value.vars().collect();
    assert_eq!(
        vars,
        [&Var::Step {
            step: "provision".into(),
            key: "lb_ip".into()
        }]
    );
    let StepKind::Sql(q) = &book.step("accounts").unwrap().kind else {
        panic!("sql step")
    };
    assert_eq!(q.component, "db");
    assert_eq!(book.ancestors("tell").len(), 5);
}

const BASE: &str = r#"[repositories.main]
url = "/tmp/r"
[alerts.ops]
kind = "webhook"
url = "http://127.0.0.1:9/x"
[tenants.acme]
repository = "main"
[tenants.acme.components.db]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:5432/app"
[tenants.acme-dr]
repository = "main"
[tenants.acme-dr.components.db]
kind = "postgres"
url = "postgresql://postgres@127.0.0.1:5433/app"
[runbooks.fo]
tenant = "acme"
into = "acme-dr"
"#;

/// Line 19 is the first line after BASE.
const FIRST: usize = 19;

fn error_of(steps: &str) -> (String, usize, String) {
    let text = format!("{BASE}{steps}");
    let err = Config::parse(Path::new("/etc/haven/haven.toml"), &text)
        .expect_err("the runbook must be refused");
    let shown = err.to_string();
    assert!(shown.starts_with("/etc/haven/haven.toml, line "), "{shown}");
    (shown, err.line.expect("a line"), err.key)
}

fn step(name: &str, extra: &str) -> String {
    format!(
        "[[runbooks.fo.steps]]\nname = \"{name}\"\nkind = \"command\"\nrun = [\"true\"]\n{extra}"
    )
}

#[test]
fn a_cycle_in_needs_is_refused_naming_it() {
    let (shown, line, key) =
        error_of(&(step("a", "needs = [\"b\"]\n") + &step("b", "needs = [\"a\"]\n")));
    assert!(shown.contains("cycle: a -> b -> a"), "{shown}");
    assert_eq!(key, "runbooks.fo.steps.a.needs");
    assert_eq!(line, FIRST + 4);
    let (shown, _, _) = error_of(&step("a", "needs = [\"a\"]\n"));
    assert!(shown.contains("a -> a"), "{shown}");
}

#[test]
fn an_unknown_step_in_needs_is_refused() {
    let (shown, line, key) = error_of(&(step("a", "") + &step("b", "needs = [\"nope\"]\n")));
    assert!(shown.contains("no step \"nope\""), "{shown}");
    assert_eq!(key, "runbooks.fo.steps.b.needs");
    assert_eq!(line, FIRST + 8);
}

#[test]
fn duplicate_step_names_are_refused() {
    let (shown, line, key) = error_of(&(step("a", "") + &step("a", "")));
    assert!(shown.contains("two steps are called \"a\""), "{shown}");
    assert_eq!(
        (line, key.as_str()),
        (FIRST + 5, "runbooks.fo.steps.a.name")
    );
}

#[test]
fn a_variable_nothing_defines_is_refused() {
    // Not a dependency.
    let (shown, _, key) = error_of(&(step("a", "outputs = [\"ip\"]\n")
        + "[[runbooks.fo.steps]]\nname = \"b\"\nkind = \"http\"\nurl = \"http://${steps.a.ip}/\"\n"));
    assert!(shown.contains("add \"a\" to needs"), "{shown}");
    assert_eq!(key, "runbooks.fo.steps.b");
    // Declared outputs: another key is refused.
    let (shown, _, _) = error_of(&(step("a", "outputs = [\"ip\"]\n")
        + "[[runbooks.fo.steps]]\nname = \"b\"\nkind = \"http\"\nneeds = [\"a\"]\nurl = \"http://${steps.a.lb}/\"\n"));
    assert!(shown.contains("defines ip (not lb)"), "{shown}");
    // A fixed-output kind.
    let (shown, _, _) = error_of(
        &("[[runbooks.fo.steps]]\nname = \"r\"\nkind = \"restore\"\n".to_string()
            + &step(
                "b",
                "needs = [\"r\"]\nrun = [\"echo\", \"${steps.r.nope}\"]\n",
            )
            .replace("run = [\"true\"]\n", "")),
    );
    assert!(
        shown.contains("a restore step defines point, seconds, passed (not nope)"),
        "{shown}"
    );
    // No such step; a malformed variable.
    let (shown, _, _) =
        error_of(&step("b", "").replace("[\"true\"]", "[\"echo\", \"${steps.x.y}\"]"));
    assert!(shown.contains("names no step"), "{shown}");
    let (shown, _, key) =
        error_of(&step("b", "").replace("[\"true\"]", "[\"echo\", \"${run.when}\"]"));
    assert!(shown.contains("is not a variable"), "{shown}");
    assert_eq!(key, "runbooks.fo.steps.b.run");
    // An undeclared command's outputs are dynamic; a transitive dependency is enough.
    let ok = format!(
        "{BASE}{}{}{}",
        step("a", ""),
        step("m", "needs = [\"a\"]\n"),
        step("b", "needs = [\"m\"]\n").replace(
            "[\"true\"]",
            "[\"echo\", \"${steps.a.anything} ${env.HOME} ${run.id} ${tenant} ${into}\"]"
        )
    );
    Config::parse(Path::new("/x.toml"), &ok).expect("valid");
}

#[test]
fn unknown_tenants_bad_durations_and_dns_without_key_are_refused() {
    let text = BASE.replace("into = \"acme-dr\"", "into = \"acme-xx\"") + &step("a", "");
    let err = Config::parse(Path::new("/h.toml"), &text).unwrap_err();
    assert_eq!(
        (err.key.as_str(), err.line),
        ("runbooks.fo.into", Some(FIRST - 1)),
        "{err}"
    );
    assert!(err.to_string().contains("no tenant \"acme-xx\""), "{err}");

    let (shown, line, key) = error_of(&step("a", "timeout = \"5 minutes\"\n"));
    assert!(shown.contains("invalid duration"), "{shown}");
    assert_eq!(
        (line, key.as_str()),
        (FIRST + 4, "runbooks.fo.steps.a.timeout")
    );

    let (shown, line, key) = error_of("[[runbooks.fo.steps]]\nname = \"d\"\nkind = \"dns\"\nserver = \"127.0.0.1:53\"\nzone = \"example.com.\"\nrecord = \"a.example.com.\"\ntype = \"A\"\nvalue = \"1.2.3.4\"\n");
    assert!(shown.contains("needs tsig-key-file"), "{shown}");
    assert_eq!(
        (line, key.as_str()),
        (FIRST, "runbooks.fo.steps.d.tsig-key-file")
    );

    let (shown, _, key) = error_of(&step("a", "record = \"x.\"\n"));
    assert!(
        shown.contains("record does not apply to a command step"),
        "{shown}"
    );
    assert_eq!(key, "runbooks.fo.steps.a.record");

    let (shown, line, _) = error_of(&step("a", "colour = \"red\"\n"));
    assert!(shown.contains("unknown field `colour`"), "{shown}");
    assert!(line >= FIRST, "{shown}");

    let (shown, _, key) = error_of(&step("a", "on-failure = \"ignore\"\n"));
    assert!(shown.contains("use \"stop\" or \"continue\""), "{shown}");
    assert_eq!(key, "runbooks.fo.steps.a.on-failure");

    let (shown, _, key) =
        error_of("[[runbooks.fo.steps]]\nname = \"n\"\nkind = \"notify\"\nalerts = [\"pager\"]\n");
    assert!(shown.contains("no alert sink \"pager\""), "{shown}");
    assert_eq!(key, "runbooks.fo.steps.n.alerts");
}
