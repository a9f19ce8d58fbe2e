//! Secrets: the redacting `Secret` type, the master key (an age X25519
//! identity) and sealing host key values for the repository.

mod master_key;
pub mod redact;
mod sealed;
mod secret;

pub use master_key::{create_private_dir, write_private_file, MasterKey, MASTER_KEY_FILE};
pub use redact::Redactor;
pub use sealed::{parse_recipient, seal, unseal, SealError};
pub use secret::Secret;
