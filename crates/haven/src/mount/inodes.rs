//! Inode numbers of the mounted tree, and what each live inode stands for.
//!
//! A number is derived from what the entry is ([`Key`]): a hash of the parent's
//! number and the name, of the parent and the snapshot id for a snapshot's folder (so a
//! time name reused by another snapshot is another inode), or of the snapshot folder and
//! the recorded device and inode for hard-linked files (so hard links share one inode, as
//! they did where they were backed up). The same path therefore gets the same number
//! every time within a mount, without remembering every path ever listed: an
//! [`Entry`] lives in the [`Inodes`] table only while the kernel holds the inode (from
//! `lookup` until `forget`). Two keys hashing alike are told apart by probing the next
//! numbers.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use fuser::FileAttr;
use haven_repo::id::{BlobId, SnapshotId};
use haven_repo::tree::Xattr;

use super::listing::Group;

pub const ROOT: u64 = fuser::FUSE_ROOT_ID;

/// What an inode's number is derived from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Root,
    Child(u64, Box<[u8]>),
    Snapshot(u64, SnapshotId),
    HardLink { root: u64, device: u64, inode: u64 },
}

/// A folder made up by the mount (not part of a snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Virtual {
    Root,
    Ids,
    /// `snapshots/`, `hosts/<host>/`, `tags/<tag>/`.
    Times(Group),
    Hosts,
    Tags,
}

/// What an inode shows.
#[derive(Debug, Clone)]
pub enum What {
    Virtual(Virtual),
    /// The `latest` symlink of a group (its target is read from the listing each time).
    Latest(Group),
    /// A folder of a snapshot: its tree (none for an empty folder), and the number of the
    /// snapshot's own folder, which hard-link numbers are derived from.
    Dir {
        tree: Option<BlobId>,
        root: u64,
    },
    File {
        content: Arc<[BlobId]>,
    },
    Symlink(Box<[u8]>),
    /// Devices, FIFOs and sockets: metadata only.
    Other,
}

#[derive(Debug)]
pub struct Entry {
    pub key: Key,
    pub parent: u64,
    pub what: What,
    pub attr: FileAttr,
    pub xattrs: Box<[Xattr]>,
    lookups: u64,
}

impl Entry {
    pub fn new(key: Key, parent: u64, what: What, attr: FileAttr, xattrs: Vec<Xattr>) -> Entry {
        Entry {
            key,
            parent,
            what,
            attr,
            xattrs: xattrs.into(),
            lookups: 0,
        }
    }
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Inodes {
    live: HashMap<u64, Entry>,
}

fn hashed(key: &Key) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    // 0 is no inode, 1 the root.
    h.finish().max(ROOT + 1)
}

impl Inodes {
    pub fn new(root: Entry) -> Inodes {
        let mut live = HashMap::new();
        live.insert(ROOT, root);
        Inodes { live }
    }

    pub fn get(&self, ino: u64) -> Option<&Entry> {
        self.live.get(&ino)
    }

    /// The number for `key`: its live entry's, else the first free one from its hash.
    pub fn number(&self, key: &Key) -> u64 {
        if *key == Key::Root {
            return ROOT;
        }
        let mut ino = hashed(key);
        loop {
            match self.live.get(&ino) {
                Some(e) if &e.key != key => ino = ino.wrapping_add(1).max(ROOT + 1),
                _ => return ino,
            }
        }
    }

    /// Count one more kernel reference to the entry for `entry.key` (inserting it when
    /// not live); returns its number and its entry.
    pub fn looked_up(&mut self, entry: Entry) -> (u64, &Entry) {
        let ino = self.number(&entry.key);
        let e = self.live.entry(ino).or_insert(entry);
        e.lookups += 1;
        (ino, e)
    }

    /// The kernel dropped `n` references; the entry goes with the last.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(e) = self.live.get_mut(&ino) {
            e.lookups = e.lookups.saturating_sub(n);
            if e.lookups == 0 {
                self.live.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: Key) -> Entry {
        let attr = FileAttr {
            ino: 0,
            size: 0,
            blocks: 0,
            atime: std::time::UNIX_EPOCH,
            mtime: std::time::UNIX_EPOCH,
            ctime: std::time::UNIX_EPOCH,
            crtime: std::time::UNIX_EPOCH,
            kind: fuser::FileType::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        Entry::new(key, ROOT, What::Other, attr, vec![])
    }

    #[test]
    fn numbers_are_stable_while_live_and_again_after_forget() {
        let root = entry(Key::Root);
        let mut t = Inodes::new(root);
        let k = Key::Child(ROOT, b"ids".as_slice().into());
        let before = t.number(&k);
        let (ino, _) = t.looked_up(entry(k.clone()));
        assert_eq!(ino, before);
        assert_eq!(t.looked_up(entry(k.clone())).0, ino);
        t.forget(ino, 1);
        assert!(t.get(ino).is_some());
        t.forget(ino, 1);
        assert!(t.get(ino).is_none());
        assert_eq!(t.looked_up(entry(k)).0, ino);
        t.forget(ROOT, 10);
        assert!(t.get(ROOT).is_some());
    }

    #[test]
    fn a_colliding_key_gets_the_next_free_number() {
        let mut t = Inodes::new(entry(Key::Root));
        let a = Key::Child(ROOT, b"a".as_slice().into());
        let ino = t.looked_up(entry(a.clone())).0;
        // Plant another key at a's number, as a hash collision would.
        let b = Key::Child(ROOT, b"b".as_slice().into());
        let e = t.live.remove(&ino).unwrap();
        t.live.insert(
            ino,
            Entry {
                key: b.clone(),
                ..e
            },
        );
        assert_eq!(t.number(&a), ino + 1);
    }
}
