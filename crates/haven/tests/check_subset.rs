//! `haven check --read-data-subset`: ten runs of `n/10` read every pack whole exactly
//! once between them (the union is every pack, no pack twice, the blobs add up to a
//! full `--read-data`), a damaged pack is found by the one slice that holds it and by
//! no other, `p%` reads a share of the packs, and a malformed subset is a usage error.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use serde_json::Value;

fn check_json(repo: &Repo, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let out = repo.run(&all);
    (out.code, out.json())
}

fn ids(report: &Value) -> Vec<String> {
    report["packs_read_ids"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn ten_slices_read_every_pack_once_and_the_slice_holding_a_damaged_pack_finds_it() {
    let seed = test_seed("check_subset");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        fs::write(src.join(format!("f{i}")), rng.random_bytes(2 << 20)).unwrap();
    }
    // Small chunks in small packs: many packs to slice.
    let repo = Repo::init(
        &tmp.path().join("repo"),
        &["--pack-size-mib", "1", "--chunk-avg-kib", "256"],
    );
    repo.backup(&[&src], &[]);

    let (code, full) = check_json(&repo, &["--read-data"]);
    assert_eq!(code, 0, "{full}");
    let packs = full["packs"].as_u64().unwrap();
    assert!(packs >= 20, "want many packs, got {packs}");
    assert_eq!(full["packs_read"].as_u64().unwrap(), packs);

    let mut seen: Vec<String> = vec![];
    let mut blobs = 0;
    let mut slice_of = std::collections::HashMap::new();
    for n in 1..=10 {
        let slice = format!("{n}/10");
        let (code, r) = check_json(&repo, &["--read-data-subset", &slice]);
        assert_eq!(code, 0, "{r}");
        assert_eq!(
            r["packs"].as_u64().unwrap(),
            packs,
            "structure is always checked"
        );
        let read = ids(&r);
        assert_eq!(r["packs_read"].as_u64().unwrap(), read.len() as u64);
        for id in &read {
            slice_of.insert(id.clone(), n);
        }
        seen.extend(read);
        blobs += r["blobs_read"].as_u64().unwrap();
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a pack was read by two slices");
    assert_eq!(seen.len() as u64, packs, "some pack was read by no slice");
    assert_eq!(blobs, full["blobs_read"].as_u64().unwrap());

    // Damage one pack: only its slice (of the ten) reports it; plain `check` reads
    // headers only and may not see a flipped bit in a blob.
    let victim = pack_files(&repo.path)
        .into_iter()
        .find(|p| slice_of.contains_key(&file_name(p)))
        .expect("a pack file named by its id");
    let name = file_name(&victim);
    flip_bit(&victim, 100, 3);
    for n in 1..=10 {
        let slice = format!("{n}/10");
        let (code, r) = check_json(&repo, &["--read-data-subset", &slice]);
        let problems = r["problems"].to_string();
        if n == slice_of[&name] {
            assert_eq!(code, 1, "slice {slice} holds the damaged pack: {r}");
            assert!(problems.contains(&name[..8]), "{problems}");
        } else {
            assert_eq!(code, 0, "slice {slice} does not hold it (seed {seed}): {r}");
        }
    }

    // 100% reads every pack; a bad subset is refused before anything is read.
    let (_, r) = check_json(&repo, &["--read-data-subset", "100%"]);
    assert_eq!(r["packs_read"].as_u64().unwrap(), packs);
    let out = repo.run(&["check", "--read-data-subset", "11/10"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("n/t"), "{}", out.stderr);
}
