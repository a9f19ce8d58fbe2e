//! The master key: the age identity that decrypts sealed host keys.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use super::Secret;

/// File name of the generated master key inside `RELAY_DATA_DIR`.
pub const MASTER_KEY_FILE: &str = "master.key";

pub struct MasterKey(age::x25519::Identity);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.recipient())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("{source_name} is not an age identity (expected one line starting `AGE-SECRET-KEY-1`); generate one with `relay keygen`")]
    Invalid { source_name: String },
    #[error("cannot read master key {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("cannot write master key {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
}

impl MasterKey {
    pub fn generate() -> Self {
        MasterKey(age::x25519::Identity::generate())
    }

    /// Parses an identity from `RELAY_MASTER_KEY` or a key file (comment
    /// lines, as `age-keygen` writes them, are allowed).
    pub fn parse(text: &str, source_name: &str) -> Result<Self, MasterKeyError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default();
        age::x25519::Identity::from_str(line)
            .map(MasterKey)
            .map_err(|_| MasterKeyError::Invalid {
                source_name: source_name.to_string(),
            })
    }

    pub fn recipient(&self) -> age::x25519::Recipient {
        self.0.to_public()
    }

    pub(super) fn identity(&self) -> &age::x25519::Identity {
        &self.0
    }

    /// The identity line, for `relay keygen`.
    pub fn to_secret(&self) -> Secret {
        Secret::new(self.0.to_string().expose_secret())
    }

    /// The key file's text: the format `age-keygen` uses.
    fn file_text(&self) -> Secret {
        Secret::new(format!(
            "# relay master key: decrypts the host keys sealed in the config repository.\n\
             # Keep it stable across restarts and identical on every replica.\n\
             # public key: {}\n{}\n",
            self.recipient(),
            self.to_secret().expose()
        ))
    }

    pub fn file_path(data_dir: &Path) -> PathBuf {
        data_dir.join(MASTER_KEY_FILE)
    }

    /// Reads `DATA_DIR/master.key` if it exists.
    pub fn read(data_dir: &Path) -> Result<Option<Self>, MasterKeyError> {
        let path = Self::file_path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(MasterKeyError::Read { path, err }),
        }
    }

    /// Reads the data dir's key, or generates and persists one (mode 0600).
    /// Returns whether it was generated now.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Self, bool), MasterKeyError> {
        if let Some(key) = Self::read(data_dir)? {
            return Ok((key, false));
        }
        let path = Self::file_path(data_dir);
        let key = Self::generate();
        let werr = |err| MasterKeyError::Write {
            path: path.clone(),
            err,
        };
        create_private_dir(data_dir).map_err(werr)?;
        write_private_file(&path, key.file_text().expose().as_bytes()).map_err(werr)?;
        Ok((key, true))
    }
}

/// Creates `path` (which must not exist) readable by its owner only, and
/// syncs it: for generated credentials.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Creates the data directory readable by its owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (a, created) = MasterKey::load_or_generate(&data).unwrap();
        assert!(created);
        let (b, created) = MasterKey::load_or_generate(&data).unwrap();
        assert!(!created);
        assert_eq!(a.recipient().to_string(), b.recipient().to_string());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(MasterKey::file_path(&data))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn debug_shows_only_the_public_half() {
        let k = MasterKey::generate();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("age1"));
        assert!(!dbg.contains("AGE-SECRET-KEY"));
        let err = MasterKey::parse("garbage", "RELAY_MASTER_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RELAY_MASTER_KEY") && err.contains("relay keygen"),
            "{err}"
        );
        assert!(MasterKey::parse(k.to_secret().expose(), "x").is_ok());
    }
}
