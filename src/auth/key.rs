//! The relay key format: `rk_` + 43 random base62 characters (256 bits) + a
//! 6-character base62 CRC-32 of them. The checksum rejects typos and
//! truncations without a lookup, and the fixed shape lets secret scanners
//! recognise leaked keys.

use hmac::{Hmac, Mac};
use rand::distributions::{Alphanumeric, DistString};
use sha2::Sha256;

use crate::secrets::Secret;

pub const PREFIX: &str = "rk_";
const BODY_LEN: usize = 43;
const CHECK_LEN: usize = 6;
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN + CHECK_LEN;
/// Characters of the plaintext shown in listings.
pub const DISPLAY_PREFIX_LEN: usize = 12;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new random relay key.
pub fn generate() -> Secret {
    let body = Alphanumeric.sample_string(&mut rand::rngs::OsRng, BODY_LEN);
    let check = checksum(&body);
    Secret::new(format!("{PREFIX}{body}{check}"))
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes()) as u64;
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    // 62^6 > 2^32, so the whole CRC fits.
    out.iter().map(|&b| b as char).collect()
}

/// Whether `s` has the shape and checksum of a relay key.
pub fn is_well_formed(s: &str) -> bool {
    if s.len() != KEY_LEN
        || !s.starts_with(PREFIX)
        || !s
            .bytes()
            .skip(PREFIX.len())
            .all(|b| b.is_ascii_alphanumeric())
    {
        return false;
    }
    let (body, check) = s[PREFIX.len()..].split_at(BODY_LEN);
    checksum(body) == check
}

pub fn display_prefix(plaintext: &str) -> &str {
    &plaintext[..plaintext.len().min(DISPLAY_PREFIX_LEN)]
}

/// Keyed hash of relay keys for storage and lookup. Relay keys are 256-bit
/// random tokens, so a fast keyed hash is the right tool (a password hash
/// would only slow every request down).
#[derive(Clone)]
pub struct KeyHasher(Hmac<Sha256>);

impl KeyHasher {
    pub fn new(pepper: &[u8]) -> KeyHasher {
        // HMAC accepts keys of any length.
        #[allow(clippy::expect_used)]
        KeyHasher(Hmac::new_from_slice(pepper).expect("HMAC takes any key length"))
    }

    pub fn hash(&self, plaintext: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(plaintext.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(is_well_formed(a.expose()), "{}", a.expose());
        assert_eq!(display_prefix(a.expose()).len(), 12);
    }

    #[test]
    fn typos_fail_the_checksum() {
        let k = generate();
        let k = k.expose();
        // Change one body character.
        let mut typo = k.as_bytes().to_vec();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(std::str::from_utf8(&typo).unwrap()));
        assert!(!is_well_formed(&k[..k.len() - 1]));
        assert!(!is_well_formed(&format!("sk_{}", &k[3..])));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&format!("{}é", &k[..k.len() - 2])));
    }

    #[test]
    fn hashes_depend_on_the_pepper() {
        let k = generate();
        let a = KeyHasher::new(b"one").hash(k.expose());
        assert_eq!(a, KeyHasher::new(b"one").hash(k.expose()));
        assert_ne!(a, KeyHasher::new(b"two").hash(k.expose()));
    }
}
