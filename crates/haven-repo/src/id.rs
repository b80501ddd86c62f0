//! Typed 32-byte ids: one type per kind of object, so a pack id can never be used
//! where a blob id is expected. All are keyed BLAKE3 hashes or random (see FORMAT.md).

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// Parse a full 64-digit hex id.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut b = [0u8; 32];
                hex::decode_to_slice(s, &mut b).ok()?;
                Some(Self(b))
            }
            /// The first 8 hex digits, as shown to users.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        /// Hex in human-readable formats (JSON), 32 raw bytes in stored objects.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
                } else {
                    <[u8; 32]>::deserialize(d).map(Self)
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

id_type!(
    /// The id of a blob (a chunk of file data or an encoded tree): keyed hash of its plaintext.
    BlobId
);
id_type!(
    /// The id of a pack file: keyed hash of the whole pack as stored.
    PackId
);
id_type!(
    /// The id of a snapshot file: random, so it survives `copy` between repositories
    /// (older repositories hold keyed hashes of the plaintext; both read the same way).
    SnapshotId
);
id_type!(
    /// The id of an index file: keyed hash of its plaintext.
    IndexId
);
id_type!(
    /// The id of a key slot or lock file: random.
    FileId
);

impl FileId {
    pub fn random() -> Self {
        FileId(crate::crypto::random_bytes())
    }
}
