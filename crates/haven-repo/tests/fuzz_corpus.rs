//! The fuzz corpus as a stable test: every harness of `fuzz/` runs over every file of
//! `fuzz/corpus/*` without panicking, and every `valid-*` seed decodes with the harness
//! of its folder. Fails when the corpus goes missing or a decoder stops reading what
//! haven writes.
//!
//! The harnesses are `fuzz/src/lib.rs`, included here as a module, so the fuzz targets
//! and this test run the same code. Seeds are written by the ignored test
//! `write_seed_corpus`:
//!
//! ```text
//! cargo test -p haven-repo --test fuzz_corpus -- --ignored write_seed_corpus
//! ```
//!
//! Corpus file names: `valid-*` must decode, `mut-*` are mutated seeds, `crash-*` are
//! inputs that once crashed a decoder (regressions); only the first kind is asserted on.

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};

use haven_repo::chunker::ChunkerParams;
use haven_repo::codec::{self, ObjectKind};
use haven_repo::compress;
use haven_repo::crypto;
use haven_repo::id::{BlobId, PackId, SnapshotId};
use haven_repo::index::{IndexFile, IndexPack};
use haven_repo::keys::{self, Kdf, KdfParams, KeyMeta, KeySlotFile, Secret};
use haven_repo::lock::LockInfo;
use haven_repo::pack::{self, BlobKind, PackBuilder};
use haven_repo::repository::RepoConfig;
use haven_repo::snapshot::{Snapshot, Summary};
use haven_repo::tree::{Node, NodeKind, Tree, Xattr};

use harness::{key, HARNESSES, KEY_FILE_SECRET, SLOT_ID};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

/// (target folder, file name, bytes) of every corpus file.
fn corpus_files() -> Vec<(String, String, Vec<u8>)> {
    let root = corpus_root();
    let mut out = vec![];
    for entry in std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("fuzz corpus missing at {}: {e}", root.display()))
    {
        let dir = entry.expect("corpus entry").path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            HARNESSES.iter().any(|(n, _)| *n == target),
            "corpus folder {target} has no harness"
        );
        for f in std::fs::read_dir(&dir).expect("corpus folder") {
            let path = f.expect("corpus file").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((
                target.clone(),
                name,
                std::fs::read(&path).expect("read corpus file"),
            ));
        }
    }
    out
}

#[test]
fn every_decoder_survives_every_corpus_file_and_valid_seeds_decode() {
    let started = std::time::Instant::now();
    let files = corpus_files();
    for (name, _) in HARNESSES {
        let valid = files
            .iter()
            .filter(|(t, f, _)| t == name && f.starts_with("valid-"))
            .count();
        assert!(valid > 0, "fuzz/corpus/{name} has no valid-* seed");
    }
    let mut failures = vec![];
    for (target, file, bytes) in &files {
        for (name, run) in HARNESSES {
            match std::panic::catch_unwind(|| run(bytes)) {
                Err(_) => failures.push(format!("{name} panicked on {target}/{file}")),
                Ok(false) if name == target && file.starts_with("valid-") => {
                    failures.push(format!("{name} rejects its valid seed {file}"))
                }
                Ok(_) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "{} corpus files x {} harnesses in {:?}",
        files.len(),
        HARNESSES.len(),
        started.elapsed()
    );
}

/// Regression for the fuzz finding `crash-oom-huge-raw-len*`: a damaged raw length is
/// refused before the output buffer is allocated (without the bound these abort the
/// test binary: allocation failure or capacity overflow).
#[test]
fn decompress_refuses_implausible_lengths_before_allocating() {
    let zstd_magic = [0x28, 0xb5, 0x2f, 0xfd];
    for raw_len in [1usize << 40, usize::MAX, compress::MAX_RAW_LEN + 1] {
        assert!(compress::decompress_chunk(&zstd_magic, raw_len).is_err());
    }
}

/// The key-file seed is a real slot for the fuzz key: the harness reaches past the KDF.
#[test]
fn key_file_seed_opens_to_the_fuzz_key() {
    let data = std::fs::read(corpus_root().join("key_slot/valid-key-file-slot")).expect("seed");
    let slot = keys::decode_slot(&data).expect("decodes");
    let master = keys::try_open(&SLOT_ID, &slot, &Secret::KeyFile(KEY_FILE_SECRET.to_vec()))
        .expect("the seed opens with the fuzz key file");
    assert_eq!(master.to_bytes(), harness::FUZZ_KEY);
    keys::read_meta(&master, &SLOT_ID, &slot).expect("its metadata opens");
}

// ----- seed generation -----

fn pseudo_random(n: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut v);
    v
}

fn text(n: usize) -> Vec<u8> {
    let line = b"the quick brown fox jumps over the lazy dog; haven backs it up\n";
    line.iter().copied().cycle().take(n).collect()
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime_ns: 1_700_000_000_123_456_789,
        ctime_ns: 1_700_000_001_000_000_000,
        inode: 42,
        device: 2049,
        links: 1,
        rdev: 0,
        size: 0,
        content: vec![],
        subtree: None,
        link_target: vec![],
        xattrs: vec![],
    }
}

