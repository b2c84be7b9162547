//! demo: `lb demo` — two sample backends on loopback and lb in front of them, configured from a
//! temporary directory; `lb demo --rollout` adds two new versions and a rollout of each, with
//! traffic of its own so the rollouts move. It never reads or edits `./lb.toml`.

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
    /// With `--rollout`: the good new version's backend, then the bad one's.
    pub versions: Vec<SocketAddr>,
    /// Holds the config file; removed on drop.
    _dir: tempfile::TempDir,
}

/// A loopback listener for a demo backend.
async fn backend_listener() -> Result<(TcpListener, SocketAddr), Error> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            what: "demo backend",
            addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(addr);
    Ok((listener, bound))
}

/// Starts two sample backends and binds lb on `http` / `grpc` / `admin` in front of them; with
/// `rollout`, two more (version v2, and a version v3 answering 30 % errors) and a canary
/// rollout of v2 in the file.
pub async fn start(
    http: SocketAddr,
    grpc: SocketAddr,
    admin: SocketAddr,
    access_log: AccessLog,
    rollout: bool,
) -> Result<Demo, Error> {
    let dir = tempfile::tempdir().map_err(|source| {
        Error::Config(crate::config::Error::Read {
            path: std::env::temp_dir(),
            source,
        })
    })?;
    let mut backends = Vec::new();
    for node in ["a", "b"] {
        let (listener, bound) = backend_listener().await?;
        backends.push(bound);
        tokio::spawn(sample_web::serve(listener, node.to_owned()));
    }
    let mut versions = Vec::new();
    if rollout {
        for (version, error_rate) in [("v2", 0.0), ("v3", 0.3)] {
            let (listener, bound) = backend_listener().await?;
            versions.push(bound);
            let mut behaviour = sample_web::Behaviour::new(format!("{version}-a"));
            behaviour.version = Some(version.to_owned());
            behaviour.error_rate = error_rate;
            tokio::spawn(sample_web::serve_with(listener, behaviour));
        }
    }
    let config_path = dir.path().join("lb.toml");
    let mut text = format!(
        "# lb demo: two sample-web backends behind one pool\n\
         [listen]\nhttp = \"{http}\"\ngrpc = \"{grpc}\"\nadmin = \"{admin}\"\n\n\
         [pools.\"/\"]\ninterval = \"2s\"\nbackends = [\n  \"{}\",\n  \"{}\",\n]\n",
        backends[0], backends[1]
    );
    if let Some(v2) = versions.first() {
        text.push_str(&format!(
            "\n# version v2, rolled out by lb itself\n\
             [pools.\"/\".canary]\nbackends = [\"{v2}\"]\nweight = 0\n\n\
             [pools.\"/\".rollout]\nsteps = [10, 50, 100]\nbake = \"15s\"\nmin_requests = 50\n"
        ));
    }
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
        instance: Some("demo".to_owned()),
        access_log,
    })
    .await?;
    Ok(Demo {
        lb,
        config_path,
        backends,
        versions,
        _dir: dir,
    })
}

/// The demo's own clients: a few requests a second to `http`, each on a new connection, for
/// as long as the demo runs, so the rollouts have traffic to be judged on.
pub async fn traffic(http: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    loop {
        tick.tick().await;
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect(http),
        )
        .await
        else {
            continue;
        };
        let request = b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n";
        if stream.write_all(request).await.is_err() {
            continue;
        }
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            stream.read_to_end(&mut sink),
        )
        .await;
    }
}

/// Once the file's rollout of v2 is done, starts one of `bad` (the v3 backend), which lb
/// aborts by itself.
pub async fn second_rollout(applier: std::sync::Arc<crate::apply::Applier>, bad: SocketAddr) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let done = applier.rollout_pools().iter().any(|pool| {
            pool.rollout.as_ref().and_then(|r| r.progress.state)
                == Some(crate::config::RolloutState::Done)
        });
        if done {
            break;
        }
    }
    let Ok(backend) = crate::config::BackendAddr::new(bad.ip(), bad.port(), "") else {
        return;
    };
    let mutation = match crate::control::rollout_start_mutation("/", &[10, 50, 100], backend) {
        Ok(mutation) => mutation,
        Err(status) => {
            tracing::warn!(error = %status.message(), "the demo's second rollout did not start");
            return;
        }
    };
    let options = crate::apply::MutateOptions {
        actor: Some("lb demo".to_owned()),
        ..Default::default()
    };
    if let Err(error) = applier.mutate(mutation, &options).await {
        tracing::warn!(%error, "the demo's second rollout did not start");
    }
}
