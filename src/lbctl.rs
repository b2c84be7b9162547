//! lbctl's library half: argv normalisation (Go `flag` style), error lines, and the text and JSON
//! renderings of control-API answers, kept out of the binary so they can be unit-tested.
//! It never talks to the network, never exits the process, and has no clap or anyhow in it;
//! [`rolling`] drives a rolling upgrade through a trait the binary implements over its client.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::control::proto;

mod canary;
pub mod rolling;
mod rollout;
pub use canary::{canary_json, render_canary_status, verdict_name};
pub use rollout::{ladder, render_rollout_line, render_rollout_status, rollout_json};

/// lbctl's long flags. The original Go tool's `flag` package took them with one dash as well
/// (`-lb=...`, `-pattern /`), which clap does not, so these are rewritten before parsing. The
/// first five are the original tool's; the rest are ours, accepted the same way for consistency.
const GO_FLAGS: [&str; 17] = [
    "lb",
    "pattern",
    "ip",
    "port",
    "url_path",
    "token-file",
    "tls-ca",
    "tls-cert",
    "tls-key",
    "tls-server-name",
    "rpc-timeout",
    "timeout",
    "if-match",
    "output",
    "drained",
    "help",
    "version",
];

/// Rewrites `-lb=x` / `-lb x` to `--lb=x` / `--lb x` for lbctl's flags. Everything after a
/// bare `--` is an operand and stays as it is.
pub fn normalise_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut operands = false;
    args.into_iter()
        .map(|arg| {
            if operands {
                return arg;
            }
            if arg == "--" {
                operands = true;
                return arg;
            }
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

/// Why `--lb` and the TLS flags do not go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// `--lb http://...` with `--tls-ca`.
    #[error("--lb {0:?} says http:// but --tls-ca asks for TLS; give https:// or just HOST:PORT")]
    PlainWithTls(String),
    /// `--lb https://...` without `--tls-ca`.
    #[error(
        "--lb {0:?} says https://; give --tls-ca PATH, the CA that signed lb's control certificate"
    )]
    TlsWithoutCa(String),
}

/// The URL to dial: `HOST:PORT` becomes `https://HOST:PORT` with TLS (`--tls-ca`) and
/// `http://HOST:PORT` without; a URL is kept when its scheme agrees with the flags.
pub fn endpoint(lb: &str, tls: bool) -> Result<String, EndpointError> {
    if lb.starts_with("http://") {
        return if tls {
            Err(EndpointError::PlainWithTls(lb.to_owned()))
        } else {
            Ok(lb.to_owned())
        };
    }
    if lb.starts_with("https://") {
        return if tls {
            Ok(lb.to_owned())
        } else {
            Err(EndpointError::TlsWithoutCa(lb.to_owned()))
        };
    }
    let scheme = if tls { "https" } else { "http" };
    Ok(format!("{scheme}://{lb}"))
}

/// What to do about a failed TLS handshake, read from the error line: rustls names the alert
/// or the verification failure, which says whose certificate is wrong. `tls` and `client_cert`
/// say how lbctl dialled. A connection the server drops during the handshake shows up only as
/// a closed or broken connection, so that gets a hint from what lbctl did not send.
pub fn tls_hint(line: &str, tls: bool, client_cert: bool) -> Option<&'static str> {
    let not_accepted =
        "lb does not accept this client certificate: it must be signed by lb's client_ca";
    let named = [
        (
            "CertificateRequired",
            "lb requires a client certificate: pass --tls-cert and --tls-key",
        ),
        ("UnknownCA", not_accepted),
        ("BadCertificate", not_accepted),
        (
            "UnknownIssuer",
            "lb's certificate is not signed by the CA given with --tls-ca",
        ),
        (
            "NotValidForName",
            "lb's certificate does not name this host: connect by a name it has or pass --tls-server-name",
        ),
        ("Expired", "a certificate has expired"),
    ];
    if let Some((_, hint)) = named.iter().find(|(needle, _)| line.contains(needle)) {
        return Some(hint);
    }
    let contains_any = |needles: &[&str]| needles.iter().any(|needle| line.contains(needle));
    let dropped = contains_any(&[
        "transport error",
        "h2 protocol error",
        "connection closed",
        "connection reset",
        "broken pipe",
    ]);
    // Nothing listening, a name that does not resolve or a timeout is not about TLS.
    let elsewhere = contains_any(&[
        "tcp connect error",
        "dns error",
        "timed out",
        "DEADLINE_EXCEEDED",
    ]);
    match (dropped && !elsewhere, tls, client_cert) {
        (false, _, _) => None,
        (true, false, _) => Some("if lb's control API serves TLS, pass --tls-ca PATH"),
        (true, true, false) => {
            Some("if lb requires client certificates, pass --tls-cert and --tls-key")
        }
        (true, true, true) => {
            Some("if lb requires client certificates, this one must be signed by lb's client_ca")
        }
    }
}

/// Whether a failed call's error line is one a probe of the address can explain: the
/// connection spoke something else than lb's control API (an HTTP/1 answer read as gRPC, a
/// dropped connection, a TLS record where plaintext was expected or the reverse). An answer
/// from lb itself (NOT_FOUND, FAILED_PRECONDITION…) and a refused or timed-out connection are
/// not.
pub fn worth_a_probe(line: &str) -> bool {
    [
        "protocol error",
        "transport error",
        "broken pipe",
        "connection reset",
        "connection closed",
        "corrupt message",
        "InvalidContentType",
        "compression flag",
        "frame with invalid size",
        "invalid HTTP version",
        "unexpected EOF",
        "Unexpected EOF",
    ]
    .iter()
    .any(|needle| line.contains(needle))
}