/// A version 2 tree: nodes with extended attributes (an ACL and a capability).
fn tree_with_xattrs() -> Tree {
    let mut tree = small_tree();
    tree.nodes[0].xattrs = vec![Xattr {
        name: b"system.posix_acl_default".to_vec(),
        value: vec![2, 0, 0, 0, 1, 0, 7, 0, 255, 255, 255, 255],
    }];
    tree.nodes[2].xattrs = vec![
        Xattr {
            name: b"security.capability".to_vec(),
            value: vec![0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        },
        Xattr {
            name: b"user.mime_type".to_vec(),
            value: b"text/plain".to_vec(),
        },
    ];
    tree
}

fn small_tree() -> Tree {
    let mut nodes = vec![
        Node {
            subtree: Some(BlobId([1; 32])),
            mode: 0o755,
            ..node(b"bin", NodeKind::Dir)
        },
        Node {
            name: b"caf\xe9".to_vec(),
            ..node(b"", NodeKind::Fifo)
        },
        Node {
            content: vec![BlobId([2; 32]), BlobId([3; 32])],
            size: 300_000,
            ..node(b"hello.txt", NodeKind::File)
        },
        Node {
            link_target: b"hello.txt".to_vec(),
            ..node(b"link", NodeKind::Symlink)
        },
    ];
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Tree { nodes }
}

fn big_tree() -> Tree {
    Tree {
        nodes: (0..40u8)
            .map(|i| Node {
                content: vec![BlobId([i; 32])],
                size: i as u64 * 1000,
                ..node(format!("file-{i:03}").as_bytes(), NodeKind::File)
            })
            .collect(),
    }
}

fn snapshot(n_tags: usize) -> Snapshot {
    Snapshot {
        time: chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap(),
        hostname: "fuzzhost".into(),
        username: "fuzzer".into(),
        paths: vec!["/home/fuzzer".into(), "/etc".into()],
        tags: (0..n_tags).map(|i| format!("tag-{i}")).collect(),
        tree: BlobId([4; 32]),
        parent: (n_tags > 0).then_some(SnapshotId([5; 32])),
        stdin_name: (n_tags == 0).then(|| "dump.sql".into()),
        summary: Summary {
            files: 1234,
            dirs: 56,
            files_unchanged: 1000,
            bytes_read: 1 << 30,
            bytes_total: 3 << 30,
            blobs_added: 77,
            bytes_added_raw: 8 << 20,
            bytes_added_stored: 3 << 20,
            warnings: 1,
            seconds: 12.5,
        },
        program_version: "0.1.0".into(),
    }
}

/// A pack of three blobs (compressed data, raw data, a tree): bytes, blobs.
fn sample_pack() -> (Vec<u8>, Vec<pack::PackBlob>) {
    let k = key();
    let mut b = PackBuilder::new(4096);
    let tree = small_tree().encode();
    for (kind, plain) in [
        (BlobKind::Data, text(1500)),
        (BlobKind::Data, pseudo_random(300, 1)),
        (BlobKind::Tree, tree),
    ] {
        let id = BlobId(k.id_of(&plain));
        b.add(pack::seal_blob(k, kind, id, &plain, 3));
    }
    let (_, bytes, blobs) = b.finish(k);
    assert!(blobs[0].compressed && !blobs[1].compressed);
    (bytes.to_vec(), blobs)
}

fn with_u32(prefix: &[u8], n: u32, rest: &[u8]) -> Vec<u8> {
    [prefix, &n.to_le_bytes()[..], rest].concat()
}

/// Mutations of an encoded object: truncated, a flipped body byte, a newer version, an
/// unknown compression, and for compressed objects a wrong length.
fn mutate_object(data: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("truncated", data[..data.len() / 2].to_vec())];
    let mut flipped = data.to_vec();
    let mid = 6 + (data.len() - 6) / 2;
    if mid < data.len() {
        flipped[mid] ^= 0x55;
        out.push(("flipped", flipped));
    }
    let mut v = data.to_vec();
    v[4] = 2;
    out.push(("version2", v));
    let mut c = data.to_vec();
    c[5] = if data[5] == 1 { 0 } else { 7 };
    out.push(("compression", c));
    if data[5] == 1 {
        let mut l = data.to_vec();
        l[6] = l[6].wrapping_add(1);
        out.push(("length", l));
    }
    out
}

