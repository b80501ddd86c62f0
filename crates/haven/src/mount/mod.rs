//! The repository as a read-only FUSE filesystem (`haven mount`).
//!
//! ```text
//! MOUNTPOINT/ids/<short id>/...           every snapshot by id
//!            snapshots/<time>/...          by time (UTC), and `latest` -> the newest
//!            hosts/<host>/<time>/, latest  by the host that made them
//!            tags/<tag>/<time>/, latest    by tag
//! ```
//!
//! Data flow: the kernel asks [`HavenFs`] (fuser's session loop, one thread) by inode
//! number; [`inodes::Inodes`] says what a live number stands for; the top folders come
//! from [`listing::Listing`] (the snapshots, listed again every few seconds); a folder
//! of a snapshot is its decoded tree, kept in a bounded [`cache::Lru`]; a read of an
//! open file ([`files::OpenFile`]) fetches only the content blobs that cover the range,
//! through a second bounded LRU of decoded blobs. Memory is the index, the live inodes
//! and the two caches' budgets ([`Budget`]), whatever the size of the files read.
//!
//! Nothing here writes: the mount is read-only (`MountOption::RO`), `open` for writing
//! answers `EROFS`, and permissions are the recorded ones, checked by the kernel
//! (`default_permissions`).

mod cache;
mod files;
mod inodes;
mod listing;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyXattr, Request,
};
use haven_repo::id::BlobId;
use haven_repo::read::ReadView;
use haven_repo::snapshot::SnapshotEntry;
use haven_repo::tree::{Node, NodeKind, Tree};
use haven_repo::walk;

use cache::Lru;
use files::{OpenFile, ReadError};
use inodes::{Entry, Inodes, Key, Virtual, What, ROOT};
use listing::{Group, Listing};

/// How long the kernel may keep what a snapshot holds (it never changes).
const TTL_SNAPSHOT: Duration = Duration::from_secs(3600);
/// How long it may keep the top folders and the snapshot folders in them (snapshots
/// come and go).
const TTL_TOP: Duration = Duration::from_secs(1);

/// Bytes of decoded data blobs and of decoded trees kept in memory.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub blobs: usize,
    pub trees: usize,
}

/// One line of an open folder.
struct DirItem {
    ino: u64,
    kind: FileType,
    name: Vec<u8>,
}

/// See the module doc.
pub struct HavenFs {
    listing: Listing,
    inodes: Inodes,
    trees: Lru<BlobId, Arc<Tree>>,
    blobs: Lru<BlobId, Arc<Vec<u8>>>,
    files: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, Vec<DirItem>>,
    next_handle: u64,
    /// Files open right now, for the command (it waits for them after an unmount).
    open_files: Arc<AtomicUsize>,
    /// Owner of the made-up folders: whoever mounted.
    owner: (u32, u32),
    started: SystemTime,
}

impl HavenFs {
    pub fn new(view: ReadView, budget: Budget, open_files: Arc<AtomicUsize>) -> HavenFs {
        let owner = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let started = SystemTime::now();
        let mut attr = folder_attr(started, owner);
        attr.ino = ROOT;
        let root = Entry::new(Key::Root, ROOT, What::Virtual(Virtual::Root), attr, vec![]);
        HavenFs {
            listing: Listing::new(view),
            inodes: Inodes::new(root),
            trees: Lru::new(budget.trees),
            blobs: Lru::new(budget.blobs),
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_handle: 1,
            open_files,
            owner,
            started,
        }
    }

    fn handle(&mut self) -> u64 {
        self.next_handle += 1;
        self.next_handle
    }

    /// A decoded tree, from the cache or the repository (an error is reported here and
    /// becomes `EIO`).
    fn tree(&mut self, id: &BlobId) -> Result<Arc<Tree>, i32> {
        if let Some(t) = self.trees.get(id) {
            return Ok(t);
        }
        match walk::load_tree(&self.listing.repo, id) {
            Ok(tree) => {
                let size = tree
                    .nodes
                    .iter()
                    .map(|n| 128 + n.name.len() + n.content.len() * 32 + n.link_target.len())
                    .sum();
                let tree = Arc::new(tree);
                self.trees.insert(*id, tree.clone(), size);
                Ok(tree)
            }
            Err(e) => {
                eprintln!("haven: error: {e}; run `haven check`");
                Err(libc::EIO)
            }
        }
    }

