//! Optional authentication and encryption: AES-256-GCM with a per-session key.
//!
//! The pre-shared key is never used directly. Each session gets its own key,
//! HKDF-SHA256(salt = [`HKDF_SALT`], ikm = psk, info = [`HKDF_INFO`] ‖ session id big-endian),
//! so the nonce, which is built from the datagram sequence number and therefore restarts at 0
//! in every session, is never used twice under one key.

use ring::aead::{self, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::hkdf;

use crate::wire::TAG_LEN;

pub const HKDF_SALT: &[u8] = b"dd-gateway wire v1";
pub const HKDF_INFO: &[u8] = b"session key";

/// A pre-shared key as configured.
pub type Psk = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthError;

/// The AEAD key of one session.
#[derive(Clone)]
pub struct SessionKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    pub fn derive(psk: &Psk, session: u64) -> Result<SessionKey, AuthError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(psk);
        let session = session.to_be_bytes();
        let info = [HKDF_INFO, &session];
        let okm = prk
            .expand(&info, &aead::AES_256_GCM)
            .map_err(|_| AuthError)?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Ok(SessionKey { key })
    }

    /// Encrypts `payload` in place, authenticating `header` with it; returns the tag.
    pub fn seal(
        &self,
        seq: u64,
        header: &[u8],
        payload: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AuthError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(seq), Aad::from(header), payload)
            .map_err(|_| AuthError)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `payload` in place if `tag` authenticates it and `header`. On failure the
    /// contents of `payload` are unspecified and must not be used.
    pub fn open(
        &self,
        seq: u64,
        header: &[u8],
        payload: &mut [u8],
        tag: &[u8],
    ) -> Result<(), AuthError> {
        let tag = Tag::try_from(tag).map_err(|_| AuthError)?;
        self.key
            .open_in_place_separate_tag(nonce(seq), Aad::from(header), tag, payload, 0..)
            .map(|_| ())
            .map_err(|_| AuthError)
    }
}

/// 96-bit nonce: four zero bytes, then the datagram sequence number big-endian.
fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSK: Psk = [7; 32];

    #[test]
    fn seal_open_round_trip() {
        let key = SessionKey::derive(&PSK, 42).unwrap();
        let mut p = *b"plant data";
        let tag = key.seal(5, b"hdr", &mut p).unwrap();
        assert_ne!(&p, b"plant data");
        key.open(5, b"hdr", &mut p, &tag).unwrap();
        assert_eq!(&p, b"plant data");
    }

    #[test]
    fn wrong_seq_header_session_or_tag_fails() {
        let key = SessionKey::derive(&PSK, 42).unwrap();
        let mut sealed = *b"plant data";
        let tag = key.seal(5, b"hdr", &mut sealed).unwrap();
        let attempt = |k: &SessionKey, seq, hdr: &[u8], tag: &[u8]| {
            let mut p = sealed;
            k.open(seq, hdr, &mut p, tag)
        };
        assert!(attempt(&key, 6, b"hdr", &tag).is_err());
        assert!(attempt(&key, 5, b"hdR", &tag).is_err());
        let other = SessionKey::derive(&PSK, 43).unwrap();
        assert!(attempt(&other, 5, b"hdr", &tag).is_err());
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(attempt(&key, 5, b"hdr", &bad).is_err());
        assert!(attempt(&key, 5, b"hdr", &tag[..15]).is_err());
        assert!(attempt(&key, 5, b"hdr", &tag).is_ok());
    }

    #[test]
    fn sessions_get_different_keys() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        let ta = SessionKey::derive(&PSK, 1)
            .unwrap()
            .seal(0, b"", &mut a)
            .unwrap();
        let tb = SessionKey::derive(&PSK, 2)
            .unwrap()
            .seal(0, b"", &mut b)
            .unwrap();
        assert_ne!(a, b);
        assert_ne!(ta, tb);
    }
}
