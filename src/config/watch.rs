//! When to reload: filesystem events (debounced), SIGHUP and explicit
//! requests all feed one channel served by a single reload task, so reloads
//! never overlap and all take the same path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ConfigHandle, ReloadOutcome};

/// How long the directory must be quiet before a reload: editors and
/// `git checkout` write several files in a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

struct ReloadRequest {
    /// Swap even when the content is unchanged (SIGHUP, admin API).
    force: bool,
    reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// Sends reload requests to the reload task.
#[derive(Clone)]
pub struct Reloader(mpsc::Sender<ReloadRequest>);

impl Reloader {
    /// Reloads now and waits for the outcome; `None` during shutdown.
    pub async fn reload(&self) -> Option<ReloadOutcome> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(ReloadRequest {
                force: true,
                reply: Some(tx),
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    fn nudge(&self) {
        // A full queue already holds a pending reload that will see this change.
        let _ = self.0.try_send(ReloadRequest {
            force: false,
            reply: None,
        });
    }
}

/// Starts the reload task, the filesystem watcher and the SIGHUP listener.
/// All of them stop when `shutdown` is cancelled.
pub fn spawn(handle: Arc<ConfigHandle>, shutdown: CancellationToken) -> Reloader {
    let (tx, mut rx) = mpsc::channel::<ReloadRequest>(4);
    let reloader = Reloader(tx);
    let dir = handle.dir().to_path_buf();

    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let req = tokio::select! {
                _ = stop.cancelled() => break,
                req = rx.recv() => match req { Some(r) => r, None => break },
            };
            let h = handle.clone();
            let outcome = match tokio::task::spawn_blocking(move || h.reload(req.force)).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, "config reload panicked; still serving the last good config");
                    continue;
                }
            };
            if let Some(reply) = req.reply {
                let _ = reply.send(outcome);
            }
        }
    });

    spawn_fs_watcher(dir, reloader.clone(), shutdown.clone());
    spawn_sighup(reloader.clone(), shutdown);
    reloader
}

fn spawn_fs_watcher(dir: PathBuf, reloader: Reloader, shutdown: CancellationToken) {
    let (tx, mut events) = mpsc::unbounded_channel::<()>();
    let watched = dir.clone();
    let watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if is_change(&ev, &watched) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "config watcher error");
                let _ = tx.send(());
            }
        });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the config directory; reload with SIGHUP or the admin API");
            return;
        }
    };
    arm(&mut watcher, &dir);

    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = events.recv() => if ev.is_none() { break },
            }
            // Debounce: wait until the directory has been quiet for a moment.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    ev = events.recv() => if ev.is_none() { return },
                }
            }
            // The directory may have been deleted and re-created, or be a
            // symlink that was swapped: watch whatever is there now.
            arm(&mut watcher, &dir);
            reloader.nudge();
        }
    });
}

/// Whether an event may change what the directory loads. Reads and opens
/// are not changes: reloading opens every file, and reacting to that would
/// reload forever. Events the parent watch reports about siblings of the
/// directory are not ours either.
fn is_change(ev: &notify::Event, dir: &Path) -> bool {
    use notify::event::{EventKind, ModifyKind};
    let kind = !matches!(
        ev.kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
    );
    kind && (ev.paths.is_empty() || ev.paths.iter().any(|p| p.starts_with(dir)))
}

/// Watches the directory recursively and its parent non-recursively, so that
/// deleting, re-creating or re-pointing the directory itself is seen too.
fn arm(watcher: &mut RecommendedWatcher, dir: &Path) {
    let _ = watcher.unwatch(dir);
    if let Err(e) = watcher.watch(dir, RecursiveMode::Recursive) {
        tracing::debug!(error = %e, dir = %dir.display(), "config directory not watchable yet");
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = watcher.watch(parent, RecursiveMode::NonRecursive);
    }
}

#[cfg(unix)]
fn spawn_sighup(reloader: Reloader, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                s = hup.recv() => if s.is_none() { break },
            }
            tracing::info!("SIGHUP: reloading config");
            let _ = reloader.reload().await;
        }
    });
}

#[cfg(not(unix))]
fn spawn_sighup(_: Reloader, _: CancellationToken) {}
