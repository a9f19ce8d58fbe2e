//! Publishing snapshots: build a new one (may fail), then swap (cannot fail).
//!
//! Readers call [`ConfigHandle::snapshot`] once per request and keep the
//! `Arc` to the end, so in-flight requests finish on the snapshot they
//! started with. A rejected reload never replaces the current snapshot; it is
//! recorded in [`ReloadStatus`] for the control plane.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::{load_dir, ConfigError, Problem, Revision, SecretMode, Snapshot};
use crate::secrets::MasterKey;

/// Why a directory could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    #[error(transparent)]
    Dir(#[from] ConfigError),
    #[error("config has {} error(s)", .0.iter().filter(|p| p.is_error()).count())]
    Invalid(Vec<Problem>),
}

impl LoadFailure {
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            LoadFailure::Dir(e) => vec![Problem {
                severity: super::Severity::Error,
                file: PathBuf::from("."),
                line: 0,
                column: 0,
                kind: None,
                name: None,
                field: None,
                message: e.to_string(),
            }],
            LoadFailure::Invalid(p) => p.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// A new snapshot is live.
    Applied { revision: Revision },
    /// The directory's content equals the live snapshot's; nothing swapped.
    Unchanged { revision: Revision },
    /// The change was invalid; the previous snapshot keeps serving.
    Rejected {
        revision: Option<Revision>,
        problems: Vec<Problem>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedReload {
    pub at: String,
    pub revision: Option<Revision>,
    pub problems: Vec<Problem>,
}

/// What the control plane shows about configuration loading.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub revision: Revision,
    pub loaded_at: String,
    pub config_dir: PathBuf,
    pub objects: super::snapshot::ObjectCounts,
    /// Warnings of the live snapshot.
    pub warnings: Vec<Problem>,
    pub reloads_applied: u64,
    pub reloads_failed: u64,
    /// Watcher-triggered reloads that found the content already served.
    pub reloads_unchanged: u64,
    /// True when the most recent attempt was rejected and the directory still
    /// differs from what is served.
    pub last_attempt_failed: bool,
    pub last_failed_reload: Option<FailedReload>,
}

/// Paths whose changes matter to the served config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTargets {
    pub dir: PathBuf,
    pub key_files: Vec<PathBuf>,
    pub git: Option<super::revision::GitPaths>,
}

pub struct ConfigHandle {
    current: ArcSwap<Snapshot>,
    status: Mutex<ReloadStatus>,
    dir: PathBuf,
    master_key: Arc<MasterKey>,
}

impl ConfigHandle {
    /// First load at startup: an invalid directory is an error the caller
    /// reports exactly as `relay validate` would.
    pub fn load(dir: &Path, master_key: Arc<MasterKey>) -> Result<Self, LoadFailure> {
        // Absolute once, symlinks left alone: the watcher compares notify's
        // absolute paths with it, and a symlinked directory (git-sync's
        // `current`) must be followed to wherever it points next.
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let dir = dir.as_path();
        let loaded = load_dir(dir, SecretMode::Decrypt(&master_key))?;
        let Some(snapshot) = loaded.snapshot else {
            return Err(LoadFailure::Invalid(loaded.problems));
        };
        let status = ReloadStatus {
            revision: snapshot.revision.clone(),
            loaded_at: timestamp(snapshot.loaded_at),
            config_dir: dir.to_path_buf(),
            objects: snapshot.counts(),
            warnings: snapshot.warnings.clone(),
            reloads_applied: 0,
            reloads_failed: 0,
            reloads_unchanged: 0,
            last_attempt_failed: false,
            last_failed_reload: None,
        };
        Ok(ConfigHandle {
            current: ArcSwap::from_pointee(snapshot),
            status: Mutex::new(status),
            dir: dir.to_path_buf(),
            master_key,
        })
    }

    /// The live snapshot. Lock-free; hold the `Arc` for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The revision being served (content hash, commit, `-dirty`).
    pub fn revision(&self) -> Arc<Revision> {
        self.current.load().current_revision()
    }

