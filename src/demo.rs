//! demo: `lb demo` — two sample backends on loopback and lb in front of them, configured from a
//! temporary directory. It never reads or edits `./lb.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::access_log::AccessLog;
use crate::{Error, Lb, Options};

/// A running demo: keep it alive as long as the balancer should serve.
pub struct Demo {
    /// The balancer, bound and ready to run.
    pub lb: Lb,
    /// The generated lb.toml, in a temporary directory.
    pub config_path: PathBuf,
    /// The sample backends' addresses.
    pub backends: Vec<SocketAddr>,
    /// Holds the config file; removed on drop.
    _dir: tempfile::TempDir,
}

/// Starts two sample backends and binds lb on `http` / `grpc` / `admin` in front of them.
pub async fn start(
    http: SocketAddr,
    grpc: SocketAddr,
    admin: SocketAddr,
    access_log: AccessLog,
) -> Result<Demo, Error> {
    let dir = tempfile::tempdir().map_err(|source| {
        Error::Config(crate::config::Error::Read {
            path: std::env::temp_dir(),
            source,
        })
    })?;
    let mut backends = Vec::new();
    for node in ["a", "b"] {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                what: "demo backend",
                addr,
                source,
            })?;
        let bound = listener.local_addr().unwrap_or(addr);
        backends.push(bound);
        tokio::spawn(sample_web::serve(listener, node.to_owned()));
    }
    let config_path = dir.path().join("lb.toml");
    let text = format!(
        "# lb demo: two sample-web backends behind one pool\n\
         [listen]\nhttp = \"{http}\"\ngrpc = \"{grpc}\"\nadmin = \"{admin}\"\n\n\
         [pools.\"/\"]\ninterval = \"2s\"\nbackends = [\n  \"{}\",\n  \"{}\",\n]\n",
        backends[0], backends[1]
    );
    std::fs::write(&config_path, text).map_err(|source| {
        Error::Config(crate::config::Error::Read {
            path: config_path.clone(),
            source,
        })
    })?;
    let lb = Lb::bind(Options {
        config: config_path.clone(),
        http: None,
        grpc: None,
        admin: None,
        insecure_control: false,
        access_log,
    })
    .await?;
    Ok(Demo {
        lb,
        config_path,
        backends,
        _dir: dir,
    })
}
