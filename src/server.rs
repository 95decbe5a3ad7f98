//! `otpd serve`: start the runtime, seed apps, run the HTTP server, shut down cleanly.
//!
//! Order matters at both ends. At start-up the runtime (storage, recovery) is up
//! before the socket is bound, so the first request finds a ready runtime. At
//! shutdown the HTTP server stops first — no new connections, in-flight requests
//! finish within `server.shutdown_timeout_secs` — and only then is the runtime shut
//! down, which commits everything queued. actix-web's own signal handling is off
//! because it would stop the server without giving us that second step.

use crate::stdout::print_stdout;
use std::net::SocketAddr;

use actix_web::dev::{ServerHandle, Service as _};
use actix_web::{App, HttpServer};
use otpd_actors::{NewApp, Runtime};

use crate::api::{self, ApiOptions};
use crate::config::{Config, ConfigError};

/// Why the server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime refused to start (storage, pepper, provider).
    #[error("starting the runtime: {0}")]
    Runtime(#[source] otpd_actors::Error),
    /// An `[[apps]]` entry could not be applied to the database.
    #[error("[[apps]] entry {app_key:?}: {source}")]
    App {
        /// The entry's `app_key`.
        app_key: String,
        /// What the runtime said.
        #[source]
        source: otpd_actors::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `server.listen`.
        addr: SocketAddr,
        /// The OS error (address in use, permission denied …).
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure of the HTTP server.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

impl ServerError {
    /// The process exit code: 2 for a configuration problem, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Config(_)
            | ServerError::Runtime(otpd_actors::Error::Validation(_))
            | ServerError::App {
                source: otpd_actors::Error::Validation(_) | otpd_actors::Error::Conflict(_),
                ..
            } => 2,
            _ => 1,
        }
    }
}

