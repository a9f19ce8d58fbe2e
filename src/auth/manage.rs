//! Minting and listing relay keys, shared by the CLI and the admin API.

use rand::distributions::{Alphanumeric, DistString};

use super::key::{self, KeyHasher};
use crate::secrets::Secret;
use crate::store::{now_ms, KeyRow, NewKey, Store, StoreError};

/// A freshly minted key: its record and the plaintext, shown exactly once.
pub struct Minted {
    pub row: KeyRow,
    pub plaintext: Secret,
}

/// Creates a relay key for `policy`. `expires_in_ms` counts from now.
pub async fn mint(
    store: &Store,
    hasher: &KeyHasher,
    policy: &str,
    name: Option<String>,
    expires_in_ms: Option<i64>,
) -> Result<Minted, StoreError> {
    let plaintext = key::generate();
    let now = now_ms();
    let new = NewKey {
        id: format!(
            "key_{}",
            Alphanumeric.sample_string(&mut rand::rngs::OsRng, 16)
        ),
        prefix: key::display_prefix(plaintext.expose()).to_string(),
        hash: hasher.hash(plaintext.expose()).to_vec(),
        policy: policy.to_string(),
        name,
        created_at: now,
        expires_at: expires_in_ms.map(|ms| now.saturating_add(ms)),
    };
    store.insert_key(&new).await?;
    let row = KeyRow {
        id: new.id,
        prefix: new.prefix,
        hash: new.hash,
        policy: new.policy,
        name: new.name,
        enabled: true,
        created_at: new.created_at,
        last_used_at: None,
        expires_at: new.expires_at,
    };
    Ok(Minted { row, plaintext })
}

/// The key-hash secret for this database, for processes that mint keys
/// without a running key table (the CLI).
pub async fn hasher(store: &Store) -> Result<KeyHasher, StoreError> {
    Ok(KeyHasher::new(&store.key_pepper().await?))
}