    fn virtual_folder(&self, parent: u64, name: &[u8], v: Virtual) -> Entry {
        Entry::new(
            Key::Child(parent, name.into()),
            parent,
            What::Virtual(v),
            folder_attr(self.started, self.owner),
            vec![],
        )
    }

    fn snapshot_folder(&self, parent: u64, s: &SnapshotEntry) -> Entry {
        let key = Key::Snapshot(parent, s.id);
        let root = self.inodes.number(&key);
        let mut attr = folder_attr(s.snapshot.time.into(), self.owner);
        attr.ino = root;
        Entry::new(
            key,
            parent,
            What::Dir {
                tree: Some(s.snapshot.tree),
                root,
            },
            attr,
            vec![],
        )
    }

    fn latest_link(&self, parent: u64, group: Group) -> Option<Entry> {
        let (target, newest) = self.listing.by_time(&group).pop()?;
        let newest = newest.snapshot.time;
        let mut attr = folder_attr(newest.into(), self.owner);
        attr.kind = FileType::Symlink;
        attr.perm = 0o777;
        attr.nlink = 1;
        attr.size = target.len() as u64;
        Some(Entry::new(
            Key::Child(parent, b"latest".as_slice().into()),
            parent,
            What::Latest(group),
            attr,
            vec![],
        ))
    }

    /// Every child of folder `ino`, with the entry each would become.
    fn children(&mut self, ino: u64) -> Result<Vec<(Vec<u8>, Entry)>, i32> {
        let what = self.inodes.get(ino).ok_or(libc::ENOENT)?.what.clone();
        let folder = |fs: &Self, name: &str, v: Virtual| {
            (
                name.as_bytes().to_vec(),
                fs.virtual_folder(ino, name.as_bytes(), v),
            )
        };
        Ok(match what {
            What::Virtual(Virtual::Root) => vec![
                folder(self, "hosts", Virtual::Hosts),
                folder(self, "ids", Virtual::Ids),
                folder(self, "snapshots", Virtual::Times(Group::All)),
                folder(self, "tags", Virtual::Tags),
            ],
            What::Virtual(Virtual::Ids) => {
                self.listing.refresh();
                let named: Vec<(String, SnapshotEntry)> = self
                    .listing
                    .by_id()
                    .into_iter()
                    .map(|(n, s)| (n, s.clone()))
                    .collect();
                named
                    .iter()
                    .map(|(n, s)| (n.as_bytes().to_vec(), self.snapshot_folder(ino, s)))
                    .collect()
            }
            What::Virtual(Virtual::Times(group)) => {
                self.listing.refresh();
                let named: Vec<(String, SnapshotEntry)> = self
                    .listing
                    .by_time(&group)
                    .into_iter()
                    .map(|(n, s)| (n, s.clone()))
                    .collect();
                let mut out: Vec<_> = named
                    .iter()
                    .map(|(n, s)| (n.as_bytes().to_vec(), self.snapshot_folder(ino, s)))
                    .collect();
                out.extend(
                    self.latest_link(ino, group)
                        .map(|e| (b"latest".to_vec(), e)),
                );
                out
            }
            What::Virtual(Virtual::Hosts) => {
                self.listing.refresh();
                self.listing
                    .hosts()
                    .iter()
                    .map(|h| folder(self, h, Virtual::Times(Group::Host(h.clone()))))
                    .collect()
            }
            What::Virtual(Virtual::Tags) => {
                self.listing.refresh();
                self.listing
                    .tags()
                    .iter()
                    .map(|t| folder(self, t, Virtual::Times(Group::Tag(t.clone()))))
                    .collect()
            }
            What::Dir {
                tree: Some(id),
                root,
            } => {
                let tree = self.tree(&id)?;
                tree.nodes
                    .iter()
                    .map(|n| (n.name.clone(), node_entry(ino, root, n)))
                    .collect()
            }
            What::Dir { tree: None, .. } => vec![],
            _ => return Err(libc::ENOTDIR),
        })
    }

