//! When to reload: filesystem events (debounced), SIGHUP and explicit
//! requests all feed one channel served by a single reload task, so reloads
//! never overlap and all take the same path. Watched: the config directory
//! (absolute, symlinks followed anew on every re-arm), its parent, the
//! directories of `file:` keys, and the git repository's HEAD and refs
//! (a HEAD move only re-checks the revision).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::reload::WatchTargets;
use super::revision::GitPaths;
use super::{ConfigHandle, ReloadOutcome};

/// How long the directory must be quiet before a reload: editors and
/// `git checkout` write several files in a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Request {
    /// Re-read the directory; swap even when the content is unchanged
    /// (SIGHUP, admin API) when `force`.
    Reload { force: bool },
    /// Only git HEAD moved: re-check the served revision, compile nothing.
    Revision,
}

struct ReloadRequest {
    kind: Request,
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
                kind: Request::Reload { force: true },
                reply: Some(tx),
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    fn nudge(&self, kind: Request) {
        // A full queue already holds a pending reload that will see this change.
        let _ = self.0.try_send(ReloadRequest { kind, reply: None });
    }
}

/// Starts the reload task, the filesystem watcher and the SIGHUP listener.
/// All of them stop when `shutdown` is cancelled.
pub fn spawn(handle: Arc<ConfigHandle>, shutdown: CancellationToken) -> Reloader {
    let (tx, mut rx) = mpsc::channel::<ReloadRequest>(4);
    let reloader = Reloader(tx);
    // After every reload the watcher re-arms: a new `file:` key may need a watch.
    let rearm = Arc::new(Notify::new());

    let stop = shutdown.clone();
    let task_handle = handle.clone();
    let task_rearm = rearm.clone();
    tokio::spawn(async move {
        let handle = task_handle;
        loop {
            let req = tokio::select! {
                _ = stop.cancelled() => break,
                req = rx.recv() => match req { Some(r) => r, None => break },
            };
            let h = handle.clone();
            let outcome = match req.kind {
                Request::Reload { force } => {
                    match tokio::task::spawn_blocking(move || h.reload(force)).await {
                        Ok(o) => Some(o),
                        Err(e) => {
                            tracing::error!(error = %e, "config reload panicked; still serving the last good config");
                            continue;
                        }
                    }
                }
                Request::Revision => {
                    if let Err(e) = tokio::task::spawn_blocking(move || h.recheck_revision()).await
                    {
                        tracing::warn!(error = %e, "config revision check panicked");
                    }
                    None
                }
            };
            task_rearm.notify_one();
            if let (Some(reply), Some(outcome)) = (req.reply, outcome) {
                let _ = reply.send(outcome);
            }
        }
    });

    spawn_fs_watcher(handle, reloader.clone(), rearm, shutdown.clone());
    spawn_sighup(reloader.clone(), shutdown);
    reloader
}

/// What an event is about.
#[derive(Default, Clone, Copy)]
struct Pending {
    config: bool,
    git: bool,
}

fn spawn_fs_watcher(
    handle: Arc<ConfigHandle>,
    reloader: Reloader,
    rearm: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let (tx, mut events) = mpsc::unbounded_channel::<Pending>();
    let targets = Arc::new(Mutex::new(handle.watch_targets()));
    let seen = targets.clone();
    let watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                let t = seen.lock().unwrap_or_else(|e| e.into_inner());
                let p = classify(&ev, &t);
                if p.config || p.git {
                    let _ = tx.send(p);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "config watcher error");
                let _ = tx.send(Pending {
                    config: true,
                    git: false,
                });
            }
        });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the config directory; reload with SIGHUP or the admin API");
            return;
        }
    };
    let mut armed = Vec::new();
    arm(&mut watcher, &targets, &handle, &mut armed, true);

    tokio::spawn(async move {
        loop {
            let mut pending = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = rearm.notified() => {
                    arm(&mut watcher, &targets, &handle, &mut armed, false);
                    continue;
                }
                ev = events.recv() => match ev { Some(p) => p, None => break },
            };
            // Debounce: wait until the directory has been quiet for a moment.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    ev = events.recv() => match ev {
                        Some(p) => {
                            pending.config |= p.config;
                            pending.git |= p.git;
                        }
                        None => return,
                    },
                }
            }
            // The directory may have been deleted and re-created, or be a
            // symlink that was swapped: watch whatever is there now (the
            // reload that follows reads whatever changed meanwhile).
            arm(&mut watcher, &targets, &handle, &mut armed, pending.config);
            // A reload re-checks the revision too.
            reloader.nudge(if pending.config {
                Request::Reload { force: false }
            } else {
                Request::Revision
            });
        }
    });
}