/// A server running inside the current actix `System`: its bound address, the
/// runtime behind it, and the handle that stops it.
pub struct RunningServer {
    /// The address actually bound (the real port when `listen` used port 0).
    pub addr: SocketAddr,
    /// The runtime the API drives; embedders and tests may call it directly.
    pub runtime: Runtime,
    /// Stops the HTTP server (see [`RunningServer::stop`] for the full shutdown).
    pub handle: ServerHandle,
    /// The HTTP server's task; ends when the server has stopped.
    task: actix_rt::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (`graceful`, bounded by
    /// `server.shutdown_timeout_secs`), then shuts the runtime down, which commits
    /// everything queued.
    pub async fn stop(self, graceful: bool) -> Result<(), ServerError> {
        self.handle.stop(graceful).await;
        let served = self.task.await;
        self.runtime.shutdown().await;
        tracing::info!("otpd stopped");
        match served {
            Ok(result) => result.map_err(ServerError::Io),
            Err(e) => Err(ServerError::Io(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Starts the runtime, applies `[[apps]]`, creates a development app when there
/// is no app at all (after the bind succeeded), binds the HTTP server and prints `otpd listening on http://ADDR`.
/// Must run inside an actix `System`.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let listen = config.listen_addr()?;
    warn_url_policy_exceptions(&config);
    let runtime = Runtime::builder(config.runtime_config())
        .start()
        .await
        .map_err(ServerError::Runtime)?;
    match bind(&config, listen, runtime.clone()).await {
        Ok(running) => Ok(running),
        Err(e) => {
            runtime.shutdown().await;
            Err(e)
        }
    }
}

/// Warns once at start-up for each exception opened in the callback URL policy
/// (SPEC section 6): plain `http` URLs and allowed private address ranges are meant
/// for tests and private deployments, never for an internet-facing instance.
fn warn_url_policy_exceptions(config: &Config) {
    if config.callbacks.allow_http {
        tracing::warn!(
            "callbacks.allow_http = true: callback, webhook and delivery-report URLs may use plain http (unencrypted, unauthenticated receivers)"
        );
    }
    if !config.callbacks.allowed_cidrs.is_empty() {
        let cidrs: Vec<String> = config
            .callbacks
            .allowed_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::warn!(
            allowed_cidrs = %cidrs.join(", "),
            "callbacks.allowed_cidrs is set: callback, webhook and delivery-report URLs may reach these non-public address ranges"
        );
    }
}

async fn bind(
    config: &Config,
    listen: SocketAddr,
    runtime: Runtime,
) -> Result<RunningServer, ServerError> {
    for entry in config.app_entries() {
        let app_key = entry.app_key.clone().unwrap_or_default();
        runtime
            .upsert_app(entry)
            .await
            .map_err(|source| ServerError::App { app_key, source })?;
    }
    let options = ApiOptions {
        admin_token: config.server.admin_token.clone(),
        trusted_proxies: config.server.trusted_proxies.clone(),
        metrics: crate::api::metrics::install_recorder(),
    };
    let workers = config.server.worker_threads();
    let batch_scheduling = config.server.batch_scheduling;
    let factory_runtime = runtime.clone();
    let server = HttpServer::new(move || {
        // Runs on each worker thread as it starts.
        prepare_worker_thread(batch_scheduling);
        let runtime = factory_runtime.clone();
        let options = options.clone();
        App::new()
            .wrap_fn(|req, srv| {
                // Before routing and authentication: an oversized header block is
                // a 431 envelope on every route.
                let checked = api::check_header_size(req.headers());
                let call = checked.is_ok().then(|| srv.call(req));
                async move {
                    checked?;
                    match call {
                        Some(call) => call.await,
                        None => Err(api::ApiError::Internal("header check".into()).into()),
                    }
                }
            })
            .configure(move |cfg| api::configure(cfg, runtime, options))
    })
    .workers(workers)
    .shutdown_timeout(config.server.shutdown_timeout_secs)
    .disable_signals()
    .bind(listen)
    .map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    // Only once the port is ours: a failed bind must not print (and waste) the
    // development app's one-time key. Nothing is served before `run()` below.
    if config.apps.is_empty() && runtime.apps().is_empty() {
        create_development_app(&runtime).await?;
    }
    let addr = server.addrs().first().copied().unwrap_or(listen);
    let server = server.run();
    let handle = server.handle();
    let task = actix_rt::spawn(server);

    tracing::info!(
        %addr,
        provider = ?runtime.config().provider.kind,
        apps = runtime.apps().len(),
        workers,
        batch_scheduling = config.server.batch_scheduling,
        "otpd listening"
    );
    print_stdout(&format!("otpd listening on http://{addr}\n"));
    Ok(RunningServer {
        addr,
        runtime,
        handle,
        task,
    })
}

/// Prepares the calling HTTP worker thread as `otpd serve` runs its workers: with
/// `batch_scheduling` (`server.batch_scheduling`, on by default) it switches the
/// thread to Linux's `SCHED_BATCH` policy, as the storage writer runs.
///
/// `SCHED_BATCH` removes only wake-up preemption: the thread keeps its fair share
/// and its nice value, and starts at once on an idle CPU. A worker woken (by a
/// request, by the writer's answer to a commit) while its CPU is busy waits for its
/// turn instead of preempting, and by then has more to do in one go: more
/// requests per `epoll` wake-up, and more writes queued for the writer before it
/// commits, so commits grow (from ~12.5 to ~17 operations over HTTP on two cores) and
/// every thread wakes less. On a host whose CPUs are saturated a request may wait
/// up to a scheduler slice longer. `docs/benchmarks-passes.md` ("Eighteenth
/// pass") has the figures.
///
/// Call it from the `HttpServer` app factory, which actix runs on each worker
/// thread as the worker starts (an application embedding otpd can do the same in
/// its own factory). Each thread is switched once; where the system refuses (a
/// seccomp filter) the workers keep the default policy, which is only slower under
/// load, and that is logged once (INFO), as the writer does.
pub fn prepare_worker_thread(batch_scheduling: bool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    thread_local! {
        static PREPARED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    static REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);
    if !batch_scheduling || PREPARED.with(|p| p.replace(true)) {
        return;
    }
    if let Err(e) = otpd_sched::prefer_batching() {
        if !REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::info!(error = %e, "the HTTP workers keep the default scheduling policy: SCHED_BATCH was refused");
        }
    }
}

/// With no app anywhere, a fresh install would answer every call with 401; a
/// development app makes `otpd serve` usable at once. Its key goes to stdout, not
/// the log, because it is shown exactly once.
async fn create_development_app(runtime: &Runtime) -> Result<(), ServerError> {
    let created = runtime
        .create_app(NewApp {
            name: "Development".into(),
            app_key: Some("dev".into()),
            ..NewApp::default()
        })
        .await
        .map_err(|source| ServerError::App {
            app_key: "dev".into(),
            source,
        })?;
    tracing::warn!(
        app_key = %created.app.app_key,
        "no apps configured: created a development app (its API key is printed once on stdout)"
    );
    print_stdout(&format!(
        "No [[apps]] are configured and the database has none: created a development app.\n\
         Its API key is shown ONCE — copy it now (another app with its own key: `otpd apps create`).\n  \
         app_key: {}\n  \
         api_key: {}\n",
        created.app.app_key, created.api_key
    ));
    Ok(())
}

/// Runs otpd until SIGTERM or SIGINT, then shuts down gracefully (SPEC section 8):
/// stop accepting, finish in-flight requests, flush storage. A second signal
/// during the graceful stop abandons the wait for in-flight requests.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    let mut running = start(config).await?;
    let mut signals = Signals::new()?;
    tokio::select! {
        name = signals.next() => {
            tracing::info!(signal = name, "stopping: no new connections, finishing in-flight requests");
        }
        ended = &mut running.task => {
            // The server stopped on its own (an accept loop failure): still flush.
            running.runtime.shutdown().await;
            return match ended {
                Ok(result) => result.map_err(ServerError::Io),
                Err(e) => Err(ServerError::Io(std::io::Error::other(e.to_string()))),
            };
        }
    }
    let handle = running.handle.clone();
    actix_rt::spawn(async move {
        let name = signals.next().await;
        tracing::warn!(signal = name, "second signal: dropping in-flight requests");
        handle.stop(false).await;
    });
    running.stop(true).await
}

/// SIGTERM and SIGINT (Ctrl-C) as one stream.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Waits for the next signal and names it.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