    /// The child `name` of folder `parent`, if there is one.
    fn child(&mut self, parent: u64, name: &[u8]) -> Result<Option<Entry>, i32> {
        let what = self.inodes.get(parent).ok_or(libc::ENOENT)?.what.clone();
        if let What::Dir {
            tree: Some(id),
            root,
        } = what
        {
            // A snapshot's folder: one search in its tree, not an entry for every child.
            let tree = self.tree(&id)?;
            return Ok(tree.find(name).map(|n| node_entry(parent, root, n)));
        }
        Ok(self
            .children(parent)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e))
    }

    /// Make `entry` live (one more kernel reference) and return its attributes.
    fn make_live(&mut self, mut entry: Entry) -> FileAttr {
        entry.attr.ino = self.inodes.number(&entry.key);
        self.inodes.looked_up(entry).1.attr
    }

    /// Read `size` bytes at `offset` of open file `fh`.
    fn read_at(&mut self, fh: u64, offset: u64, size: usize) -> Result<Vec<u8>, ReadError> {
        let HavenFs {
            files,
            blobs,
            listing,
            ..
        } = self;
        let Some(file) = files.get(&fh) else {
            return Ok(vec![]);
        };
        file.read(offset, size, &mut |id| {
            if let Some(b) = blobs.get(id) {
                return Ok(b);
            }
            let data = Arc::new(
                listing
                    .repo
                    .read_blob(id)
                    .map_err(|e| ReadError::Repo(*id, e))?,
            );
            blobs.insert(*id, data.clone(), data.len());
            Ok(data)
        })
    }
}

