//! What a base backup says about itself: its `backup_label` (where WAL replay must start,
//! on which timeline, when) and its `backup_manifest` (every file with its checksum, and
//! the WAL range the backup needs), read from the tar stream `pg_basebackup -Ft -D -`
//! writes while it streams by.
//!
//! The tar is read header by header (512-byte blocks: name at 0, size in octal at 124,
//! type at 156; data padded to 512); only the two top-level files are kept, the rest is
//! skipped. PostgreSQL writes the manifest last, into the same tar, when the output is
//! standard output.

use std::io::{self, Read};

use serde::Deserialize;

use super::lsn::Lsn;

/// The facts of one base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupInfo {
    /// Replay starts here (`START WAL LOCATION`).
    pub start_lsn: Lsn,
    /// The backup is consistent once replay reaches this (the manifest's `End-LSN`).
    pub end_lsn: Lsn,
    pub timeline: u32,
    /// `START TIME` as the server wrote it (`2026-12-05 23:46:51 UTC`).
    pub start_time: String,
    /// Files listed in the manifest.
    pub manifest_files: usize,
    /// Bytes of data in the tar (files only).
    pub data_bytes: u64,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "Files")]
    files: Vec<serde_json::Value>,
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<WalRange>,
}

#[derive(Deserialize)]
struct WalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: String,
    #[serde(rename = "End-LSN")]
    end: String,
}

const BLOCK: usize = 512;
/// The manifest of a big cluster lists every file; beyond this it is not a manifest.
const MAX_KEPT: u64 = 256 << 20;

/// Read a base backup's tar to its end and return what its label and manifest say.
pub fn read_base_backup(mut tar: impl Read) -> Result<BaseBackupInfo, String> {
    let mut label = None;
    let mut manifest = None;
    let mut data_bytes = 0u64;
    let mut header = [0u8; BLOCK];
    loop {
        if !read_block(&mut tar, &mut header)? {
            break;
        }
        if header.iter().all(|&b| b == 0) {
            // Two zero blocks end the archive; read on to the end of the stream anyway.
            io::copy(&mut tar, &mut io::sink()).map_err(|e| e.to_string())?;
            break;
        }
        let name = field(&header[0..100]);
        let size = octal(&header[124..136])
            .ok_or_else(|| format!("tar header of {name:?} has a bad size field"))?;
        let kind = header[156];
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let regular = kind == b'0' || kind == 0;
        if regular {
            data_bytes += size;
        }
        let keep = regular && (name == "backup_label" || name == "backup_manifest");
        if keep {
            if size > MAX_KEPT {
                return Err(format!("{name} is {size} bytes, too big to be one"));
            }
            let mut body = vec![0u8; padded as usize];
            tar.read_exact(&mut body)
                .map_err(|e| format!("reading {name} from the tar: {e}"))?;
            body.truncate(size as usize);
            let text = String::from_utf8(body).map_err(|_| format!("{name} is not text"))?;
            if name == "backup_label" {
                label = Some(text);
            } else {
                manifest = Some(text);
            }
        } else {
            let skipped = io::copy(&mut (&mut tar).take(padded), &mut io::sink())
                .map_err(|e| e.to_string())?;
            if skipped != padded {
                return Err(format!("the tar ends inside {name:?}"));
            }
        }
    }
    let label = label.ok_or("the base backup has no backup_label")?;
    let manifest = manifest.ok_or(
        "the base backup has no backup_manifest (PostgreSQL 13 or newer writes one; was \
         --no-manifest given?)",
    )?;
    let mut info = parse_label(&label)?;
    let manifest: Manifest =
        serde_json::from_str(&manifest).map_err(|e| format!("backup_manifest: {e}"))?;
    let range = manifest
        .wal_ranges
        .iter()
        .find(|r| r.timeline == info.timeline)
        .or(manifest.wal_ranges.last())
        .ok_or("backup_manifest names no WAL range")?;
    let start: Lsn = range.start.parse()?;
    if start != info.start_lsn {
        return Err(format!(
            "backup_label starts at {} but the manifest's WAL range at {start}",
            info.start_lsn
        ));
    }
    info.end_lsn = range.end.parse()?;
    info.manifest_files = manifest.files.len();
    info.data_bytes = data_bytes;
    Ok(info)
}

/// Parse `backup_label` (`KEY: value` lines).
pub(crate) fn parse_label(text: &str) -> Result<BaseBackupInfo, String> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .map(str::trim)
            .ok_or_else(|| format!("backup_label has no {key}"))
    };
    // `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)`
    let start = value("START WAL LOCATION")?;
    let start_lsn: Lsn = start.split_whitespace().next().unwrap_or("").parse()?;
    let timeline = value("START TIMELINE")?
        .parse()
        .map_err(|_| "backup_label: START TIMELINE is not a number".to_string())?;
    Ok(BaseBackupInfo {
        start_lsn,
        end_lsn: start_lsn,
        timeline,
        start_time: value("START TIME")?.to_string(),
        manifest_files: 0,
        data_bytes: 0,
    })
}

fn read_block(r: &mut impl Read, block: &mut [u8; BLOCK]) -> Result<bool, String> {
    let mut at = 0;
    while at < BLOCK {
        match r.read(&mut block[at..]) {
            Ok(0) if at == 0 => return Ok(false),
            Ok(0) => return Err("the tar ends inside a header".into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(true)
}

fn field(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn octal(bytes: &[u8]) -> Option<u64> {
    let text = field(bytes);
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, body: &[u8]) -> Vec<u8> {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{:011o}\0", body.len());
        h[124..136].copy_from_slice(size.as_bytes());
        h[156] = b'0';
        let mut out = h.to_vec();
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
        CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
        START TIME: 2026-12-05 23:46:51 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";
    const MANIFEST: &str = r#"{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [{ "Path": "PG_VERSION", "Size": 3 }],
"WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }],
"Manifest-Checksum": "x"}"#;

    #[test]
    fn label_and_manifest_are_read_from_the_stream() {
        let mut tar = entry("backup_label", LABEL.as_bytes());
        tar.extend(entry("PG_VERSION", b"15\n"));
        tar.extend(entry("backup_manifest", MANIFEST.as_bytes()));
        tar.extend([0u8; 2 * BLOCK]);
        let info = read_base_backup(&tar[..]).unwrap();
        assert_eq!(info.start_lsn, "0/2000028".parse().unwrap());
        assert_eq!(info.end_lsn, "0/2000100".parse().unwrap());
        assert_eq!(info.timeline, 1);
        assert_eq!(info.start_time, "2026-12-05 23:46:51 UTC");
        assert_eq!(info.manifest_files, 1);
        assert_eq!(info.data_bytes, (LABEL.len() + 3 + MANIFEST.len()) as u64);
    }

    #[test]
    fn a_missing_manifest_or_a_cut_stream_is_an_error() {
        let mut tar = entry("backup_label", LABEL.as_bytes());
        tar.extend([0u8; 2 * BLOCK]);
        assert!(read_base_backup(&tar[..])
            .unwrap_err()
            .contains("no backup_manifest"));
        let tar = entry("backup_label", LABEL.as_bytes());
        assert!(read_base_backup(&tar[..BLOCK + 10]).is_err());
    }
}
