//! Dashboard passwords: argon2id hashing and verification, and the admin
//! password generated on a standalone first boot.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

use crate::secrets::{create_private_dir, write_private_file, Secret};

/// File in `RELAY_DATA_DIR` holding the generated admin password's hash.
pub const ADMIN_HASH_FILE: &str = "admin-password.argon2id";

/// Login name of the generated admin.
pub const GENERATED_ADMIN: &str = "admin";

/// An argon2id PHC string for `password` (OWASP parameters: 19 MiB, t=2, p=1).
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Why a `password_hash` in config cannot be used; `None` when it can.
pub fn check_phc(phc: &str) -> Option<String> {
    match PasswordHash::new(phc) {
        Err(e) => Some(format!("not a PHC string ({e})")),
        Ok(h) if h.algorithm.as_str() != "argon2id" => {
            Some(format!("algorithm is `{}`, not argon2id", h.algorithm))
        }
        Ok(h) if h.hash.is_none() => Some("the PHC string has no hash part".into()),
        Ok(_) => None,
    }
}

/// Whether `password` matches the PHC string; a malformed hash never matches.
/// CPU-heavy (tens of milliseconds): call it off the async workers.
pub fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Spends the time of one verification, so an unknown login name is not
/// told apart from a wrong password by timing.
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash("relay-timing-equaliser").unwrap_or_default());
    let _ = verify(&DUMMY, password);
}

/// A random 24-character alphanumeric password (~143 bits).
pub fn generate() -> Secret {
    use rand::distributions::{Alphanumeric, DistString};
    Secret::new(Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
}

pub fn admin_hash_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_HASH_FILE)
}

#[derive(Debug, thiserror::Error)]
pub enum FirstBootError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}; is RELAY_DATA_DIR writable?")]
    Write(PathBuf, std::io::Error),
    #[error("{0} is damaged ({1}); delete it and restart to generate a new admin password")]
    Corrupt(PathBuf, String),
    #[error("cannot hash the generated password: {0}")]
    Hash(String),
}

/// The generated admin's hash from the data dir, if a previous boot made one.
pub fn read_admin_hash(data_dir: &Path) -> Result<Option<Secret>, FirstBootError> {
    let path = admin_hash_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let phc = text.trim();
            match check_phc(phc) {
                Some(why) => Err(FirstBootError::Corrupt(path, why)),
                None => Ok(Some(Secret::new(phc))),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FirstBootError::Read(path, e)),
    }
}

/// Reads the generated admin's hash, or generates a password and stores
/// only its hash (mode 0600). The plaintext is returned only when it was
/// generated now: the caller prints it once.
pub fn load_or_generate_admin(data_dir: &Path) -> Result<(Secret, Option<Secret>), FirstBootError> {
    if let Some(hash) = read_admin_hash(data_dir)? {
        return Ok((hash, None));
    }
    let path = admin_hash_path(data_dir);
    let password = generate();
    let phc = hash(password.expose()).map_err(FirstBootError::Hash)?;
    create_private_dir(data_dir).map_err(|e| FirstBootError::Write(path.clone(), e))?;
    write_private_file(&path, format!("{phc}\n").as_bytes())
        .map_err(|e| FirstBootError::Write(path.clone(), e))?;
    Ok((Secret::new(phc), Some(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify(&a, "correct horse"));
        assert!(!verify(&a, "correct horsf"));
        assert!(!verify("not-a-hash", "correct horse"));
        assert_eq!(check_phc(&a), None);
    }

    #[test]
    fn config_hashes_are_checked() {
        assert!(check_phc("$argon2id$").is_some());
        let bcrypt_like = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcA";
        assert_eq!(
            check_phc(bcrypt_like).as_deref(),
            Some("algorithm is `argon2i`, not argon2id")
        );
    }

    #[test]
    fn admin_password_generated_once_and_only_its_hash_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (h1, pw) = load_or_generate_admin(&data).unwrap();
        let pw = pw.expect("first boot generates");
        assert_eq!(pw.expose().len(), 24);
        let stored = std::fs::read_to_string(admin_hash_path(&data)).unwrap();
        assert!(!stored.contains(pw.expose()));
        assert!(verify(stored.trim(), pw.expose()));
        let (h2, again) = load_or_generate_admin(&data).unwrap();
        assert!(again.is_none(), "later boots reuse it");
        assert_eq!(h1.expose(), h2.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(admin_hash_path(&data))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(admin_hash_path(&data), "garbage").unwrap();
        let err = load_or_generate_admin(&data).unwrap_err().to_string();
        assert!(err.contains("delete it and restart"), "{err}");
    }
}
