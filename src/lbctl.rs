//! lbctl's library half: argv normalisation (Go `flag` style), backend parsing and table
//! rendering, kept out of the binary so they can be unit-tested. It never talks to the network.

use std::fmt::Write as _;

use crate::control::proto;

/// Flags the original Go tool accepted with one dash (`-lb=...`), which Go's `flag` package
/// allows and clap does not.
const GO_FLAGS: [&str; 7] = [
    "lb",
    "pattern",
    "ip",
    "port",
    "url_path",
    "token-file",
    "timeout",
];

/// Rewrites `-lb=x` / `-lb x` to `--lb=x` / `--lb x` for the original tool's flags.
pub fn normalise_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|arg| {
            let Some(rest) = arg.strip_prefix('-').filter(|r| !r.starts_with('-')) else {
                return arg;
            };
            let name = rest.split('=').next().unwrap_or(rest);
            if GO_FLAGS.contains(&name) {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

/// `http://HOST:PORT` from `HOST:PORT` or a URL.
pub fn endpoint(lb: &str) -> String {
    if lb.starts_with("http://") || lb.starts_with("https://") {
        lb.to_owned()
    } else {
        format!("http://{lb}")
    }
}

/// The uppercase gRPC code name, as people search for it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

pub fn pool_status_name(status: i32) -> &'static str {
    proto::PoolStatus::try_from(status).map_or("PS_UNKNOWN", |s| s.as_str_name())
}

pub fn backend_status_name(status: i32) -> &'static str {
    proto::BackendStatus::try_from(status).map_or("BS_UNKNOWN", |s| s.as_str_name())
}

/// `IP:PORT` plus url_path, IPv6 bracketed.
pub fn backend_label(backend: &proto::BackendHealth) -> String {
    match backend.backend.as_ref().and_then(|b| b.backend.as_ref()) {
        Some(proto::backend::Backend::IpBackend(ip)) => {
            let host = if ip.ip.contains(':') {
                format!("[{}]", ip.ip)
            } else {
                ip.ip.clone()
            };
            format!("{host}:{}{}", ip.port, ip.url_path)
        }
        None => "(unknown)".to_owned(),
    }
}

/// Renders rows as left-aligned columns separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let n_cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n_cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The poolHealth output: the pool and its status, then its backends and theirs.
pub fn render_pool_health(pattern: &str, health: &proto::PoolHealth) -> String {
    let mut out = table(&[
        vec!["POOL".into(), "STATUS".into()],
        vec![
            pattern.to_owned(),
            pool_status_name(health.status).to_owned(),
        ],
    ]);
    out.push('\n');
    let mut rows = vec![vec!["BACKEND".to_owned(), "STATUS".to_owned()]];
    rows.extend(
        health
            .backends
            .iter()
            .map(|b| vec![backend_label(b), backend_status_name(b.status).to_owned()]),
    );
    out.push_str(&table(&rows));
    out
}

/// What applying `wanted` would change on the running instance: pools and backends added,
/// removed or changed (admin state, pool type), one line each, in file order.
pub fn plan(wanted: &crate::config::Config, running: &proto::ListPoolsResp) -> String {
    use crate::config::AdminState;
    let running_pools: Vec<(&str, &proto::PoolHealth)> = running
        .pools
        .iter()
        .filter_map(|p| p.health.as_ref().map(|h| (p.pattern.as_str(), h)))
        .collect();
    let admin = |state: AdminState| match state {
        AdminState::Enabled => "AS_ENABLED",
        AdminState::Drain => "AS_DRAIN",
        AdminState::Disabled => "AS_DISABLED",
    };
    let mut lines = Vec::new();
    for pool in &wanted.pools {
        match running_pools.iter().find(|(p, _)| *p == pool.pattern) {
            None => {
                lines.push(format!("+ pool {}", pool.pattern));
                for b in &pool.backends {
                    lines.push(format!("+   backend {} ({})", b.addr, admin(b.state)));
                }
            }
            Some((_, health)) => {
                let labels: Vec<(String, &str)> = health
                    .backends
                    .iter()
                    .map(|b| {
                        (
                            backend_label(b),
                            proto::AdminState::try_from(b.admin_state)
                                .map_or("AS_UNKNOWN", |s| s.as_str_name()),
                        )
                    })
                    .collect();
                let mut changes = Vec::new();
                for b in &pool.backends {
                    let label = b.addr.to_string();
                    match labels.iter().find(|(l, _)| *l == label) {
                        None => changes.push(format!("+   backend {label} ({})", admin(b.state))),
                        Some((_, state)) if *state != admin(b.state) => changes.push(format!(
                            "~   backend {label}: {state} -> {}",
                            admin(b.state)
                        )),
                        Some(_) => {}
                    }
                }
                for (label, _) in &labels {
                    if !pool.backends.iter().any(|b| &b.addr.to_string() == label) {
                        changes.push(format!("-   backend {label}"));
                    }
                }
                if !changes.is_empty() {
                    lines.push(format!("~ pool {}", pool.pattern));
                    lines.extend(changes);
                }
            }
        }
    }
    for (pattern, health) in &running_pools {
        if wanted.pool(pattern).is_none() {
            lines.push(format!("- pool {pattern}"));
            for b in &health.backends {
                lines.push(format!("-   backend {}", backend_label(b)));
            }
        }
    }
    if lines.is_empty() {
        "no changes: the running lb already matches this file\n".to_owned()
    } else {
        lines.push(String::new());
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        normalise_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn go_style_single_dash_flags_become_double_dash() {
        assert_eq!(
            args(&[
                "lbctl",
                "-lb=1.2.3.4:5",
                "-pattern",
                "/",
                "--ip=1.1.1.1",
                "-x",
                "addPool"
            ]),
            [
                "lbctl",
                "--lb=1.2.3.4:5",
                "--pattern",
                "/",
                "--ip=1.1.1.1",
                "-x",
                "addPool"
            ]
        );
    }

    #[test]
    fn renders_pool_health_tables() {
        let health = proto::PoolHealth {
            status: proto::PoolStatus::PsDegraded as i32,
            backends: vec![proto::BackendHealth {
                backend: Some(proto::Backend {
                    backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
                        ip: "::1".into(),
                        port: 80,
                        url_path: "/v1/".into(),
                    })),
                }),
                status: proto::BackendStatus::BsSick as i32,
                ..Default::default()
            }],
        };
        assert_eq!(
            render_pool_health("/api/", &health),
            "POOL   STATUS\n/api/  PS_DEGRADED\n\nBACKEND       STATUS\n[::1]:80/v1/  BS_SICK\n"
        );
    }

    #[test]
    fn endpoints_accept_addresses_and_urls() {
        assert_eq!(endpoint("127.0.0.1:8081"), "http://127.0.0.1:8081");
        assert_eq!(endpoint("http://h:1"), "http://h:1");
    }
}
