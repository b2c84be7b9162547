#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! lb: a layer-7 HTTP load balancer whose topology lives in `lb.toml`.
//!
//! # Layout
//!
//! The data plane (accept → route → pick → forward) and the control plane (file, watcher,
//! health checker, gRPC) meet at one place: an `ArcSwap<Topology>` that the control plane stores
//! and the data plane loads once per request.
//!
//! - [`config`]: lb.toml — model, parsing with line:col, text edits, atomic writes.
//! - [`routing`]: Go `ServeMux` patterns → pool index; pure.
//! - [`topology`]: the immutable snapshot and the per-backend live state it shares.
//! - [`idle_connections`]: a backend's idle keep-alive connections, below `topology` and `proxy`.
//! - [`balance`]: power-of-two-choices over a pool's healthy backends.
//! - [`canary`]: a pool's stable/canary split, per-side window statistics and their verdict.
//! - [`health`]: active checks; the only writer of health (besides passive ejection).
//! - [`proxy`]: the HTTP server, the request sequence, the upstream client, draining.
//! - [`apply`]: the single path from file text to running topology; serialises writers.
//! - [`rollout`]: a rollout's view and its next move (the controller is `control`'s).
//! - [`control`]: the gRPC control API (`rollout.lb.LoadBalancer`); mutates only via `apply`.
//! - [`stats`]: the per-backend request and check counters, a leaf that `topology` holds.
//! - [`metrics`]: the process-wide counters and the Prometheus rendering of all of them.
//! - [`access_log`]: one line per request, formatted straight into the log thread's buffer.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/status.json` and the dashboard.
//! - [`git`]: runs the `git` binary (no prompt, a deadline) for `history` and `sync`.
//! - [`history`]: opt-in git commits of control-API changes.
//! - [`sync`]: `[sync]`, a fleet sharing one git remote: fetch, fast-forward, push changes.
//! - [`watch`]: notices file changes and asks `apply` to reload.
//! - [`watched`]: which directories and names to watch so a path's changes are seen.
//! - [`log_writer`]: the background thread that writes log lines in batches.
//! - [`lbctl`]: the CLI's pure helpers (argv, tables); the binary is `src/bin/lbctl.rs`.
//! - [`pem`]: reading PEM certificate and key files, errors naming the file.
//! - [`tls`]: the data plane's certificates (SNI, reload) and rustls settings, server and backend.
//! - [`demo`]: `lb demo`, a balancer in front of two in-process sample backends.
//! - [`errors`]: an error and its causes as one line.

pub mod access_log;
pub mod admin;
pub mod apply;
pub mod balance;
pub mod canary;
pub mod config;
pub mod control;
pub mod demo;
pub mod errors;
pub mod git;
pub mod health;
pub mod history;
pub mod idle_connections;
pub mod lbctl;
pub mod log_writer;
pub mod metrics;
pub mod pem;
pub mod proxy;
pub mod rate_limit;
pub mod rollout;
pub mod routing;
pub mod stats;
pub mod sync;
pub mod tls;
pub mod topology;
pub mod watch;
pub mod watched;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, Startup};
use crate::proxy::{Proxy, ServerSettings};

/// How to start; flags override the file's `[listen]` table.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The config file (lb.toml).
    pub config: PathBuf,
    /// Overrides `[listen] http`.
    pub http: Option<SocketAddr>,
    /// Overrides `[listen] grpc`.
    pub grpc: Option<SocketAddr>,
    /// Overrides `[listen] admin`.
    pub admin: Option<SocketAddr>,
    /// Serve the control API on a non-loopback address without a token, knowingly.
    pub insecure_control: bool,
    /// This instance's name in a fleet (a rollout's `driver`); `None`: the machine's hostname,
    /// else the admin listener's address, else the control listener's.
    pub instance: Option<String>,
    /// Where the access log goes (off by default; the binary sets it from `[log]`).
    pub access_log: access_log::AccessLog,
}