#[test]
#[ignore = "writes fuzz/corpus seeds; run with --ignored write_seed_corpus to regenerate"]
fn write_seed_corpus() {
    let k = key();
    let mut seeds: Vec<(&str, String, Vec<u8>)> = vec![];
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        seeds.push((target, name.to_string(), data));
    };
    let object = |add: &mut dyn FnMut(&'static str, &str, Vec<u8>),
                  target: &'static str,
                  name: &str,
                  data: Vec<u8>| {
        for (m, d) in mutate_object(&data) {
            add(target, &format!("mut-{name}-{m}"), d);
        }
        add(target, &format!("valid-{name}"), data);
    };

    // Codec objects.
    object(&mut add, "codec_tree", "small", small_tree().encode());
    object(&mut add, "codec_tree", "compressed", big_tree().encode());
    object(
        &mut add,
        "codec_tree",
        "xattrs",
        tree_with_xattrs().encode(),
    );
    object(&mut add, "codec_tree", "empty", Tree::default().encode());
    object(
        &mut add,
        "codec_snapshot",
        "full",
        codec::encode(ObjectKind::Snapshot, &snapshot(3)),
    );
    object(
        &mut add,
        "codec_snapshot",
        "stdin",
        codec::encode(ObjectKind::Snapshot, &snapshot(0)),
    );
    let (pack_bytes, blobs) = sample_pack();
    let index = IndexFile {
        packs: vec![
            IndexPack {
                id: PackId(k.id_of(&pack_bytes)),
                blobs: blobs.clone(),
            },
            IndexPack {
                id: PackId([6; 32]),
                blobs: blobs[..2].to_vec(),
            },
        ],
    };
    object(
        &mut add,
        "codec_index",
        "two-packs",
        codec::encode(ObjectKind::Index, &index),
    );
    object(
        &mut add,
        "codec_index",
        "empty",
        codec::encode(ObjectKind::Index, &IndexFile::default()),
    );
    let config = RepoConfig {
        repo_id: [9; 32],
        chunker: ChunkerParams::default(),
        compression_level: 3,
        pack_size: 16 << 20,
    };
    object(
        &mut add,
        "codec_config",
        "default",
        codec::encode(ObjectKind::Config, &config),
    );
    let small = RepoConfig {
        chunker: harness::CHUNKER_PARAMS[0],
        ..config.clone()
    };
    object(
        &mut add,
        "codec_config",
        "small-chunks",
        codec::encode(ObjectKind::Config, &small),
    );
    let bad = RepoConfig {
        chunker: ChunkerParams {
            min_size: 0,
            avg_size: 3,
            max_size: 1,
        },
        ..config
    };
    add(
        "codec_config",
        "valid-bad-chunker-sizes",
        codec::encode(ObjectKind::Config, &bad),
    );
    let lock = LockInfo {
        exclusive: true,
        host: "fuzzhost".into(),
        pid: 4242,
        user: "fuzzer".into(),
        purpose: "prune".into(),
        time_unix: 1_700_000_000,
    };
    object(
        &mut add,
        "codec_lock",
        "exclusive",
        codec::encode(ObjectKind::Lock, &lock),
    );
    let meta = KeyMeta {
        created_unix: 1_700_000_000,
        host: "fuzzhost".into(),
        user: "fuzzer".into(),
    };
    object(
        &mut add,
        "codec_key_meta",
        "meta",
        codec::encode(ObjectKind::KeyMeta, &meta),
    );
    let header = codec::encode(ObjectKind::PackHeader, &blobs);
    object(&mut add, "codec_pack_header", "three-blobs", header.clone());

    // Key slots: a key-file slot for SLOT_ID that opens to the fuzz key, an Argon2 slot
    // with the lowest accepted cost, and one with out-of-range KDF parameters.
    let salt = [3u8; 16];
    let kek = *blake3::keyed_hash(
        &blake3::derive_key("haven key file v1", KEY_FILE_SECRET),
        &salt,
    )
    .as_bytes();
    let slot = KeySlotFile {
        kdf: Kdf::KeyFile { salt },
        wrapped: crypto::seal_with_key(
            &kek,
            format!("haven/v1/keyslot/{SLOT_ID}").as_bytes(),
            &harness::FUZZ_KEY,
        ),
        meta: k.seal(
            format!("haven/v1/keymeta/{SLOT_ID}").as_bytes(),
            &codec::encode(ObjectKind::KeyMeta, &meta),
        ),
    };
    object(
        &mut add,
        "key_slot",
        "key-file-slot",
        codec::encode(ObjectKind::KeySlot, &slot),
    );
    let low = KdfParams {
        memory_kib: 8 << 10,
        iterations: 1,
        parallelism: 1,
    };
    let (_, argon) = keys::new_slot(k, &Secret::Passphrase("fuzz".into()), low);
    object(&mut add, "key_slot", "argon2-slot", argon);
    let hostile = KeySlotFile {
        kdf: Kdf::Argon2id {
            params: KdfParams {
                memory_kib: u32::MAX,
                iterations: 1,
                parallelism: 1,
            },
            salt,
        },
        ..slot
    };
    add(
        "key_slot",
        "mut-huge-kdf-memory",
        codec::encode(ObjectKind::KeySlot, &hostile),
    );

    // Packs.
    let hlen = u32::from_le_bytes(pack_bytes[pack_bytes.len() - 4..].try_into().unwrap()) as usize;
    let data_end = pack_bytes.len() - 4 - hlen;
    let sealed_header = &pack_bytes[data_end..pack_bytes.len() - 4];
    let size = (pack_bytes.len() as u64).to_le_bytes();
    add(
        "pack_decode_header",
        "valid-plain-header",
        [&[0u8][..], &size, &header].concat(),
    );
    add(
        "pack_decode_header",
        "valid-sealed-header",
        [&[1u8][..], &size, sealed_header].concat(),
    );
    add(
        "pack_decode_header",
        "mut-pack-too-small",
        [&[0u8][..], &64u64.to_le_bytes(), &header].concat(),
    );
    add(
        "pack_decode_header",
        "mut-not-a-header",
        [&[0u8][..], &size, &pack_bytes[..200]].concat(),
    );
    add(
        "pack_parse",
        "valid-stored-pack",
        [&[1u8][..], &pack_bytes].concat(),
    );
    let area_len = (data_end as u16).to_le_bytes();
    add(
        "pack_parse",
        "valid-assembled-pack",
        [&[0u8][..], &area_len, &pack_bytes[..data_end], &header].concat(),
    );
    add(
        "pack_parse",
        "mut-truncated",
        [&[1u8][..], &pack_bytes[..pack_bytes.len() - 9]].concat(),
    );
    let mut flipped = pack_bytes.clone();
    flipped[10] ^= 1;
    add(
        "pack_parse",
        "mut-blob-byte-flipped",
        [&[1u8][..], &flipped].concat(),
    );
    let mut long = pack_bytes.clone();
    let n = long.len();
    long[n - 1] = 0x7f;
    add(
        "pack_parse",
        "mut-header-length-too-long",
        [&[1u8][..], &long].concat(),
    );

    // Blobs: flags, raw length, payload.
    let plain = text(1500);
    let zipped = compress::compress_chunk(&plain, 3).expect("text compresses");
    add(
        "pack_open_blob",
        "valid-data-raw",
        with_u32(&[0], 300, &pseudo_random(300, 2)),
    );
    add(
        "pack_open_blob",
        "valid-data-compressed",
        with_u32(&[2], 1500, &zipped),
    );
    let tree = small_tree().encode();
    add(
        "pack_open_blob",
        "valid-tree-raw",
        with_u32(&[1], tree.len() as u32, &tree),
    );
    add(
        "pack_open_blob",
        "mut-wrong-id",
        with_u32(&[8], 300, &pseudo_random(300, 2)),
    );
    add(
        "pack_open_blob",
        "mut-wrong-raw-length",
        with_u32(&[2], 1499, &zipped),
    );
    add(
        "pack_open_blob",
        "mut-unsealed",
        with_u32(&[4], 300, &pseudo_random(300, 2)),
    );
    add(
        "pack_open_blob",
        "mut-not-zstd",
        with_u32(&[2], 300, &pseudo_random(300, 2)),
    );

    // Chunk decompression: raw length, zstd data.
    add(
        "decompress_chunk",
        "valid-text",
        with_u32(&[], 1500, &zipped),
    );
    let zeros = compress::compress_chunk(&[0u8; 20000], 3).expect("zeros compress");
    add(
        "decompress_chunk",
        "valid-zeros",
        with_u32(&[], 20000, &zeros),
    );
    add(
        "decompress_chunk",
        "mut-short-claim",
        with_u32(&[], 1000, &zipped),
    );
    add(
        "decompress_chunk",
        "mut-long-claim",
        with_u32(&[], 1501, &zipped),
    );
    add(
        "decompress_chunk",
        "mut-truncated",
        with_u32(&[], 1500, &zipped[..zipped.len() / 2]),
    );

    // The format marker.
    add(
        "marker",
        "valid-v1",
        b"haven repository\nformat-version 1\n".to_vec(),
    );
    add(
        "marker",
        "valid-crlf",
        b"haven repository\r\nformat-version 1\r\n".to_vec(),
    );
    add(
        "marker",
        "valid-newer",
        b"haven repository\nformat-version 2\n".to_vec(),
    );
    add(
        "marker",
        "mut-no-version",
        b"haven repository\nformat-version x\n".to_vec(),
    );
    add(
        "marker",
        "mut-other",
        b"restic repository\nversion 2\n".to_vec(),
    );
    add(
        "marker",
        "mut-binary",
        b"haven repository\n\xff\xfe\x00format-version 1".to_vec(),
    );

    // Chunker: params choice, read pattern, data.
    add(
        "chunker",
        "valid-random",
        [&[0u8, 0x05][..], &pseudo_random(6000, 3)].concat(),
    );
    add(
        "chunker",
        "valid-zeros-interrupted",
        [&[1u8, 0x85][..], &[0u8; 20000][..]].concat(),
    );
    add(
        "chunker",
        "valid-text-read-error",
        [&[2u8, 0x47][..], &text(9000)].concat(),
    );
    add(
        "chunker",
        "valid-random-tight",
        [&[3u8, 0x3f][..], &pseudo_random(5000, 4)].concat(),
    );
    add("chunker", "valid-empty", vec![0, 0]);

    let root = corpus_root();
    for (target, _) in HARNESSES {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("valid-") || name.starts_with("mut-") {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    for (target, name, data) in seeds {
        std::fs::write(root.join(target).join(name), data).unwrap();
    }
}