    /// What the watcher must watch besides the directory: the live
    /// snapshot's key files and the enclosing git repository.
    pub fn watch_targets(&self) -> WatchTargets {
        WatchTargets {
            dir: self.dir.clone(),
            key_files: self
                .current
                .load()
                .key_files()
                .iter()
                .map(|k| watch_path(k))
                .collect(),
            git: super::revision::git_paths(&self.dir),
        }
    }

    /// HEAD may have moved (a commit, a checkout): re-checks the served
    /// files against the repository without re-reading or compiling the
    /// config. Blocking (reads the repository).
    pub fn recheck_revision(&self) -> bool {
        let snap = self.current.load_full();
        let git = super::revision::git_state(&self.dir, &snap.files);
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let revision = status.revision.with_git(git);
        if revision == status.revision {
            return false;
        }
        tracing::info!(%revision, previous = %status.revision, "config revision changed (git HEAD moved)");
        snap.set_revision(revision.clone());
        status.revision = revision;
        true
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the directory. Blocking (file I/O, decryption): call it from
    /// a blocking thread. `force` swaps even when the content is unchanged.
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let attempt = load_dir(&self.dir, SecretMode::Decrypt(&self.master_key));
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let (revision, problems) = match attempt {
            Ok(loaded) => match loaded.snapshot {
                Some(snapshot) => {
                    let revision = snapshot.revision.clone();
                    status.last_attempt_failed = false;
                    let same = revision.same_content(&status.revision)
                        && snapshot.keys_digest() == self.current.load().keys_digest();
                    if !force && same {
                        tracing::debug!(%revision, "config directory unchanged");
                        status.reloads_unchanged += 1;
                        if revision != status.revision {
                            tracing::info!(%revision, previous = %status.revision, "config revision changed");
                            self.current.load().set_revision(revision.clone());
                            status.revision = revision.clone();
                        }
                        return ReloadOutcome::Unchanged { revision };
                    }
                    status.revision = revision.clone();
                    status.loaded_at = timestamp(snapshot.loaded_at);
                    status.objects = snapshot.counts();
                    status.warnings = snapshot.warnings.clone();
                    status.reloads_applied += 1;
                    let old = self.current.swap(Arc::new(snapshot));
                    retire(old);
                    tracing::info!(%revision, "config reloaded");
                    return ReloadOutcome::Applied { revision };
                }
                None => (Some(loaded.revision), loaded.problems),
            },
            Err(e) => (None, LoadFailure::Dir(e).problems()),
        };
        // The same broken content seen again (e.g. a second watcher event)
        // is not a new failure.
        let repeat = status.last_attempt_failed
            && status
                .last_failed_reload
                .as_ref()
                .is_some_and(|f| f.revision == revision && revision.is_some());
        if !repeat {
            status.reloads_failed += 1;
            let errors = problems.iter().filter(|p| p.is_error()).count();
            tracing::warn!(
                revision = revision.as_ref().map(|r| r.to_string()),
                errors,
                serving = %status.revision,
                "config reload rejected; still serving the last good config"
            );
            for p in problems.iter().filter(|p| p.is_error()) {
                tracing::warn!("  {p}");
            }
        }
        status.last_attempt_failed = true;
        status.last_failed_reload = Some(FailedReload {
            at: timestamp(SystemTime::now()),
            revision: revision.clone(),
            problems: problems.clone(),
        });
        ReloadOutcome::Rejected { revision, problems }
    }
}

/// A key file's path as the watcher sees it: its directory resolved (so
/// `config/../secrets/key` and symlinked mounts compare equal to event
/// paths), or lexically normalised while the directory does not exist.
fn watch_path(k: &Path) -> PathBuf {
    if let (Some(dir), Some(name)) = (k.parent(), k.file_name()) {
        if let Ok(dir) = dir.canonicalize() {
            return dir.join(name);
        }
    }
    let mut out = PathBuf::new();
    for c in k.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Frees a replaced snapshot off the request path. Dropping a large snapshot
/// takes milliseconds; without this, whichever request happened to hold the
/// last reference would pay for it.
fn retire(old: Arc<Snapshot>) {
    let spawned = std::thread::Builder::new()
        .name("relay-retire".into())
        .spawn(move || {
            // In-flight requests (streams included) finish on the old snapshot;
            // wait for them, but not forever.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "could not spawn the snapshot retire thread; dropping inline");
    }
}

pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
