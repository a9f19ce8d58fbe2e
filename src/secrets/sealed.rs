//! Sealing host key values with age so they can live in git.

use std::str::FromStr;

use super::{MasterKey, Secret};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("`{0}` is not an age recipient (expected `age1…`); `relay keygen` prints one")]
    BadRecipient(String),
    #[error(
        "not a sealed value: expected an armored `-----BEGIN AGE ENCRYPTED FILE-----` block ({0})"
    )]
    Malformed(String),
    #[error(
        "the master key cannot decrypt this value; it was probably sealed for a different master key \
         (RELAY_MASTER_KEY changed since it was sealed): restore the original master key, or re-seal \
         the value with `relay secret encrypt`"
    )]
    WrongKey,
    #[error("sealed value is not UTF-8 text")]
    NotText,
    #[error("encryption failed: {0}")]
    Encrypt(String),
}

pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, SealError> {
    let t = text.trim();
    age::x25519::Recipient::from_str(t).map_err(|_| SealError::BadRecipient(t.to_string()))
}

/// Encrypts `plaintext` to `recipient` as an armored age file.
pub fn seal(recipient: &age::x25519::Recipient, plaintext: &str) -> Result<String, SealError> {
    age::encrypt_and_armor(recipient, plaintext.as_bytes())
        .map_err(|e| SealError::Encrypt(e.to_string()))
}

/// Decrypts an armored age file with the master key.
pub fn unseal(key: &MasterKey, armored: &str) -> Result<Secret, SealError> {
    let armored = armored.trim();
    if !armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----") {
        return Err(SealError::Malformed("missing BEGIN line".into()));
    }
    match age::decrypt(key.identity(), armored.as_bytes()) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| SealError::NotText)?;
            Ok(Secret::new(text))
        }
        Err(age::DecryptError::NoMatchingKeys) => Err(SealError::WrongKey),
        Err(e) => Err(SealError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let key = MasterKey::generate();
        let sealed = seal(&key.recipient(), "sk-test-value").unwrap();
        assert!(sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!sealed.contains("sk-test-value"));
        // YAML block scalars keep a trailing newline and callers may indent.
        let pasted = format!("{sealed}\n");
        assert_eq!(unseal(&key, &pasted).unwrap().expose(), "sk-test-value");
        let other = MasterKey::generate();
        assert!(matches!(unseal(&other, &sealed), Err(SealError::WrongKey)));
        assert!(matches!(
            unseal(&key, "sk-plain"),
            Err(SealError::Malformed(_))
        ));
        let broken = sealed.replace('A', "B");
        assert!(unseal(&key, &broken).is_err());
    }

    #[test]
    fn recipient_errors_say_what_to_do() {
        let err = parse_recipient("nope").unwrap_err().to_string();
        assert!(err.contains("relay keygen"), "{err}");
        let key = MasterKey::generate();
        assert!(parse_recipient(&key.recipient().to_string()).is_ok());
    }
}
