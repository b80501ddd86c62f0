//! Keys and authenticated encryption.
//!
//! [`MasterKey`] holds the two secrets of a repository: the AES-256-GCM key that seals
//! every stored object and the BLAKE3 key that derives every id. Each sealed object is
//! `nonce (12) || ciphertext || tag (16)`; the associated data names the object's kind
//! and id, so a ciphertext moved to another name or kind fails to open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes added to every sealed object.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Fill an array from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the operating system's random source failed");
    b
}

/// The repository's master secret, unwrapped from a key slot.
#[derive(Clone)]
pub struct MasterKey {
    cipher: LessSafeKey,
    id_key: [u8; 32],
    raw: [u8; 64],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Opening failed: wrong key, or the bytes were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

impl MasterKey {
    pub fn generate() -> Self {
        Self::from_bytes(&random_bytes::<64>())
    }

    pub fn from_bytes(raw: &[u8; 64]) -> Self {
        let mut enc = [0u8; 32];
        let mut id_key = [0u8; 32];
        enc.copy_from_slice(&raw[..32]);
        id_key.copy_from_slice(&raw[32..]);
        MasterKey {
            cipher: cipher(&enc),
            id_key,
            raw: *raw,
        }
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        self.raw
    }

    /// Keyed BLAKE3 of `data`: the id of a blob or file. Reveals nothing without the key.
    pub fn id_of(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    /// A hasher for ids computed over data that arrives in pieces (pack files).
    pub fn id_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.id_key)
    }

    /// A secret derived for one purpose (for example the chunker's gear table).
    pub fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.id_key)
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, aad, plaintext)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        open_with(&self.cipher, aad, sealed)
    }

    /// Open without copying: the plaintext is decrypted where the ciphertext was and
    /// returned as a slice of `sealed` (restore and check own their read buffers).
    pub fn open_in_place<'a>(
        &self,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().expect("length checked");
        let plain = self
            .cipher
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), rest)
            .map_err(|_| OpenError)?;
        Ok(plain)
    }
}

/// Seal with a one-off key (key slots wrap the master key this way).
pub fn seal_with_key(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_with(&cipher(key), aad, plaintext)
}

pub fn open_with_key(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    open_with(&cipher(key), aad, sealed)
}

fn cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 keys are 32 bytes"))
}

fn seal_with(cipher: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .expect("AES-GCM sealing of an in-memory buffer cannot fail");
    out.extend_from_slice(tag.as_ref());
    out
}

fn open_with(cipher: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError);
    }
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().expect("length checked");
    let mut buf = sealed[NONCE_LEN..].to_vec();
    let plain_len = cipher
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| OpenError)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_objects_open_only_with_their_own_name() {
        let k = MasterKey::generate();
        let sealed = k.seal(b"snapshot/aa", b"hello");
        assert_eq!(k.open(b"snapshot/aa", &sealed).unwrap(), b"hello");
        assert!(
            k.open(b"snapshot/bb", &sealed).is_err(),
            "moved ciphertext must fail"
        );
        let mut flipped = sealed.clone();
        flipped[14] ^= 1;
        assert!(
            k.open(b"snapshot/aa", &flipped).is_err(),
            "a flipped bit must fail"
        );
        assert!(MasterKey::generate().open(b"snapshot/aa", &sealed).is_err());
    }

    #[test]
    fn ids_depend_on_the_key() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        assert_ne!(a.id_of(b"x"), b.id_of(b"x"));
        assert_eq!(
            a.id_of(b"x"),
            MasterKey::from_bytes(&a.to_bytes()).id_of(b"x")
        );
    }
}
