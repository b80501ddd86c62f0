//! Trees: the encoded contents of one directory, stored as tree blobs.
//!
//! A [`Tree`] is a list of [`Node`]s sorted by name (raw bytes, so any file name a
//! file system allows round-trips). File nodes list their content blobs in order;
//! directory nodes name their subtree blob. Identical directories share one blob.
//!
//! Version 2 of the tree envelope adds each node's extended attributes ([`Xattr`]:
//! user, trusted and security attributes, POSIX ACLs as `system.posix_acl_*`, file
//! capabilities as `security.capability`). A tree none of whose nodes has any is still
//! written as version 1, so its id (and its dedup against older backups) is unchanged
//! and older builds read it; version 1 trees decode with empty attribute lists.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::codec::{self, ObjectKind};
use crate::id::BlobId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// Device number of character and block devices.
    pub rdev: u64,
    pub size: u64,
    pub content: Vec<BlobId>,
    pub subtree: Option<BlobId>,
    pub link_target: Vec<u8>,
    /// Extended attributes, sorted by name (tree version 2; empty in version 1).
    pub xattrs: Vec<Xattr>,
}

/// One extended attribute: its full name (`user.mime`, `system.posix_acl_access`, ...)
/// and its raw value as the kernel returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Xattr {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A node as tree version 1 encodes it: [`Node`] without `xattrs`.
#[derive(Deserialize, Serialize)]
struct NodeV1 {
    name: Vec<u8>,
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
    device: u64,
    links: u64,
    rdev: u64,
    size: u64,
    content: Vec<BlobId>,
    subtree: Option<BlobId>,
    link_target: Vec<u8>,
}

#[derive(Deserialize, Serialize)]
struct TreeV1 {
    nodes: Vec<NodeV1>,
}

impl From<NodeV1> for Node {
    fn from(n: NodeV1) -> Node {
        Node {
            name: n.name,
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
            inode: n.inode,
            device: n.device,
            links: n.links,
            rdev: n.rdev,
            size: n.size,
            content: n.content,
            subtree: n.subtree,
            link_target: n.link_target,
            xattrs: vec![],
        }
    }
}

impl From<&Node> for NodeV1 {
    fn from(n: &Node) -> NodeV1 {
        NodeV1 {
            name: n.name.clone(),
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
            inode: n.inode,
            device: n.device,
            links: n.links,
            rdev: n.rdev,
            size: n.size,
            content: n.content.clone(),
            subtree: n.subtree,
            link_target: n.link_target.clone(),
        }
    }
}

impl Node {
    pub fn from_metadata(name: Vec<u8>, m: &std::fs::Metadata) -> Node {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink
        } else if ft.is_char_device() {
            NodeKind::CharDevice
        } else if ft.is_block_device() {
            NodeKind::BlockDevice
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_socket() {
            NodeKind::Socket
        } else {
            NodeKind::File
        };
        Node {
            name,
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            inode: m.ino(),
            device: m.dev(),
            links: m.nlink(),
            rdev: m.rdev(),
            size: if kind == NodeKind::File { m.len() } else { 0 },
            content: vec![],
            subtree: None,
            link_target: vec![],
            xattrs: vec![],
        }
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The tree's envelope: version 1 when no node has extended attributes, else 2.
    pub fn encode(&self) -> Vec<u8> {
        if self.nodes.iter().all(|n| n.xattrs.is_empty()) {
            let v1 = TreeV1 {
                nodes: self.nodes.iter().map(NodeV1::from).collect(),
            };
            codec::encode_uncompressed_version(ObjectKind::Tree, 1, &v1)
        } else {
            codec::encode_uncompressed(ObjectKind::Tree, self)
        }
    }

    pub fn decode(data: &[u8]) -> Result<Tree, String> {
        if codec::version_of(data) == Some(1) {
            let v1: TreeV1 = codec::decode(ObjectKind::Tree, data)?;
            return Ok(Tree {
                nodes: v1.nodes.into_iter().map(Node::from).collect(),
            });
        }
        codec::decode(ObjectKind::Tree, data)
    }

    /// The node with this name (nodes are sorted by name).
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, xattrs: Vec<Xattr>) -> Node {
        let m = std::fs::symlink_metadata("/").unwrap();
        let mut n = Node::from_metadata(name.as_bytes().to_vec(), &m);
        n.xattrs = xattrs;
        n
    }

    #[test]
    fn trees_without_attributes_stay_version_1_and_others_round_trip_as_version_2() {
        let plain = Tree {
            nodes: vec![node("a", vec![]), node("b", vec![])],
        };
        let bytes = plain.encode();
        assert_eq!(codec::version_of(&bytes), Some(1));
        assert_eq!(Tree::decode(&bytes).unwrap(), plain);
        // Exactly what a build before version 2 wrote for the same tree.
        let v1 = TreeV1 {
            nodes: plain.nodes.iter().map(NodeV1::from).collect(),
        };
        let mut old = b"HTRE\x01\x00".to_vec();
        old.extend(postcard::to_stdvec(&v1).unwrap());
        assert_eq!(bytes, old);

        let attrs = vec![Xattr {
            name: b"user.note".to_vec(),
            value: b"kept".to_vec(),
        }];
        let rich = Tree {
            nodes: vec![node("a", attrs), node("b", vec![])],
        };
        let bytes = rich.encode();
        assert_eq!(codec::version_of(&bytes), Some(2));
        assert_eq!(Tree::decode(&bytes).unwrap(), rich);
    }
}