/// How long the kernel may cache what `entry` says.
fn ttl(ino: u64, entry: &Entry) -> Duration {
    match entry.what {
        What::Virtual(_) | What::Latest(_) => TTL_TOP,
        What::Dir { root, .. } if root == ino => TTL_TOP,
        _ => TTL_SNAPSHOT,
    }
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// A made-up folder: read and list for everyone, owned by whoever mounted.
fn folder_attr(at: SystemTime, (uid, gid): (u32, u32)) -> FileAttr {
    FileAttr {
        ino: 0,
        size: 0,
        blocks: 0,
        atime: at,
        mtime: at,
        ctime: at,
        crtime: at,
        kind: FileType::Directory,
        perm: 0o555,
        nlink: 2,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The entry for `node`, a child of folder `parent` in the snapshot whose folder is
/// `root`.
fn node_entry(parent: u64, root: u64, node: &Node) -> Entry {
    let kind = match node.kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
    };
    let size = match node.kind {
        NodeKind::File => node.size,
        NodeKind::Symlink => node.link_target.len() as u64,
        _ => 0,
    };
    let attr = FileAttr {
        ino: 0,
        size,
        blocks: size.div_ceil(512),
        atime: time(node.mtime_ns),
        mtime: time(node.mtime_ns),
        ctime: time(node.ctime_ns),
        crtime: time(node.mtime_ns),
        kind,
        perm: (node.mode & 0o7777) as u16,
        nlink: match node.kind {
            NodeKind::Dir => 2,
            _ => node.links.clamp(1, u64::from(u32::MAX)) as u32,
        },
        uid: node.uid,
        gid: node.gid,
        rdev: node.rdev as u32,
        blksize: 4096,
        flags: 0,
    };
    let key = if node.kind == NodeKind::File && node.links > 1 {
        Key::HardLink {
            root,
            device: node.device,
            inode: node.inode,
        }
    } else {
        Key::Child(parent, node.name.as_slice().into())
    };
    let what = match node.kind {
        NodeKind::Dir => What::Dir {
            tree: node.subtree,
            root,
        },
        NodeKind::File => What::File {
            content: node.content.as_slice().into(),
        },
        NodeKind::Symlink => What::Symlink(node.link_target.as_slice().into()),
        _ => What::Other,
    };
    Entry::new(key, parent, what, attr, node.xattrs.clone())
}

/// Answer an extended-attribute request: the length when `size` is 0, else the bytes
/// if they fit.
fn reply_sized(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(libc::ERANGE);
    } else {
        reply.data(bytes);
    }
}

impl Filesystem for HavenFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name.as_bytes()) {
            Ok(Some(entry)) => {
                let attr = self.make_live(entry);
                let ttl = self
                    .inodes
                    .get(attr.ino)
                    .map_or(TTL_TOP, |e| ttl(attr.ino, e));
                reply.entry(&ttl, &attr, 0);
            }
            Ok(None) => reply.error(libc::ENOENT),
            Err(errno) => reply.error(errno),
        }
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        self.inodes.forget(ino, nlookup);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.inodes.get(ino) {
            Some(e) => reply.attr(&ttl(ino, e), &e.attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let Some(what) = self.inodes.get(ino).map(|e| e.what.clone()) else {
            return reply.error(libc::ENOENT);
        };
        match what {
            What::Symlink(target) => reply.data(&target),
            What::Latest(group) => {
                self.listing.refresh();
                match self.listing.latest(&group) {
                    Some(name) => reply.data(name.as_bytes()),
                    None => reply.error(libc::ENOENT),
                }
            }
            _ => reply.error(libc::EINVAL),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        let content = match self.inodes.get(ino).map(|e| &e.what) {
            Some(What::File { content }) => content.clone(),
            Some(What::Virtual(_) | What::Dir { .. }) => return reply.error(libc::EISDIR),
            Some(_) => return reply.error(libc::EACCES),
            None => return reply.error(libc::ENOENT),
        };
        match OpenFile::new(content, &self.listing.repo.index) {
            Ok(file) => {
                let fh = self.handle();
                self.files.insert(fh, file);
                self.open_files.fetch_add(1, Ordering::SeqCst);
                // Contents never change: the kernel may keep its cached pages.
                reply.opened(fh, fuser::consts::FOPEN_KEEP_CACHE);
            }
            Err(e) => {
                eprintln!("haven: error: {e}");
                reply.error(libc::EIO);
            }
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match self.read_at(fh, offset.max(0) as u64, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                eprintln!("haven: error: {e}");
                reply.error(libc::EIO);
            }
        }
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if self.files.remove(&fh).is_some() {
            self.open_files.fetch_sub(1, Ordering::SeqCst);
        }
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let children = match self.children(ino) {
            Ok(c) => c,
            Err(errno) => return reply.error(errno),
        };
        let parent = self.inodes.get(ino).map_or(ROOT, |e| e.parent);
        let mut items = vec![
            DirItem {
                ino,
                kind: FileType::Directory,
                name: b".".to_vec(),
            },
            DirItem {
                ino: parent,
                kind: FileType::Directory,
                name: b"..".to_vec(),
            },
        ];
        items.extend(children.into_iter().map(|(name, e)| DirItem {
            ino: self.inodes.number(&e.key),
            kind: e.attr.kind,
            name,
        }));
        let fh = self.handle();
        self.dirs.insert(fh, items);
        reply.opened(fh, 0);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(items) = self.dirs.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        for (i, item) in items.iter().enumerate().skip(offset.max(0) as usize) {
            // The offset of an item is where the next readdir continues.
            if reply.add(
                item.ino,
                i as i64 + 1,
                item.kind,
                OsStr::from_bytes(&item.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.dirs.remove(&fh);
        reply.ok();
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let Some(entry) = self.inodes.get(ino) else {
            return reply.error(libc::ENOENT);
        };
        match entry.xattrs.iter().find(|x| x.name == name.as_bytes()) {
            Some(x) => reply_sized(reply, size, &x.value),
            None => reply.error(libc::ENODATA),
        }
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let Some(entry) = self.inodes.get(ino) else {
            return reply.error(libc::ENOENT);
        };
        let mut names = vec![];
        for x in entry.xattrs.iter() {
            names.extend_from_slice(&x.name);
            names.push(0);
        }
        reply_sized(reply, size, &names);
    }
}