/// Whether an event may change what the directory loads (`config`) or
/// which commit it is at (`git`). Reads and opens are not changes:
/// reloading opens every file, and reacting to that would reload forever.
/// Events the parent watch reports about siblings of the directory are not
/// ours either.
fn classify(ev: &notify::Event, t: &WatchTargets) -> Pending {
    use notify::event::{EventKind, ModifyKind};
    let mut p = Pending::default();
    if matches!(
        ev.kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
    ) {
        return p;
    }
    if ev.paths.is_empty() {
        p.config = true;
        return p;
    }
    for path in &ev.paths {
        if let Some(git) = &t.git {
            if path.starts_with(&git.git_dir) || path.starts_with(&git.common_dir) {
                p.git |= is_head_move(path, git);
                continue;
            }
        }
        if path.starts_with(&t.dir) {
            p.config = true;
        }
        // A key file, or its directory's entries (a Kubernetes Secret mount
        // swaps a `..data` symlink next to the file).
        // Or a directory on the way to a key file that does not exist yet.
        if t.key_files
            .iter()
            .any(|k| k.starts_with(path) || k.parent().is_some_and(|d| path.parent() == Some(d)))
        {
            p.config = true;
        }
    }
    p
}

/// HEAD, packed-refs or a ref: what a commit, checkout or fetch rewrites.
fn is_head_move(path: &Path, git: &GitPaths) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = name.strip_suffix(".lock").unwrap_or(name);
    let top = |base: &Path| path.parent() == Some(base);
    ((name == "HEAD") && top(&git.git_dir))
        || (name == "packed-refs" && top(&git.common_dir))
        || path.starts_with(git.common_dir.join("refs"))
}

/// Watches the directory recursively and its parent non-recursively, so that
/// deleting, re-creating or re-pointing the directory itself is seen too;
/// every key file's directory (or its nearest existing ancestor, so a file
/// that appears later is seen); the git directory for HEAD moves.
///
/// `full` drops and re-adds the directory's watches: inotify resolves a
/// symlink when a watch is added, so re-adding follows a swapped `current`
/// link. Only do it right before a reload: a change made while the watch is
/// away is then still read by that reload. Otherwise (after a reload, on a
/// HEAD move) only watches that are missing are added and stale ones removed.
fn arm(
    watcher: &mut RecommendedWatcher,
    targets: &Mutex<WatchTargets>,
    handle: &ConfigHandle,
    armed: &mut Vec<(PathBuf, RecursiveMode)>,
    full: bool,
) {
    let t = handle.watch_targets();
    let mut want: Vec<(PathBuf, RecursiveMode)> = vec![(t.dir.clone(), RecursiveMode::Recursive)];
    if let Some(parent) = t.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        want.push((parent.to_path_buf(), RecursiveMode::NonRecursive));
    }
    for k in &t.key_files {
        if let Some(d) = k.ancestors().skip(1).find(|a| a.is_dir()) {
            let d = d.canonicalize().unwrap_or_else(|_| d.to_path_buf());
            want.push((d, RecursiveMode::NonRecursive));
        }
    }
    if let Some(git) = &t.git {
        want.push((git.git_dir.clone(), RecursiveMode::NonRecursive));
        want.push((git.common_dir.clone(), RecursiveMode::NonRecursive));
        want.push((git.common_dir.join("refs"), RecursiveMode::Recursive));
    }
    want.dedup();
    // notify drops every watch under a recursive one it removes: re-add
    // those too.
    let redo = |p: &Path| full && (p.starts_with(&t.dir) || Some(p) == t.dir.parent());
    armed.retain(|(p, m)| {
        let keep = want.contains(&(p.clone(), *m)) && !redo(p);
        if !keep {
            let _ = watcher.unwatch(p);
        }
        keep
    });
    for (p, m) in want {
        if armed.iter().any(|(a, _)| *a == p) {
            continue;
        }
        match watcher.watch(&p, m) {
            Ok(()) => armed.push((p, m)),
            Err(e) => tracing::debug!(error = %e, path = %p.display(), "not watchable yet"),
        }
    }
    *targets.lock().unwrap_or_else(|e| e.into_inner()) = t;
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