/// What the address is, from its answer to a plain `GET /status.json HTTP/1.1` (`answer`, the
/// first bytes read back): lb's admin port, another HTTP/1 server such as lb's data port, a TLS
/// listener, or (when lbctl dialled TLS) a plaintext one. `None` when the answer does not say.
pub fn diagnosis(addr: &str, answer: &[u8], tls: bool) -> Option<String> {
    let control = "point --lb at lb's control listener ([control] listen, or lb's --grpc)";
    if answer.starts_with(b"HTTP/1.") {
        let status_line = answer
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(answer);
        let admin = text.contains("\"generation\"") && text.contains("\"pools\"");
        return Some(if admin {
            format!(
                "{addr} is lb's admin port (it serves /status.json over HTTP/1), not its control API: {control}"
            )
        } else {
            format!(
                "{addr} answered in HTTP/1 ({status_line}): it is an HTTP server such as lb's data port, not lb's control API (gRPC): {control}"
            )
        });
    }
    let tls_record = answer.len() >= 2 && matches!(answer[0], 0x15 | 0x16) && answer[1] == 0x03;
    match (tls_record, tls) {
        (true, false) => Some(format!(
            "{addr} serves TLS and lbctl spoke plaintext: pass --tls-ca PATH (the CA that signed lb's control certificate)"
        )),
        (false, true) => Some(format!(
            "{addr} does not serve TLS (it answered in plaintext) and lbctl spoke TLS: drop --tls-ca, --tls-cert and --tls-key, or point --lb at lb's TLS control listener"
        )),
        _ => None,
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

/// The proto name of a `PoolStatus` value (`PS_UNKNOWN` for one this lbctl does not know).
pub fn pool_status_name(status: i32) -> &'static str {
    proto::PoolStatus::try_from(status).map_or("PS_UNKNOWN", |s| s.as_str_name())
}

/// The proto name of a `BackendStatus` value (`BS_UNKNOWN` for one this lbctl does not know).
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

/// A pool's status as a person reads it: the wire name, except `down (PS_DEGRADED)` when the
/// pool has backends but none in rotation (every request gets 503); the wire enum is the
/// original tool's and has no `down`.
pub fn pool_status_label(status: i32, total: usize, in_rotation: usize) -> String {
    let name = pool_status_name(status);
    if total > 0 && in_rotation == 0 {
        format!("down ({name})")
    } else {
        name.to_owned()
    }
}

/// How many of a pool's backends take traffic: healthy and enabled.
fn in_rotation(health: &proto::PoolHealth) -> usize {
    health
        .backends
        .iter()
        .filter(|b| {
            b.status == proto::BackendStatus::BsHealthy as i32
                && b.admin_state == proto::AdminState::AsEnabled as i32
        })
        .count()
}

/// Wraps a status name in an ANSI colour when `colour` is set (text output on a terminal).
pub fn paint(text: &str, colour: bool) -> String {
    if !colour {
        return text.to_owned();
    }
    let code = match text {
        "PS_FULL" | "BS_HEALTHY" => "32",
        "PS_DEGRADED" | "AS_DRAIN" => "33",
        "PS_EMPTY" | "BS_SICK" | "AS_DISABLED" => "31",
        _ if text.starts_with("down") => "31",
        _ => return text.to_owned(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The proto name of an `AdminState` value (`AS_UNKNOWN` for one this lbctl does not know).
pub fn admin_state_name(state: i32) -> &'static str {
    proto::AdminState::try_from(state).map_or("AS_UNKNOWN", |s| s.as_str_name())
}

/// The poolHealth output: the pool and its status, then its backends with their health, admin
/// state and requests in flight.
pub fn render_pool_health(pattern: &str, health: &proto::PoolHealth, colour: bool) -> String {
    let mut out = table(&[
        vec!["POOL".into(), "STATUS".into()],
        vec![
            pattern.to_owned(),
            paint(
                &pool_status_label(health.status, health.backends.len(), in_rotation(health)),
                colour,
            ),
        ],
    ]);
    out.push('\n');
    let mut rows = vec![vec![
        "BACKEND".into(),
        "STATUS".into(),
        "ADMIN".into(),
        "IN FLIGHT".into(),
    ]];
    rows.extend(health.backends.iter().map(|b| {
        let label = backend_label(b);
        vec![
            if b.canary {
                format!("{label} (canary)")
            } else {
                label
            },
            paint(backend_status_name(b.status), colour),
            paint(admin_state_name(b.admin_state), colour),
            b.in_flight.to_string(),
        ]
    }));
    out.push_str(&table(&rows));
    out
}

/// Every pool of a ListPools answer, each rendered as poolHealth renders one.
pub fn render_pools(pools: &proto::ListPoolsResp, colour: bool) -> String {
    pools
        .pools
        .iter()
        .map(|p| render_pool_health(&p.pattern, &p.health.clone().unwrap_or_default(), colour))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `lbctl status`: the file, its generation and hash, the last reload, then one row per pool.
pub fn render_status(status: &proto::StatusResp, colour: bool) -> String {
    let mut out = format!(
        "instance:    {}\nconfig:      {}\ngeneration:  {}\nsha256:      {}\nlast reload: {}\n\n",
        status.instance,
        status.config_path,
        status.generation,
        status.content_hash,
        if status.last_reload_ok {
            "ok".to_owned()
        } else {
            format!("FAILED\n{}", status.last_error)
        }
    );
    let mut rows = vec![vec![
        "POOL".into(),
        "STATUS".into(),
        "HEALTHY".into(),
        "TYPE".into(),
    ]];
    rows.extend(status.pools.iter().map(|p| {
        vec![
            p.pattern.clone(),
            // Status counts healthy backends; a pool with none healthy answers 503.
            paint(
                &pool_status_label(p.status, p.total as usize, p.healthy as usize),
                colour,
            ),
            format!("{}/{}", p.healthy, p.total),
            p.pool_type.clone(),
        ]
    }));
    out.push_str(&table(&rows));
    if let Some(sync) = &status.sync {
        out.push('\n');
        out.push_str(&render_sync(sync));
    }
    if !status.certificates.is_empty() {
        let mut rows = vec![vec!["CERTIFICATE".into(), "NAMES".into(), "EXPIRES".into()]];
        rows.extend(status.certificates.iter().map(|c| {
            let default = if c.is_default { " (default)" } else { "" };
            vec![
                format!("{}{default}", c.cert),
                c.names.join(","),
                unix_date(c.not_after_unix),
            ]
        }));
        out.push('\n');
        out.push_str(&table(&rows));
        if status.tls_reload_error.is_empty() {
            out.push_str("tls reload:  ok\n");
        } else {
            let _ = write!(
                out,
                "tls reload:  FAILED, still serving the previous certificates (since {})\n{}\n",
                unix_date(status.tls_reload_failed_since_unix),
                status.tls_reload_error
            );
        }
    }
    out
}

/// `[sync]`: the remote, the commit served, the remote head last seen and when.
pub fn render_sync(sync: &proto::SyncStatus) -> String {
    let or_none = |s: &str| {
        if s.is_empty() {
            "none".to_owned()
        } else {
            s.to_owned()
        }
    };
    let lag = if sync.serving_commit.is_empty() || sync.serving_commit != sync.remote_head {
        " (behind the remote)"
    } else {
        ""
    };
    let mut out = format!(
        "sync:        {} {}\ncommit:      {}{lag}\nremote head: {}\nlast fetch:  {}\n",
        sync.remote,
        sync.branch,
        or_none(&sync.serving_commit),
        or_none(&sync.remote_head),
        match i64::try_from(sync.last_success_unix) {
            Ok(unix) if unix > 0 => unix_date(unix),
            _ => "never".to_owned(),
        },
    );
    if !sync.last_error.is_empty() {
        out.push_str(&format!("sync error:  {}\n", sync.last_error));
    }
    out
}

/// One instance of `lbctl status --fleet`: its address and its Status, or why there is none.
pub type FleetRow = (String, Result<proto::StatusResp, String>);

/// The commits `lbctl status --fleet` asks every instance to place against its remote head
/// (`StatusReq.commits`): each remote head and served commit the first round of answers named.
pub fn fleet_commits(rows: &[FleetRow]) -> Vec<String> {
    let mut commits: Vec<String> = Vec::new();
    for sync in rows
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().ok()?.sync.as_ref())
    {
        for commit in [&sync.remote_head, &sync.serving_commit] {
            if !commit.is_empty() && !commits.contains(commit) {
                commits.push(commit.clone());
            }
        }
    }
    commits
}

/// The fleet's remote head: the remote head of an instance that holds every other instance's
/// remote head as itself or an ancestor (its `places`), whenever each fetched. `None` when no
/// instance has fetched, or when the heads diverged (a branch rewritten under part of the fleet).
fn fleet_head(rows: &[FleetRow]) -> Option<&proto::SyncStatus> {
    let syncs: Vec<&proto::SyncStatus> = rows
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().ok()?.sync.as_ref())
        .filter(|sync| !sync.remote_head.is_empty())
        .collect();
    syncs.iter().copied().find(|candidate| {
        syncs.iter().all(|sync| {
            sync.remote_head == candidate.remote_head
                || contains(candidate, &sync.remote_head) == Some(true)
        })
    })
}

/// Whether `commit` is `head`'s remote head or an ancestor of it, as that instance answered;
/// `None` when it was not asked.
fn contains(head: &proto::SyncStatus, commit: &str) -> Option<bool> {
    if head.remote_head == commit {
        return Some(true);
    }
    head.places
        .iter()
        .find(|place| place.commit == commit)
        .map(|place| place.in_remote_head)
}

/// What one instance of the fleet is: in step, behind the fleet's head, off it, or why it
/// cannot say.
fn fleet_state(
    answer: &Result<proto::StatusResp, String>,
    head: Option<&proto::SyncStatus>,
    heads_known: bool,
) -> String {
    let status = match answer {
        Ok(status) => status,
        Err(error) => return format!("unreachable: {error}"),
    };
    let Some(sync) = &status.sync else {
        return "no [sync]".to_owned();
    };
    if !sync.last_error.is_empty() {
        return format!("LAGS: {}", sync.last_error);
    }
    let Some(head) = head else {
        return if heads_known {
            "unknown: the instances' remote heads diverged".to_owned()
        } else {
            "no fetch yet".to_owned()
        };
    };
    let head_id = short(&head.remote_head);
    if sync.serving_commit == head.remote_head {
        "ok".to_owned()
    } else if sync.serving_commit.is_empty() {
        format!("LAGS behind {head_id}: serves no commit yet")
    } else if contains(head, &sync.serving_commit) == Some(false) {
        format!("OFF {head_id}: serves a commit the remote head does not contain")
    } else {
        format!("LAGS behind {head_id}")
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// How long ago `unix` was, from `now`, in its largest whole unit (`45s`, `12m`, `3h`, `9d`).
pub fn age(unix: i64, now: i64) -> String {
    let secs = now.saturating_sub(unix).max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// A subject for a table cell: its first 48 characters.
fn subject_cell(subject: &str) -> String {
    let mut chars = subject.chars();
    let head: String = chars.by_ref().take(48).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// `lbctl status --fleet`: the fleet's remote head with its subject and age, then one row per
/// instance with the commit it serves (subject, age), the remote head it last saw, its last
/// fetch, and whether it serves the fleet's head. `now` is the Unix time ages are counted from.
pub fn render_fleet(rows: &[FleetRow], now: i64) -> String {
    let head = fleet_head(rows);
    let heads_known = !fleet_commits(rows).is_empty();
    let mut out = String::new();
    if let Some(head) = head {
        let info = head.remote_head_info.clone().unwrap_or_default();
        let _ = write!(out, "remote head: {}", short(&head.remote_head));
        if !info.subject.is_empty() {
            let _ = write!(out, " {}", info.subject);
        }
        if info.committed_unix > 0 {
            let _ = write!(out, " (committed {})", age(info.committed_unix, now));
        }
        out.push('\n');
    }
    let mut table_rows = vec![vec![
        "INSTANCE".to_owned(),
        "COMMIT".to_owned(),
        "SUBJECT".to_owned(),
        "AGE".to_owned(),
        "REMOTE HEAD".to_owned(),
        "LAST FETCH".to_owned(),
        "STATE".to_owned(),
    ]];
    for (addr, answer) in rows {
        let sync = answer
            .as_ref()
            .ok()
            .and_then(|s| s.sync.clone())
            .unwrap_or_default();
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        let serving = sync.serving.clone().unwrap_or_default();
        table_rows.push(vec![
            addr.clone(),
            or_dash(short(&sync.serving_commit)),
            or_dash(&subject_cell(&serving.subject)),
            if serving.committed_unix > 0 {
                age(serving.committed_unix, now)
            } else {
                "-".to_owned()
            },
            or_dash(short(&sync.remote_head)),
            match i64::try_from(sync.last_success_unix) {
                Ok(unix) if unix > 0 => unix_date(unix),
                _ => "-".to_owned(),
            },
            fleet_state(answer, head, heads_known),
        ]);
    }
    out.push_str(&table(&table_rows));
    out
}

/// The `--output json` form of `status --fleet`.
pub fn fleet_json(rows: &[FleetRow]) -> serde_json::Value {
    let head = fleet_head(rows);
    let heads_known = !fleet_commits(rows).is_empty();
    let head_info = head.and_then(|h| h.remote_head_info.clone());
    serde_json::json!({
        "remote_head": head.map(|h| h.remote_head.as_str()),
        "remote_head_subject": head_info.as_ref().map(|i| i.subject.as_str()),
        "remote_head_committed_unix": head_info.as_ref().map(|i| i.committed_unix),
        "instances": rows.iter().map(|(addr, answer)| serde_json::json!({
            "instance": addr,
            "sync": answer.as_ref().ok().and_then(|s| s.sync.as_ref()).map(sync_json),
            "state": fleet_state(answer, head, heads_known),
        })).collect::<Vec<_>>(),
    })
}

/// The `--output json` form of a sync status.
pub fn sync_json(sync: &proto::SyncStatus) -> serde_json::Value {
    serde_json::json!({
        "remote": sync.remote,
        "branch": sync.branch,
        "serving_commit": sync.serving_commit,
        "remote_head": sync.remote_head,
        "last_success_unix": sync.last_success_unix,
        "last_error": sync.last_error,
        "serving_subject": sync.serving.as_ref().map(|c| c.subject.as_str()),
        "serving_committed_unix": sync.serving.as_ref().map(|c| c.committed_unix),
        "remote_head_subject": sync.remote_head_info.as_ref().map(|c| c.subject.as_str()),
        "remote_head_committed_unix": sync.remote_head_info.as_ref().map(|c| c.committed_unix),
    })
}

/// ` in commit ID` after a mutation's line, when `[sync]` pushed it as that commit.
pub fn in_commit(commit: &str) -> String {
    if commit.is_empty() {
        String::new()
    } else {
        format!(" in commit {commit}")
    }
}

/// A Unix time as an HTTP date (`Wed, 01 Jan 2099 00:00:00 GMT`); before 1970 is shown as is.
fn unix_date(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) => httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)),
        Err(_) => format!("@{unix}"),
    }
}

/// One line per health transition for `lbctl watch`.
pub fn render_event(event: &proto::HealthEvent, json: bool, colour: bool) -> String {
    let label = backend_label(&proto::BackendHealth {
        backend: event.backend.clone(),
        ..Default::default()
    });
    let at = rfc3339_ms(event.unix_ms);
    let cause = match proto::EventCause::try_from(event.cause) {
        Ok(proto::EventCause::EcCheck) => "check",
        Ok(proto::EventCause::EcEjection) => "ejection",
        Ok(proto::EventCause::EcReadmission) => "readmission",
        Ok(proto::EventCause::EcAdmin) => "admin",
        Ok(proto::EventCause::EcReload) => "reload",
        _ => "-",
    };
    if json {
        return serde_json::json!({
            "at": at, "unix_ms": event.unix_ms, "pattern": event.pattern, "backend": label,
            "status": backend_status_name(event.status), "cause": cause, "reason": event.reason,
        })
        .to_string();
    }
    format!(
        "{at}  {}  {}  {}  {cause}  {}",
        event.pattern,
        label,
        paint(backend_status_name(event.status), colour),
        event.reason
    )
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds (`2025-01-02T03:04:05.678Z`); a time
/// before 1970 reads as the epoch.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let ms = u64::try_from(unix_ms).unwrap_or(0);
    let at = UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_millis(at).to_string()
}

fn backend_json(b: &proto::BackendHealth) -> serde_json::Value {
    serde_json::json!({
        "backend": backend_label(b),
        "status": backend_status_name(b.status),
        "admin_state": admin_state_name(b.admin_state),
        "in_flight": b.in_flight,
        "canary": b.canary,
    })
}

/// The `--output json` form of one pool.
pub fn pool_json(pattern: &str, health: &proto::PoolHealth) -> serde_json::Value {
    serde_json::json!({
        "pattern": pattern,
        "status": pool_status_name(health.status),
        "down": !health.backends.is_empty() && in_rotation(health) == 0,
        "backends": health.backends.iter().map(backend_json).collect::<Vec<_>>(),
    })
}

/// The `--output json` form of ListPools.
pub fn pools_json(pools: &proto::ListPoolsResp) -> serde_json::Value {
    let list: Vec<_> = pools
        .pools
        .iter()
        .map(|p| pool_json(&p.pattern, &p.health.clone().unwrap_or_default()))
        .collect();
    serde_json::json!({
        "generation": pools.generation,
        "content_hash": pools.content_hash,
        "pools": list,
    })
}

/// The `--output json` form of Status.
pub fn status_json(status: &proto::StatusResp) -> serde_json::Value {
    serde_json::json!({
        "instance": status.instance,
        "config_path": status.config_path,
        "generation": status.generation,
        "content_hash": status.content_hash,
        "last_reload_ok": status.last_reload_ok,
        "last_error": status.last_error,
        "pools": status.pools.iter().map(|p| serde_json::json!({
            "pattern": p.pattern, "status": pool_status_name(p.status),
            "down": p.total > 0 && p.healthy == 0,
            "healthy": p.healthy, "total": p.total, "type": p.pool_type,
        })).collect::<Vec<_>>(),
        "certificates": status.certificates.iter().map(|c| serde_json::json!({
            "cert": c.cert, "names": c.names, "not_before_unix": c.not_before_unix,
            "not_after_unix": c.not_after_unix, "default": c.is_default,
        })).collect::<Vec<_>>(),
        "sync": status.sync.as_ref().map(sync_json),
        "tls_reload_ok": status.tls_reload_error.is_empty(),
        "tls_reload_error": (!status.tls_reload_error.is_empty()).then_some(&status.tls_reload_error),
        "tls_reload_failed_since_unix": (status.tls_reload_failed_since_unix != 0)
            .then_some(status.tls_reload_failed_since_unix),
    })
}

/// Pretty JSON with a trailing newline.
pub fn json_text(value: &serde_json::Value) -> String {
    // NOTE: serialising a `Value` cannot fail (its map keys are strings), so the default is
    // unreachable; it only keeps a panic out of the CLI.
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

/// `lbctl plan`'s text: one line per changed key (`~ KEY: BEFORE -> AFTER`, `+ KEY = VALUE`,
/// `- KEY = VALUE`, start-only keys marked `(restart needed)`), then each changed health
/// check's forecast: how many of the pool's backends fail it, and whether the pool would go down.
pub fn plan(plan: &proto::PlanResp) -> String {
    if plan.changes.is_empty() {
        return "no changes: the running lb already matches this file\n".to_owned();
    }
    let mut out = String::new();
    for change in &plan.changes {
        let line = match proto::ChangeKind::try_from(change.kind) {
            Ok(proto::ChangeKind::CkAdd) => format!("+ {} = {}", change.key, change.after),
            Ok(proto::ChangeKind::CkRemove) => format!("- {} = {}", change.key, change.before),
            _ => format!("~ {}: {} -> {}", change.key, change.before, change.after),
        };
        let restart = if change.restart {
            " (restart needed)"
        } else {
            ""
        };
        let _ = writeln!(out, "{line}{restart}");
    }
    for forecast in &plan.forecasts {
        let n = forecast.failing.len();
        let pattern = serde_json::Value::from(forecast.pattern.as_str());
        let _ = if forecast.pool_down {
            writeln!(
                out,
                "\n! {n} of {} backends would fail the new check: pool {pattern} would go down",
                forecast.probed
            )
        } else {
            writeln!(
                out,
                "\n{n} of {} backends would fail the new check of pool {pattern}",
                forecast.probed
            )
        };
        for failure in &forecast.failing {
            let _ = writeln!(out, "  {}: {}", failure.backend, failure.reason);
        }
    }
    let restarts = plan.changes.iter().filter(|c| c.restart).count();
    let _ = writeln!(
        out,
        "\n{} change{}{}",
        plan.changes.len(),
        if plan.changes.len() == 1 { "" } else { "s" },
        if restarts > 0 {
            format!(", {restarts} of them waiting for a restart of lb")
        } else {
            String::new()
        }
    );
    out
}

/// The `--output json` form of a plan.
pub fn plan_json(plan: &proto::PlanResp) -> serde_json::Value {
    let kind = |kind: i32| match proto::ChangeKind::try_from(kind) {
        Ok(proto::ChangeKind::CkAdd) => "add",
        Ok(proto::ChangeKind::CkRemove) => "remove",
        _ => "change",
    };
    serde_json::json!({
        "generation": plan.generation,
        "content_hash": plan.content_hash,
        "changes": plan.changes.iter().map(|c| serde_json::json!({
            "key": c.key, "kind": kind(c.kind),
            "before": (!c.before.is_empty()).then_some(&c.before),
            "after": (!c.after.is_empty()).then_some(&c.after),
            "restart": c.restart,
        })).collect::<Vec<_>>(),
        "forecasts": plan.forecasts.iter().map(|f| serde_json::json!({
            "pattern": f.pattern, "probed": f.probed, "pool_down": f.pool_down,
            "failing": f.failing.iter().map(|b| serde_json::json!({
                "backend": b.backend, "reason": b.reason,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendAddr;

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
                "-url_path=/v1/",
                "-x",
                "addPool"
            ]),
            [
                "lbctl",
                "--lb=1.2.3.4:5",
                "--pattern",
                "/",
                "--ip=1.1.1.1",
                "--url_path=/v1/",
                "-x",
                "addPool"
            ]
        );
    }

    #[test]
    fn normalisation_leaves_values_shorts_and_operands_alone() {
        assert_eq!(
            args(&["lbctl", "-h", "-V", "-help", "pool", "add", "--", "-lb"]),
            ["lbctl", "-h", "-V", "--help", "pool", "add", "--", "-lb"]
        );
        // A value that looks like a number is not a flag.
        assert_eq!(args(&["--port", "-1"]), ["--port", "-1"]);
    }

    #[test]
    fn cli_backend_forms_parse() {
        let v4: BackendAddr = "127.0.0.1:8082".parse().unwrap();
        assert_eq!((v4.addr.port(), v4.url_path.as_str()), (8082, ""));
        let v6: BackendAddr = "[::1]:80/v1/".parse().unwrap();
        assert!(v6.addr.is_ipv6());
        assert_eq!((v6.addr.port(), v6.url_path.as_str()), (80, "/v1/"));
        for bad in [
            "nope",
            "::1:80",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:70000",
        ] {
            assert!(bad.parse::<BackendAddr>().is_err(), "{bad} parsed");
        }
    }

    fn ip_health(ip: &str, port: i32, url_path: &str, status: i32) -> proto::BackendHealth {
        proto::BackendHealth {
            backend: Some(proto::Backend {
                backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
                    ip: ip.into(),
                    port,
                    url_path: url_path.into(),
                })),
            }),
            status,
            admin_state: proto::AdminState::AsEnabled as i32,
            in_flight: 0,
            canary: false,
            stats: None,
        }
    }

    #[test]
    fn renders_pool_health_tables() {
        let health = proto::PoolHealth {
            status: proto::PoolStatus::PsDegraded as i32,
            backends: vec![
                ip_health(
                    "127.0.0.1",
                    8082,
                    "",
                    proto::BackendStatus::BsHealthy as i32,
                ),
                ip_health("::1", 80, "/v1/", proto::BackendStatus::BsSick as i32),
            ],
        };
        assert_eq!(
            render_pool_health("/api/", &health, false),
            "POOL   STATUS\n\
             /api/  PS_DEGRADED\n\
             \n\
             BACKEND         STATUS      ADMIN       IN FLIGHT\n\
             127.0.0.1:8082  BS_HEALTHY  AS_ENABLED  0\n\
             [::1]:80/v1/    BS_SICK     AS_ENABLED  0\n"
        );
        let json = pool_json("/api/", &health);
        assert_eq!(json["status"], "PS_DEGRADED");
        assert_eq!(json["backends"][1]["backend"], "[::1]:80/v1/");
    }

    #[test]
    fn an_empty_pool_still_prints_both_headers() {
        let health = proto::PoolHealth {
            status: proto::PoolStatus::PsEmpty as i32,
            backends: vec![],
        };
        let text = render_pool_health("/", &health, false);
        assert!(
            text.starts_with("POOL  STATUS\n/     PS_EMPTY\n\nBACKEND"),
            "{text}"
        );
    }

    #[test]
    fn unknown_enum_values_render_as_unknown() {
        assert_eq!(pool_status_name(42), "PS_UNKNOWN");
        assert_eq!(backend_status_name(-1), "BS_UNKNOWN");
        assert_eq!(admin_state_name(9), "AS_UNKNOWN");
        assert_eq!(backend_label(&proto::BackendHealth::default()), "(unknown)");
    }

    #[test]
    fn colour_only_when_asked() {
        assert_eq!(paint("BS_SICK", false), "BS_SICK");
        assert_eq!(paint("BS_SICK", true), "\x1b[31mBS_SICK\x1b[0m");
        assert_eq!(paint("/api/", true), "/api/");
    }

    #[test]
    fn sync_status_says_which_commit_and_whether_it_lags() {
        let mut sync = proto::SyncStatus {
            remote: "/srv/lb.git".into(),
            branch: "main".into(),
            serving_commit: "aaa".into(),
            remote_head: "aaa".into(),
            last_success_unix: 0,
            last_error: String::new(),
            ..Default::default()
        };
        let text = render_sync(&sync);
        assert!(
            text.contains("sync:        /srv/lb.git main\ncommit:      aaa\n"),
            "{text}"
        );
        assert!(text.contains("last fetch:  never\n"), "{text}");
        sync.remote_head = "bbb".into();
        sync.last_error = "cannot reach".into();
        let text = render_sync(&sync);
        assert!(
            text.contains("commit:      aaa (behind the remote)\n"),
            "{text}"
        );
        assert!(text.contains("sync error:  cannot reach\n"), "{text}");
        assert_eq!(in_commit(""), "");
        assert_eq!(in_commit("abc"), " in commit abc");
    }

    #[test]
    fn fleet_status_says_which_instances_lag() {
        let instance = |serving: &str, head: &str, at: u64, error: &str, contains: &[&str]| {
            let places = ["aaa", "bbb", "ccc"]
                .iter()
                .map(|commit| proto::CommitPlace {
                    commit: (*commit).into(),
                    in_remote_head: contains.contains(commit),
                })
                .collect();
            Ok(proto::StatusResp {
                sync: Some(proto::SyncStatus {
                    serving_commit: serving.into(),
                    remote_head: head.into(),
                    last_success_unix: at,
                    last_error: error.into(),
                    serving: Some(proto::CommitInfo {
                        commit: serving.into(),
                        subject: format!("subject of {serving}"),
                        committed_unix: 1_000,
                    }),
                    remote_head_info: Some(proto::CommitInfo {
                        commit: head.into(),
                        subject: format!("subject of {head}"),
                        committed_unix: 1_000,
                    }),
                    places,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let rows: Vec<FleetRow> = vec![
            // Pushed bbb right after fetching at 10: its fetch is older than b's.
            (
                "a:1".into(),
                instance("bbb", "bbb", 10, "", &["aaa", "bbb"]),
            ),
            // Fetched later, before the push landed: still at aaa.
            ("b:1".into(), instance("aaa", "aaa", 30, "", &["aaa"])),
            (
                "c:1".into(),
                instance("aaa", "aaa", 30, "cannot reach", &["aaa"]),
            ),
            ("d:1".into(), Err("connection refused".into())),
            // Has fetched bbb but still serves aaa.
            (
                "e:1".into(),
                instance("aaa", "bbb", 20, "", &["aaa", "bbb"]),
            ),
        ];
        let text = render_fleet(&rows, 1_000 + 125);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "remote head: bbb subject of bbb (committed 2m ago)"
        );
        assert!(lines[1].starts_with("INSTANCE"), "{text}");
        assert!(lines[2].ends_with("  ok"), "{text}");
        assert!(lines[2].contains("subject of bbb  2m ago"), "{text}");
        assert!(lines[3].ends_with("LAGS behind bbb"), "{text}");
        assert!(lines[4].ends_with("LAGS: cannot reach"), "{text}");
        assert!(
            lines[5].ends_with("unreachable: connection refused"),
            "{text}"
        );
        assert!(lines[6].ends_with("LAGS behind bbb"), "{text}");
        assert_eq!(fleet_json(&rows)["instances"][0]["state"], "ok");
        assert_eq!(fleet_json(&rows)["remote_head"], "bbb");
        assert_eq!(fleet_json(&rows)["remote_head_subject"], "subject of bbb");
        assert_eq!(fleet_commits(&rows), ["bbb", "aaa"]);
    }

    #[test]
    fn fleet_status_says_when_heads_diverged_or_a_commit_is_off_the_head() {
        let instance = |serving: &str, head: &str, places: &[(&str, bool)]| {
            Ok(proto::StatusResp {
                sync: Some(proto::SyncStatus {
                    serving_commit: serving.into(),
                    remote_head: head.into(),
                    last_success_unix: 1,
                    places: places
                        .iter()
                        .map(|(commit, inside)| proto::CommitPlace {
                            commit: (*commit).into(),
                            in_remote_head: *inside,
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        // A rewritten branch: neither head holds the other.
        let rows: Vec<FleetRow> = vec![
            ("a:1".into(), instance("aaa", "aaa", &[("bbb", false)])),
            ("b:1".into(), instance("bbb", "bbb", &[("aaa", false)])),
        ];
        let text = render_fleet(&rows, 0);
        assert!(
            text.lines().all(|l| !l.starts_with("remote head")),
            "{text}"
        );
        assert!(text.contains("remote heads diverged"), "{text}");
        // One instance serves a local commit the remote lacks.
        let rows: Vec<FleetRow> = vec![
            ("a:1".into(), instance("aaa", "bbb", &[("aaa", false)])),
            ("b:1".into(), instance("bbb", "bbb", &[("aaa", false)])),
        ];
        let text = render_fleet(&rows, 0);
        assert!(text.contains("OFF bbb"), "{text}");
        assert_eq!(age(0, 59), "59s ago");
        assert_eq!(age(0, 3 * 86_400), "3d ago");
    }

    #[test]
    fn status_shows_a_failed_reload_with_its_error() {
        let status = proto::StatusResp {
            config_path: "/etc/lb/lb.toml".into(),
            generation: 3,
            content_hash: "ab".into(),
            last_reload_ok: false,
            last_error: "lb.toml:2:1: unknown key".into(),
            pools: vec![proto::PoolSummary {
                pattern: "/".into(),
                status: proto::PoolStatus::PsFull as i32,
                healthy: 2,
                total: 2,
                pool_type: "p2c".into(),
            }],
            applied_at_unix: 0,
            certificates: Vec::new(),
            sync: None,
            ..Default::default()
        };
        let text = render_status(&status, false);
        assert!(
            text.contains("generation:  3\n")
                && text.contains("last reload: FAILED\nlb.toml:2:1: unknown key"),
            "{text}"
        );
        assert!(text.ends_with("/     PS_FULL  2/2      p2c\n"), "{text}");
        assert_eq!(status_json(&status)["pools"][0]["healthy"], 2);
    }

    #[test]
    fn status_lists_certificates_with_names_and_expiry() {
        let status = proto::StatusResp {
            certificates: vec![proto::CertificateSummary {
                cert: "/etc/lb/site.pem".into(),
                names: vec!["a.test".into(), "*.a.test".into()],
                not_before_unix: 0,
                not_after_unix: 4_070_908_800,
                is_default: true,
            }],
            ..Default::default()
        };
        let text = render_status(&status, false);
        assert!(
            text.contains("CERTIFICATE                 NAMES            EXPIRES\n/etc/lb/site.pem (default)  a.test,*.a.test  Thu, 01 Jan 2099 00:00:00 GMT\n"),
            "{text}"
        );
        let json = status_json(&status);
        assert_eq!(json["certificates"][0]["not_after_unix"], 4_070_908_800_i64);
        assert_eq!(json["certificates"][0]["default"], true);
    }

    #[test]
    fn endpoints_accept_addresses_and_urls() {
        let ok = |lb, tls| endpoint(lb, tls).unwrap();
        assert_eq!(ok("127.0.0.1:8081", false), "http://127.0.0.1:8081");
        assert_eq!(ok("[::1]:8081", false), "http://[::1]:8081");
        assert_eq!(ok("http://h:1", false), "http://h:1");
        assert_eq!(ok("127.0.0.1:8081", true), "https://127.0.0.1:8081");
        assert_eq!(ok("https://h:1", true), "https://h:1");
    }

    #[test]
    fn endpoint_schemes_must_agree_with_the_tls_flags() {
        assert_eq!(
            endpoint("http://h:1", true),
            Err(EndpointError::PlainWithTls("http://h:1".into()))
        );
        let error = endpoint("https://h:1", false).unwrap_err();
        assert!(error.to_string().contains("--tls-ca PATH"), "{error}");
    }

    #[test]
    fn a_probe_answer_names_what_listens_there() {
        let admin = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"generation\":3,\"pools\":[]}";
        let said = diagnosis("h:1", admin, false).unwrap();
        assert!(said.contains("admin port"), "{said}");
        let data = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let said = diagnosis("h:1", data, true).unwrap();
        assert!(said.contains("HTTP/1 (HTTP/1.1 404 Not Found)"), "{said}");
        assert!(said.contains("data port"), "{said}");
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];
        assert!(diagnosis("h:1", &alert, false)
            .unwrap()
            .contains("--tls-ca"));
        assert_eq!(diagnosis("h:1", &alert, true), None);
        assert!(diagnosis("h:1", b"", true)
            .unwrap()
            .contains("does not serve TLS"));
        assert_eq!(diagnosis("h:1", b"", false), None);
        assert!(worth_a_probe(
            "lbctl: error: INTERNAL: protocol error: received message with invalid compression flag: 72"
        ));
        assert!(!worth_a_probe("lbctl: error: NOT_FOUND: no pool \"/x\""));
    }

    #[test]
    fn tls_failures_come_with_a_hint() {
        let line = "lbctl: error: UNKNOWN: transport error: connection error: received fatal alert: CertificateRequired";
        assert_eq!(
            tls_hint(line, true, false),
            Some("lb requires a client certificate: pass --tls-cert and --tls-key")
        );
        let line = "lbctl: cannot reach lb at h:1: transport error: invalid peer certificate: UnknownIssuer";
        assert!(tls_hint(line, true, false).is_some_and(|h| h.contains("--tls-ca")));
        // A dropped connection: plaintext against TLS, or no certificate against mutual TLS.
        let line = "lbctl: error: UNKNOWN: transport error: connection error: stream closed because of a broken pipe";
        assert!(tls_hint(line, false, false).is_some_and(|h| h.contains("--tls-ca")));
        let line = "lbctl: error: CANCELLED: operation was canceled: connection closed";
        assert!(tls_hint(line, true, false).is_some_and(|h| h.contains("--tls-cert")));
        assert!(tls_hint(line, true, true).is_some_and(|h| h.contains("client_ca")));
        let refused = "lbctl: cannot reach lb at h:1: transport error: tcp connect error: Connection refused (os error 111)";
        assert_eq!(tls_hint(refused, false, false), None);
        assert_eq!(tls_hint(refused, true, false), None);
        let dns = "lbctl: cannot reach lb at nope:1: transport error: dns error: failed to lookup address information";
        assert_eq!(tls_hint(dns, false, false), None);
        assert_eq!(
            tls_hint("lbctl: error: NOT_FOUND: no pool \"/x\"", false, false),
            None
        );
    }

    #[test]
    fn tls_flags_take_the_go_style_too() {
        assert_eq!(
            args(&[
                "lbctl",
                "-tls-ca=ca.pem",
                "-tls-cert",
                "c.pem",
                "-tls-key=k.pem",
                "-tls-server-name=lb.internal",
                "status"
            ]),
            [
                "lbctl",
                "--tls-ca=ca.pem",
                "--tls-cert",
                "c.pem",
                "--tls-key=k.pem",
                "--tls-server-name=lb.internal",
                "status"
            ]
        );
    }
}
