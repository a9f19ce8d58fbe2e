//! `relay serve`: wires config, planes and shutdown together.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::auth::KeyCache;
use crate::config::reload::LoadFailure;
use crate::config::{watch, ConfigHandle, Problem};
use crate::gateway::{usage, Gateway};
use crate::http::conn::{Plane, Slot};
use crate::http::{self, AppState};
use crate::lifecycle::Lifecycle;
use crate::secrets::{MasterKey, Secret};
use crate::state::StateBackend;
use crate::store::Store;
use crate::upstream::breaker::Breakers;

#[derive(Debug)]
pub struct ServeSettings {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub bind: IpAddr,
    /// Listen address of the control plane (defaults to `bind`).
    pub control_bind: IpAddr,
    pub port: u16,
    /// `None` disables the control plane.
    pub control_port: Option<u16>,
    pub master_key: Option<Secret>,
    pub admin_token: Option<Secret>,
    /// Bearer token for Prometheus: `/metrics` only.
    pub metrics_token: Option<Secret>,
    /// `Secure` on the session cookie; unset means on, except in embedded
    /// mode (no database URL), which is for plain-HTTP local use.
    pub cookie_secure: Option<bool>,
    /// Peers whose forwarded headers name the client (control plane).
    pub trusted_proxies: http::client_addr::TrustedProxies,
    /// `postgres://…`; unset means SQLite in `data_dir`.
    pub database_url: Option<Secret>,
    /// `redis://…`; unset means in-process state.
    pub state_url: Option<Secret>,
    /// After SIGTERM: how long `/readyz` says 503 while the listeners still
    /// serve, so load balancers stop sending before relay stops accepting.
    pub drain_delay: Duration,
    /// Then: how long in-flight requests get before relay stops anyway.
    pub shutdown_timeout: Duration,
    /// Usage records older than this are pruned; `None` keeps them.
    pub usage_retention: Option<Duration>,
    /// The access log: on/off and the sampled fraction of successes.
    pub access_log: crate::gateway::AccessLog,
    /// Timeouts and connection cap of the data plane.
    pub data_limits: http::conn::ConnLimits,
    /// Timeouts and connection cap of the control plane.
    pub control_limits: http::conn::ConnLimits,
    /// Bytes of request bodies the data plane holds at once.
    pub body_budget: usize,
    /// Store lookups per second of keys missing from the key table.
    pub key_lookup_rate: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config is invalid ({} error(s)); fix the problems above (`relay validate` shows the same list)", .0.iter().filter(|p| p.is_error()).count())]
    InvalidConfig(Vec<Problem>),
    #[error("{0}")]
    Config(String),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("dashboard credentials: {0}")]
    FirstBoot(#[from] crate::auth::password::FirstBootError),
    #[error("runtime store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("state backend: {0}")]
    State(#[from] crate::state::StateError),
    #[error("cannot listen on {addr}: {err}; is another process using the port? Set RELAY_PORT / RELAY_CONTROL_PORT")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The master key from `RELAY_MASTER_KEY`, or the data dir's (generated on
/// first boot).
pub fn master_key(settings: &ServeSettings) -> Result<MasterKey, ServeError> {
    if let Some(text) = &settings.master_key {
        return MasterKey::parse(text.expose(), "RELAY_MASTER_KEY")
            .map_err(|e| ServeError::MasterKey(e.to_string()));
    }
    let (key, created) = MasterKey::load_or_generate(&settings.data_dir)
        .map_err(|e| ServeError::MasterKey(e.to_string()))?;
    let path = MasterKey::file_path(&settings.data_dir);
    if created {
        tracing::warn!(
            path = %path.display(),
            recipient = %key.recipient(),
            "generated a new master key; it decrypts the sealed host keys, so keep it: back up the file, or set \
             RELAY_MASTER_KEY to its contents on every replica"
        );
    } else {
        tracing::info!(path = %path.display(), recipient = %key.recipient(), "using master key from the data directory");
    }
    Ok(key)
}

pub async fn run(settings: ServeSettings) -> Result<(), ServeError> {
    let master = Arc::new(master_key(&settings)?);
    let config_dir = settings.config_dir.clone();
    let handle = tokio::task::spawn_blocking(move || ConfigHandle::load(&config_dir, master))
        .await
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let handle = Arc::new(match handle {
        Ok(h) => h,
        Err(LoadFailure::Invalid(problems)) => return Err(ServeError::InvalidConfig(problems)),
        Err(e) => return Err(ServeError::Config(e.to_string())),
    });
    let snap = handle.snapshot();
    for w in &snap.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(revision = %snap.current_revision(), dir = %settings.config_dir.display(), "config loaded");
    let generated_admin = match settings.control_port {
        Some(_) => {
            http::session::first_boot(&settings.data_dir, settings.admin_token.as_ref(), &snap)?
        }
        None => None,
    };
    drop(snap);
    let cookie_secure = settings
        .cookie_secure
        .unwrap_or(settings.database_url.is_some());
    if !cookie_secure {
        tracing::info!("dashboard session cookie is not marked Secure (RELAY_COOKIE_SECURE=false or embedded mode); serve the control plane over TLS in production");
    }

    let store = Store::open_lazy(
        settings.database_url.as_ref().map(|u| u.expose()),
        &settings.data_dir,
    )
    .await?;
    let lifecycle = Arc::new(Lifecycle::new());
    let keys = Arc::new(KeyCache::unloaded(store.clone()));
    keys.set_lookup_rate(settings.key_lookup_rate);
    // Background writers stop only after the servers have drained, so
    // nothing in-flight loses its usage record.
    let background = CancellationToken::new();
    // A database that is down at start is waited for (see `connect_store`);
    // anything else wrong with it (a failed migration) still stops relay.
    let store_task = match connect_store(&store, &keys).await {
        Ok(()) => {
            lifecycle.store_reached();
            tracing::info!(backend = store.backend(), "runtime store ready");
            None
        }
        Err(e) if e.is_unreachable() && matches!(store, Store::Postgres(_)) => {
            tracing::error!(
                error = %e,
                "runtime database unreachable; serving /livez, /readyz (503) and /healthz meanwhile, and \
                 retrying in the background"
            );
            lifecycle.store_failed(format!("store: {e}"));
            Some(tokio::spawn(retry_store(
                store.clone(),
                keys.clone(),
                lifecycle.clone(),
                background.clone(),
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let state_backend = StateBackend::open(settings.state_url.as_ref().map(|u| u.expose())).await?;
    tracing::info!(backend = state_backend.name(), "state backend ready");
    let breakers = Breakers::new(state_backend);

    let shutdown = CancellationToken::new();
    // At the shutdown deadline: in-flight streams end with an error event.
    let cutoff = CancellationToken::new();
    // The data plane's runtimes outlive everything else: connections (to
    // the database, to Redis) opened from a request stay usable until the
    // end.
    let linger = CancellationToken::new();
    let refresher = keys.spawn_refresher(background.clone());
    let (usage, usage_writer) = usage::spawn_writer(store.clone(), background.clone());
    let reloader = watch::spawn(handle.clone(), shutdown.clone());
    let gateway = Arc::new(
        Gateway::new(handle.clone(), keys, breakers.clone(), usage)
            .with_access_log(settings.access_log)
            .with_cutoff(cutoff.clone()),
    );
    let budgets =
        gateway
            .budgets
            .clone()
            .spawn_refresher(store.clone(), handle.clone(), background.clone());
    let retention = settings.usage_retention.map(|keep| {
        crate::retention::spawn(store.clone(), handle.clone(), keep, background.clone())
    });
    // Lets `relay breakers …` on this machine in without RELAY_ADMIN_TOKEN.
    let local_token = match settings.control_port {
        Some(_) => match http::session::LocalToken::create(&settings.data_dir) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(dir = %settings.data_dir.display(), "cannot write the local control token ({e}); the CLI will need RELAY_ADMIN_TOKEN");
                None
            }
        },
        None => None,
    };
    let state = AppState {
        config: handle,
        reloader,
        auth: Arc::new(
            http::session::ControlAuth::new(settings.admin_token, cookie_secure, generated_admin)
                .with_trusted_proxies(settings.trusted_proxies)
                .with_local_token(local_token.as_ref().map(|t| t.secret())),
        ),
        gateway,
        store: store.clone(),
        breakers,
        lifecycle: lifecycle.clone(),
        metrics_token: settings.metrics_token.map(Arc::new),
        body_budget: Arc::new(http::body::BodyBudget::new(settings.body_budget)),
    };

    let data_addr = SocketAddr::new(settings.bind, settings.port);
    let data = bind(data_addr).await?;
    tracing::info!("data plane listening on http://{}", data.local_addr()?);
    let mut servers = tokio::task::JoinSet::new();
    http::conn::raise_nofile_limit();
    servers.spawn(serve_data(
        data,
        Plane::new(
            "data",
            "RELAY_MAX_CONNECTIONS",
            settings.data_limits,
            http::data::router(state.clone()),
        ),
        shutdown.clone(),
        linger.clone(),
    ));

    match settings.control_port {
        Some(port) => {
            let shutdown_control = shutdown.clone();
            let addr = SocketAddr::new(settings.control_bind, port);
            let control = bind(addr).await?;
            tracing::info!(
                "control plane listening on http://{}",
                control.local_addr()?
            );
            let plane = Plane::new(
                "control",
                "RELAY_CONTROL_MAX_CONNECTIONS",
                settings.control_limits,
                http::control::router(state.clone()),
            );
            servers.spawn(async move {
                http::conn::run(control, plane, shutdown_control).await;
                Ok(())
            });
        }
        None => tracing::info!("control plane disabled (RELAY_CONTROL_PORT=off)"),
    }

    let drain = tokio::spawn(drain_on_signal(
        lifecycle,
        settings.drain_delay,
        shutdown.clone(),
    ));

    let servers_done = async {
        let mut result = Ok(());
        while let Some(res) = servers.join_next().await {
            let failed = match res {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => ServeError::Io(e),
                Err(e) => ServeError::Config(format!("server task failed: {e}")),
            };
            shutdown.cancel();
            result = Err(failed);
        }
        result
    };
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(settings.shutdown_timeout).await;
    };
    let mut servers_done = std::pin::pin!(servers_done);
    let result = tokio::select! {
        r = &mut servers_done => r,
        () = deadline => {
            tracing::warn!(
                timeout = ?settings.shutdown_timeout,
                "in-flight requests did not finish within RELAY_SHUTDOWN_TIMEOUT; closing them"
            );
            // Streams send their protocol's error event and queue their
            // usage records; the connections then close. Whatever is still
            // running after a short grace is dropped.
            cutoff.cancel();
            tokio::time::timeout(CUTOFF_GRACE, &mut servers_done)
                .await
                .unwrap_or(Ok(()))
        }
    };
    drain.abort();
    drop(state);
    background.cancel();
    let _ = usage_writer.await;
    let _ = refresher.await;
    if let Some(t) = store_task {
        let _ = t.await;
    }
    let _ = budgets.await;
    if let Some(r) = retention {
        let _ = r.await;
    }
    store.close().await;
    drop(local_token);
    linger.cancel();
    tracing::info!("stopped");
    result
}

/// After the shutdown deadline: how long cut streams get to send their
/// final event (their usage is queued as they end, then written).
const CUTOFF_GRACE: Duration = Duration::from_secs(1);

/// Reaches the store (one fresh connection, so the error names the real
/// cause), applies migrations and loads the key table.
async fn connect_store(store: &Store, keys: &KeyCache) -> Result<(), crate::store::StoreError> {
    store.reach().await?;
    store.migrate().await?;
    keys.init().await
}

/// First retry after this long; doubled after each failure up to
/// `STORE_RETRY_MAX`.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Retries [`connect_store`] with backoff until it succeeds (the replica
/// turns ready) or relay stops. Each failure is kept for `/readyz`.
async fn retry_store(
    store: Store,
    keys: Arc<KeyCache>,
    lifecycle: Arc<Lifecycle>,
    stop: CancellationToken,
) {
    let mut wait = STORE_RETRY_FIRST;
    let mut last = String::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match connect_store(&store, &keys).await {
            Ok(()) => {
                lifecycle.store_reached();
                tracing::info!(
                    backend = store.backend(),
                    "runtime store reached; relay keys loaded, ready"
                );
                return;
            }
            Err(e) => {
                let text = format!("store: {e}");
                if text != last {
                    tracing::warn!(error = %e, retry_in = ?wait, "runtime database still unreachable");
                    last.clone_from(&text);
                }
                lifecycle.store_failed(text);
            }
        }
        wait = (wait * 2).min(STORE_RETRY_MAX);
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| ServeError::Bind { addr, err })
}

/// The data plane: one single-threaded runtime per core, each serving the
/// connections the acceptor hands it (round robin). A connection's request,
/// its upstream call and the upstream connection's task then run on one
/// thread, instead of waking each other across a work-stealing pool's
/// threads several times per request. Accepting, the connection cap and
/// the timeouts are `http::conn`'s.
async fn serve_data(
    listener: TcpListener,
    plane: Plane,
    shutdown: CancellationToken,
    linger: CancellationToken,
) -> std::io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = Vec::with_capacity(threads);
    let mut done = Vec::with_capacity(threads);
    for i in 0..threads {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr, Slot)>();
        let (plane, shutdown, linger) = (plane.clone(), shutdown.clone(), linger.clone());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("relay-data-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = done_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async {
                    // Until the acceptor stops (shutdown under way).
                    while let Some((std, peer, slot)) = rx.recv().await {
                        // Registered with this thread's runtime here.
                        match TcpStream::from_std(std) {
                            Ok(tcp) => plane.spawn(tcp, peer, slot, shutdown.clone()),
                            Err(e) => tracing::warn!(error = %e, "cannot take over a connection"),
                        }
                    }
                    plane.drained().await;
                });
                let _ = done_tx.send(Ok(()));
                rt.block_on(linger.cancelled());
            })?;
        workers.push(tx);
        done.push(done_rx);
    }
    let mut next = 0;
    http::conn::accept(&listener, &plane, &shutdown, |tcp, peer, slot| {
        if let Ok(std) = tcp.into_std() {
            let _ = workers[next].send((std, peer, slot));
            next = (next + 1) % workers.len();
        }
    })
    .await;
    drop(listener);
    drop(workers);
    let mut result = Ok(());
    for d in done {
        match d.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(std::io::Error::other("a data plane thread failed")),
        }
    }
    result
}

/// SIGTERM/SIGINT: turn unready at once, keep serving for `delay` (load
/// balancers notice the readiness change and stop sending), then stop
/// accepting. A second signal skips the rest of the delay.
async fn drain_on_signal(lifecycle: Arc<Lifecycle>, delay: Duration, shutdown: CancellationToken) {
    shutdown_signal().await;
    lifecycle.start_draining();
    tracing::info!(
        delay = ?delay,
        "draining: /readyz answers 503; still serving until the delay ends (RELAY_DRAIN_DELAY)"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shutdown_signal() => tracing::info!("second signal: stopping now"),
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    shutdown.cancel();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