/// Why lb could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// A listener cannot be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener, e.g. `http`, `https`, `grpc` or `admin`.
        what: &'static str,
        /// The address it was to bind.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The config file cannot be watched for changes.
    #[error(transparent)]
    Watch(#[from] watch::Error),
    /// The control token file cannot be used.
    #[error(transparent)]
    Token(#[from] control::TokenError),
    /// The control listener's TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] control::TlsError),
    /// The `[tls]` certificates could not be loaded.
    #[error(transparent)]
    Certificates(#[from] tls::Error),
    /// The `[tls]` certificate files could not be watched.
    #[error(transparent)]
    CertificateWatch(#[from] tls::WatchError),
    /// `[sync]` cannot work with the directory holding lb.toml.
    #[error(transparent)]
    Sync(#[from] sync::Error),
    /// The control API would be open to the network without authentication.
    #[error("refusing to serve the control API on non-loopback {addr} without a token: anyone who can reach it could change the topology. Set [control] token_file = \"/etc/lb/token\" in the config (a file holding a long random secret), or require client certificates with [control] tls_cert, tls_key and client_ca, or pass --insecure-control to accept the risk knowingly")]
    InsecureControl {
        /// The control listener's address.
        addr: SocketAddr,
    },
}

/// A loaded config and bound listeners, ready to [`run`](Lb::run).
pub struct Lb {
    applier: Arc<Applier>,
    startup: Startup,
    http: TcpListener,
    https: Vec<TcpListener>,
    grpc: TcpListener,
    admin: Option<TcpListener>,
    token: Option<control::Token>,
    tls: Option<control::ServerTls>,
    /// The `[tls]` certificates, checked at start and reloaded by `tls::watch`.
    certificates: Option<Arc<tls::Store>>,
    access_log: access_log::AccessLog,
    /// `[sync]`: the git remote this instance follows and pushes its changes to.
    sync: Option<Arc<sync::GitSync>>,
    /// This instance's name ([`Options::instance`], resolved).
    instance: Arc<str>,
}

impl Lb {
    /// Loads the config and binds the listeners; fails fast on a bad file or a busy port.
    pub async fn bind(options: Options) -> Result<Lb, Error> {
        let (applier, mut startup) = Applier::load(&options.config).await?;
        if let Some(http) = options.http {
            startup.listen.http = http;
        }
        if let Some(grpc) = options.grpc {
            startup.listen.grpc = grpc;
        }
        let http = bind("http", startup.listen.http).await?;
        if let Some(admin) = options.admin {
            startup.listen.admin = Some(admin);
        }
        let token = match &startup.control.token_file {
            Some(path) => Some(control::Token::read(path)?),
            None => None,
        };
        let tls = match &startup.control.tls {
            Some(files) => Some(control::ServerTls::load(files)?),
            None => None,
        };
        // A client certificate signed by `client_ca` authenticates as well as a token does (it
        // is a secret key the client proves it holds), so either one opens a non-loopback
        // listener. TLS without client certificates only hides the traffic.
        let mutual = tls.as_ref().is_some_and(control::ServerTls::is_mutual);
        let non_loopback = !startup.listen.grpc.ip().is_loopback();
        if non_loopback && token.is_none() && !mutual {
            if options.insecure_control {
                tracing::warn!(addr = %startup.listen.grpc, "control API open to the network without a token or client certificates (--insecure-control)");
            } else {
                return Err(Error::InsecureControl {
                    addr: startup.listen.grpc,
                });
            }
        }
        if non_loopback && tls.is_none() && token.is_some() {
            tracing::warn!(addr = %startup.listen.grpc, "control API on a non-loopback address without TLS: the token travels in clear; set [control] tls_cert and tls_key");
        }
        let grpc = bind("grpc", startup.listen.grpc).await?;
        if let Some(tls) = &tls {
            let clients = if tls.is_mutual() {
                "certificates signed by client_ca"
            } else {
                "any"
            };
            tracing::info!(clients, "control API serves TLS");
        }
        let admin = match startup.listen.admin {
            Some(addr) => Some(bind("admin", addr).await?),
            None => None,
        };
        // A broken or expired pair stops lb here, naming the file, as a broken lb.toml does.
        let certificates = match &startup.tls {
            Some(settings) => Some(Arc::new(tls::Store::load(settings)?)),
            None => None,
        };
        if startup.sync.is_some() && startup.control.git_commit {
            tracing::warn!("[control] git_commit has no effect with [sync]: every control-API change is already a commit pushed to the remote");
        }
        let sync = match &startup.sync {
            Some(settings) => {
                Some(sync::GitSync::open(Arc::clone(&applier), settings.clone()).await?)
            }
            None => None,
        };
        let mut https = Vec::with_capacity(startup.listen.https.len());
        for addr in &startup.listen.https {
            https.push(bind("https", *addr).await?);
        }
        let instance: Arc<str> = match options.instance.filter(|n| !n.trim().is_empty()) {
            Some(name) => Arc::from(name.trim()),
            None => hostname()
                .or_else(|| {
                    admin
                        .as_ref()
                        .and_then(|l| l.local_addr().ok())
                        .map(|a| a.to_string())
                })
                .or_else(|| grpc.local_addr().ok().map(|a| a.to_string()))
                .unwrap_or_else(|| "lb".to_owned())
                .into(),
        };
        tracing::info!(%instance, "instance name");
        Ok(Lb {
            applier,
            startup,
            http,
            https,
            grpc,
            admin,
            token,
            tls,
            certificates,
            access_log: options.access_log,
            sync,
            instance,
        })
    }

    /// This instance's name (`--instance`, else the hostname or a listener's address).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The proxy listener's bound address (the real port when the config asks for port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.startup.listen.http)
    }

    /// The control listener's bound address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.startup.listen.grpc)
    }

    /// The admin listener's bound address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The single writer of the topology, for embedding and tests.
    pub fn applier(&self) -> &Arc<Applier> {
        &self.applier
    }

    /// Serves until `shutdown` resolves, then drains for at most `drain_timeout`: the listeners
    /// stop accepting, health watches end with `UNAVAILABLE`, requests and RPCs in flight may
    /// finish, and whatever is still open at the deadline (a stalled response, an idle upgrade
    /// tunnel, a slow RPC) is dropped, so `run` always returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let watcher = watch::start(Arc::clone(&self.applier))?;
        let watcher = tokio::spawn(watcher);
        let certificate_watcher = match &self.certificates {
            Some(store) => Some(tokio::spawn(tls::watch(
                Arc::clone(store),
                self.applier.tls_settings(),
            )?)),
            None => None,
        };
        // Cancelled once: every listener stops on it.
        let stopping = CancellationToken::new();
        let writes = control::Writes {
            read_only: self.startup.control.read_only,
            sync: self.sync.clone(),
            instance: Arc::clone(&self.instance),
        };
        let looks = Arc::new(rollout::Looks::default());
        tokio::spawn(
            control::RolloutController::new(
                Arc::clone(&self.applier),
                writes.clone(),
                Arc::clone(&looks),
            )
            .run(stopping.clone()),
        );
        let service = control::ControlService::new(Arc::clone(&self.applier), stopping.clone())
            .with_certificates(self.certificates.clone())
            .with_writes(writes)
            .with_looks(Arc::clone(&looks));
        let mut control = tokio::spawn(control::serve(
            self.grpc,
            service,
            self.token,
            self.tls,
            stopping.clone(),
        ));
        if let Some(sync) = &self.sync {
            tokio::spawn(Arc::clone(sync).run(stopping.clone()));
        }
        if let Some(listener) = self.admin {
            let recent = Arc::new(admin::recent::Recorder::default());
            tokio::spawn(admin::recent::run(
                Arc::clone(&recent),
                Arc::clone(&self.applier),
                Arc::clone(self.applier.metrics()),
                stopping.clone(),
            ));
            let admin = Arc::new(admin::Admin {
                applier: Arc::clone(&self.applier),
                global: Arc::clone(self.applier.metrics()),
                certificates: self.certificates.clone(),
                instance: Arc::clone(&self.instance),
                fleet: self.sync.is_some(),
                looks,
                recent,
            });
            tokio::spawn(admin::serve(
                listener,
                admin,
                stopping.clone().cancelled_owned(),
            ));
        }
        let mut proxy = Proxy::new(
            Arc::clone(self.applier.topology()),
            Arc::clone(self.applier.metrics()),
            self.access_log,
            proxy::AfterHead {
                read: self.startup.server.read_timeout,
                send: self.startup.server.send_timeout,
                tunnel_idle: self.startup.server.tunnel_idle_timeout,
            },
        );
        // To the first HTTPS listener's bound port (the real one when the config says 0).
        let https_port = self.https.first().and_then(|l| l.local_addr().ok());
        if let (true, Some(https)) = (self.startup.listen.redirect_https, https_port) {
            proxy.redirect_to_https(https.port());
        }
        if let Some(networks) = &self.startup.server.trusted_proxies {
            proxy.trust_proxies(networks.clone());
        }
        let proxy = Arc::new(proxy);
        let drain_timeout = self.startup.server.drain_timeout;
        let settings = ServerSettings {
            header_timeout: self.startup.server.header_timeout,
            idle_timeout: self.startup.server.idle_timeout,
            drain_timeout,
            max_connections: self.startup.server.max_connections,
            max_connections_per_ip: self.startup.server.max_connections_per_ip,
        };
        let listeners = proxy::Listeners {
            http: self.http,
            https: self.https,
            certificates: self.certificates.clone(),
        };
        let data_plane = proxy::serve(
            listeners,
            proxy,
            settings,
            stopping.clone().cancelled_owned(),
        );
        tokio::pin!(data_plane);
        // The data plane only returns on its own if the listener failed for good.
        let data_plane_ended = tokio::select! {
            () = shutdown => false,
            () = &mut data_plane => true,
        };
        let deadline = tokio::time::Instant::now() + drain_timeout;
        stopping.cancel();
        if !data_plane_ended {
            // Bounded by `drain_timeout` inside.
            data_plane.await;
        }
        watcher.abort();
        if let Some(certificate_watcher) = certificate_watcher {
            certificate_watcher.abort();
        }
        match tokio::time::timeout_at(deadline, &mut control).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "control API stopped with an error"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(timeout = ?drain_timeout, "control RPCs still open at the drain deadline; closing them");
                control.abort();
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The machine's hostname (the kernel's, as `hostname` prints it), when it has one.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty() && name != "(none)").then(|| name.to_owned())
        })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(listener = what, addr = %bound, "listening");
    Ok(listener)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received; no longer accepting");
}
