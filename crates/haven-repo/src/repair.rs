//! `repair index`: rebuild the index from the packs themselves (under the exclusive
//! lock), for an index file that is damaged or lost.
//!
//! A pack header's seal does not name its pack, so a header alone is not trusted:
//! * A pack whose readable header agrees with what the old index says of it, and whose
//!   blobs no other pack claims, is kept as its header says (two ranged reads).
//! * Every other pack (in no old index, header unreadable, disagreeing, or claiming a
//!   blob another pack claims too) is read whole and re-hashed against its name
//!   ([`Repository::read_pack_verified`]); one that matches is kept as its header says.
//! * A pack that does not match its name is *salvaged*: each blob its header or the old
//!   index places there is opened and verified, and the blobs that verify and are in no
//!   verified pack stay indexed. Nothing is dropped that is not proven lost, and a pack
//!   of garbage behind a copied header contributes nothing.
//!
//! Only then are the new index files written and the old ones removed (FORMAT.md 17.6).

use std::collections::{HashMap, HashSet};

use haven_store::FileKind;

use crate::error::Result;
use crate::id::{BlobId, PackId};
use crate::index::{IndexPack, IndexedRepository, PackContent};
use crate::pack::{self, PackBlob};
use crate::repository::Repository;

/// What `repair index` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Packs listed in the new index (salvaged ones included).
    pub packs_indexed: u64,
    /// Packs read whole to verify them against their name.
    pub packs_read_whole: u64,
    /// Blobs kept from packs that do not match their name.
    pub blobs_salvaged: u64,
    /// Damaged or foreign packs, each with what was kept and what is lost.
    pub problems: Vec<String>,
}

pub fn repair_index(repo: &IndexedRepository) -> Result<RepairIndexReport> {
    let old = repo.index.by_pack();
    let mut stored: Vec<(PackId, u64)> = repo.repo.stored_packs()?.into_iter().collect();
    stored.sort();
    let headers = crate::parallel::map(repo.pack_readers(), &stored, |(id, size)| {
        repo.repo.read_pack_header(id, *size)
    });
    let mut claims: HashMap<BlobId, u32> = HashMap::new();
    for b in headers.iter().flatten().flatten() {
        *claims.entry(b.id).or_default() += 1;
    }
    let mut report = RepairIndexReport::default();
    let mut kept: Vec<IndexPack> = vec![];
    let mut suspect = vec![];
    for ((id, _), header) in stored.iter().zip(headers) {
        match header {
            Ok(blobs)
                if agrees(old.get(id), &blobs) && blobs.iter().all(|b| claims[&b.id] == 1) =>
            {
                kept.push(IndexPack { id: *id, blobs })
            }
            _ => suspect.push(*id),
        }
    }
    report.packs_read_whole = suspect.len() as u64;
    // The bytes of damaged packs are dropped here and read again to salvage them, so
    // that memory holds at most one pack per reader.
    let verified = crate::parallel::map(repo.pack_readers(), &suspect, |id| {
        repo.repo.read_pack_verified(id).map(|c| match c {
            PackContent::Verified(blobs) => Ok(blobs),
            PackContent::Damaged { why, .. } => Err(why),
        })
    });
    let mut damaged = vec![];
    for (id, result) in suspect.into_iter().zip(verified) {
        match result {
            Ok(Ok(blobs)) => kept.push(IndexPack { id, blobs }),
            Ok(Err(why)) => damaged.push((id, why)),
            // Storage errors stop the repair before any old index file is removed.
            Err(e) => return Err(e),
        }
    }
    let mut indexed: HashSet<BlobId> = kept.iter().flat_map(|p| &p.blobs).map(|b| b.id).collect();
    for (id, why) in damaged {
        let known = old.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let (salvaged, problem) = salvage(&repo.repo, &id, &why, known, &mut indexed)?;
        report.problems.push(problem);
        report.blobs_salvaged += salvaged.len() as u64;
        if !salvaged.is_empty() {
            kept.push(IndexPack {
                id,
                blobs: salvaged,
            });
        }
    }
    report.packs_indexed = kept.len() as u64;
    let new_index = repo.repo.write_index(kept)?;
    let mut old_files: Vec<String> = repo.index.files.iter().map(|i| i.to_hex()).collect();
    old_files.extend(repo.index.damaged.iter().map(|(n, _)| n.clone()));
    for name in old_files
        .iter()
        .filter(|n| !new_index.iter().any(|i| &i.to_hex() == *n))
    {
        repo.repo.backend.remove(FileKind::Index, name)?;
    }
    Ok(report)
}

/// True when the old index names this pack and every entry it has is in the header,
/// exactly: the header then says nothing the (authenticated) index did not.
fn agrees(old: Option<&Vec<PackBlob>>, header: &[PackBlob]) -> bool {
    let Some(old) = old.filter(|o| !o.is_empty()) else {
        return false;
    };
    let listed: HashMap<BlobId, &PackBlob> = header.iter().map(|b| (b.id, b)).collect();
    old.iter().all(|e| listed.get(&e.id) == Some(&e))
}

/// Keep the blobs of a pack that does not match its name which still verify and are in
/// no verified pack; returns them and the problem line describing the pack.
fn salvage(
    repo: &Repository,
    id: &PackId,
    why: &str,
    known: &[PackBlob],
    indexed: &mut HashSet<BlobId>,
) -> Result<(Vec<PackBlob>, String)> {
    let data = repo.backend.read(FileKind::Pack, &id.to_hex())?;
    let mut candidates: Vec<PackBlob> = pack::parse_pack(&repo.key, &data).unwrap_or_default();
    for k in known {
        if !candidates.contains(k) {
            candidates.push(*k);
        }
    }
    let (mut salvaged, mut elsewhere, mut lost) = (vec![], 0, 0);
    for b in candidates {
        if indexed.contains(&b.id) {
            elsewhere += 1;
            continue;
        }
        let range = b.offset as usize..b.offset as usize + b.length as usize;
        let opens = data
            .get(range)
            .is_some_and(|sealed| pack::open_blob(&repo.key, &b, sealed).is_ok());
        if opens {
            indexed.insert(b.id);
            salvaged.push(b);
        } else {
            lost += 1;
        }
    }
    let problem = if salvaged.is_empty() {
        format!(
            "pack {}: {why}; left out of the index ({elsewhere} of the blobs it lists are in other packs, {lost} do not open); `haven prune` deletes it",
            id.short()
        )
    } else {
        format!(
            "pack {}: {why}; its {} blob(s) that still verify stay indexed and restorable ({elsewhere} are in other packs, {lost} lost); run `haven check --read-data` to see which files are affected",
            id.short(),
            salvaged.len()
        )
    };
    Ok((salvaged, problem))
}
