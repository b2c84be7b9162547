//! routing: owns pattern -> pool lookup with Go net/http.ServeMux rules; pure.
//! Never does I/O, never touches config files or health: it maps a (method, host, path) to a
//! value and nothing else.
//!
//! The rules are those of Go 1.22+ `net/http.ServeMux` (see its package docs), ported from
//! Go's `pattern.go`, `routing_tree.go` and `server.go`:
//!
//! - A pattern is `[METHOD ][HOST]/[PATH]`. Path segments may be `{name}` (one segment), a final
//!   `{name...}` (the rest of the path), or a final `{$}` (the end, after a trailing slash). A
//!   path ending in `/` matches the whole subtree; any other path matches exactly.
//! - When several patterns match, the most specific wins: one with a host beats one without;
//!   otherwise the one whose method and path match a strict subset of the other's requests.
//!   Patterns that both match some request with neither more specific conflict, and
//!   [`Router::new`] refuses them. `GET` also matches `HEAD`; no method matches every method.
//! - Requests are matched on the cleaned path (`/a/../b` → `/b`, `//x` → `/x`), segment by
//!   segment, each percent-decoded; the host has its port stripped. A request for a subtree
//!   root without its slash (`/api` when only `/api/` exists) and a request for an unclean path
//!   are redirected.
//!
//! [`Router`] compiles the patterns into a decision tree (`tree`), so a lookup costs what the
//! path's segments cost, not what the number of patterns does, and a `Matched` lookup does not
//! allocate.

mod pattern;
mod tree;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use self::pattern::{clean_path, describe_conflict, is_clean};
pub use self::pattern::{Pattern, PatternError, MAX_SEGMENTS};
use self::tree::{Cursor, Tree};

/// Patterns compiled for lookup, each with the value a match returns (for lb, a pool index).
pub struct Router<T> {
    /// In the caller's order; the tree's leaves are indices into it, and conflicts report them.
    routes: Vec<(Pattern, T)>,
    tree: Tree,
}

/// Two patterns match some same request and neither is more specific (Go's `conflictsWith`),
/// or they are duplicates.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("pattern {new:?} conflicts with pattern {existing:?}: {reason}")]
pub struct ConflictError {
    /// The earlier pattern's text.
    pub existing: String,
    /// The later pattern's text.
    pub new: String,
    /// Where the earlier pattern is in the list given to [`Router::new`].
    pub existing_index: usize,
    /// Where the later pattern is in the list given to [`Router::new`].
    pub new_index: usize,
    /// Why neither wins, with example paths where that helps.
    pub reason: String,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a, T> {
    /// The request goes to the value of this pattern.
    Matched(&'a T),
    /// Answer 301 with this location: a path, to which the caller re-adds the original query.
    /// Used for `/api` → `/api/` when only the subtree exists, and for unclean paths
    /// (`/a/../b`, `//x`) → the cleaned path, as Go does.
    Redirect(String),
    /// The path matches some pattern, but not for this method: Go answers 405, with `Allow`
    /// from [`Router::allowed_methods`].
    MethodNotAllowed,
    /// No pattern matches: answer 404.
    NotFound,
}

// === impl Router ===

impl<T> Router<T> {
    /// Compiles `routes`. Fails when two patterns conflict (match some same request, neither
    /// more specific) or are duplicates. The error is the one Go's `ServeMux` would raise when
    /// registering them in order: the first pattern that conflicts with an earlier one, and
    /// the earliest of those.
    pub fn new(routes: Vec<(Pattern, T)>) -> Result<Router<T>, ConflictError> {
        let mut tree = Tree::default();
        // Patterns alike in host, method and path shape share a tree slot. Its first holder
        // keeps it; the others are remembered here, as they conflict with it and with whatever
        // it conflicts with.
        let mut alike: HashMap<usize, Vec<usize>> = HashMap::new();
        for (idx, (pattern, _)) in routes.iter().enumerate() {
            if let Some(holder) = tree.insert(pattern, idx) {
                alike.entry(holder).or_default().push(idx);
            }
        }

        tree.summarize();

        // The earliest conflict as (new, existing), as registering in order would find it.
        let mut earliest: Option<(usize, usize)> = None;
        let mut consider = |a: usize, b: usize| {
            let (existing, new) = (a.min(b), a.max(b));
            let earlier = earliest.is_none_or(|first| (new, existing) < first);
            if a != b && earlier && routes[new].0.conflicts_with(&routes[existing].0) {
                earliest = Some((new, existing));
            }
        };
        let group = |holder: usize| {
            std::iter::once(holder).chain(alike.get(&holder).into_iter().flatten().copied())
        };
        for &holder in alike.keys() {
            for a in group(holder) {
                group(holder).for_each(|b| consider(a, b));
            }
        }
        tree.overlapping_pairs(&mut |i, j| {
            for a in group(i) {
                group(j).for_each(|b| consider(a, b));
            }
        });

        if let Some((new_index, existing_index)) = earliest {
            let (new, existing) = (&routes[new_index].0, &routes[existing_index].0);
            return Err(ConflictError {
                existing: existing.as_str().to_owned(),
                new: new.as_str().to_owned(),
                existing_index,
                new_index,
                reason: describe_conflict(new, existing),
            });
        }
        Ok(Router { routes, tree })
    }

    /// Routes a request, as Go's `ServeMux.findHandler` does.
    ///
    /// `host` is the raw Host header or `:authority` (it may carry a port, it may be empty);
    /// `path` is the raw, still-escaped request path without the query.
    pub fn route<'a>(&'a self, method: &http::Method, host: &str, path: &str) -> Route<'a, T> {
        let method = method.as_str();
        if method == "CONNECT" {
            return self.route_connect(host, path);
        }
        // `OPTIONS *` addresses the server, not a resource (Go's ServeMux answers 400).
        if path == "*" {
            return Route::NotFound;
        }
        let host = normalize_host(strip_port(host));
        let cleaned = (!is_clean(path)).then(|| clean_path(path));
        let lookup = cleaned.as_deref().unwrap_or(path);

        let found = self.tree.lookup(&host, method, Cursor::new(lookup, false));
        if let Some(location) = self.slash_redirect(&host, method, lookup, found) {
            return Route::Redirect(location);
        }
        if let Some(cleaned) = cleaned {
            return Route::Redirect(cleaned);
        }
        self.found(found, &host, lookup)
    }

    /// CONNECT requests are neither cleaned nor have their port stripped, as in Go: their
    /// "path" is usually an authority, not a resource.
    fn route_connect<'a>(&'a self, host: &str, path: &str) -> Route<'a, T> {
        // Every pattern path starts with '/', so nothing else can match.
        if !path.starts_with('/') {
            return Route::NotFound;
        }
        let host = normalize_host(host);
        let found = self.tree.lookup(&host, "CONNECT", Cursor::new(path, false));
        if let Some(mut location) = self.slash_redirect(&host, "CONNECT", path, found) {
            // Go redirects to the cleaned path plus a slash even here.
            location = clean_path(&location);
            return Route::Redirect(location);
        }
        self.found(found, &host, path)
    }

    /// Go's `matchOrRedirect`: when `path` has no exact match but `path + "/"` has, the
    /// location to redirect to.
    fn slash_redirect(
        &self,
        host: &str,
        method: &str,
        path: &str,
        found: Option<usize>,
    ) -> Option<String> {
        if self.is_exact(found, path, false) || path.ends_with('/') {
            return None;
        }
        let with_slash = self.tree.lookup(host, method, Cursor::new(path, true));
        self.is_exact(with_slash, path, true)
            .then(|| format!("{path}/"))
    }

    /// Turns a lookup result into a route, telling 405 from 404 as Go does: a path that some
    /// method-specific pattern would match (or would after a trailing-slash redirect) is 405.
    fn found<'a>(&'a self, found: Option<usize>, host: &str, path: &str) -> Route<'a, T> {
        if let Some(idx) = found {
            return Route::Matched(&self.routes[idx].1);
        }
        let mut any = false;
        self.each_matching_method(host, path, &mut |_| any = true);
        if any {
            Route::MethodNotAllowed
        } else {
            Route::NotFound
        }
    }

    /// Go's `exactMatch`: the match is exact unless a multi wildcard matched a non-empty part
    /// of the path (`/` for `/a`, `/a/{x...}` for `/a/b`); `/a/` for `/a/` is exact.
    fn is_exact(&self, found: Option<usize>, path: &str, extra_slash: bool) -> bool {
        let Some(idx) = found else {
            return false;
        };
        let pattern = &self.routes[idx].0;
        if !pattern.ends_in_multi() {
            return true;
        }
        if !(extra_slash || path.ends_with('/')) {
            return false;
        }
        // The multi matched only the final slash iff there are as many pattern segments as
        // slashes in the path.
        let slashes = path.bytes().filter(|&b| b == b'/').count() + usize::from(extra_slash);
        pattern.segments.len() == slashes
    }

    fn each_matching_method<'t>(&'t self, host: &str, path: &str, f: &mut impl FnMut(&'t str)) {
        self.tree
            .matching_methods(host, Cursor::new(path, false), f);
        if !path.ends_with('/') {
            self.tree.matching_methods(host, Cursor::new(path, true), f);
        }
    }

    /// The methods that some pattern would accept for this host and path (Go's
    /// `matchingMethods`), sorted, for the `Allow` header of a 405. `GET` brings `HEAD`.
    pub fn allowed_methods(&self, host: &str, path: &str) -> Vec<&str> {
        let host = normalize_host(strip_port(host));
        let cleaned = (!is_clean(path)).then(|| clean_path(path));
        let path = cleaned.as_deref().unwrap_or(path);
        let mut methods = Vec::new();
        self.each_matching_method(&host, path, &mut |m| methods.push(m));
        if methods.contains(&"GET") {
            methods.push("HEAD");
        }
        methods.sort_unstable();
        methods.dedup();
        methods
    }

    /// The patterns and their values, in the order given to [`Router::new`].
    pub fn routes(&self) -> impl Iterator<Item = (&Pattern, &T)> {
        self.routes.iter().map(|(p, v)| (p, v))
    }

    /// How many patterns the router holds.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the router holds no pattern.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl<T> Default for Router<T> {
    fn default() -> Router<T> {
        Router {
            routes: Vec::new(),
            tree: Tree::default(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.routes()).finish()
    }
}

/// Go's `stripHostPort`: the host without a trailing `:port`.
///
/// Unlike Go (whose `net.SplitHostPort` drops the brackets of `[::1]:80` but not of `[::1]`),
/// an IPv6 literal keeps its brackets either way, so one `[::1]/` pattern matches both.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    // Bytes, not `split_once`: a char pattern's searcher costs more than the host is long.
    let bytes = host.as_bytes();
    match bytes.iter().position(|&b| b == b':') {
        // Several colons are a bare IPv6 address, which has no port to strip (Go errors out
        // and leaves it unchanged).
        Some(colon) if !bytes[colon + 1..].contains(&b':') => &host[..colon],
        _ => host,
    }
}

/// Host names are case-insensitive; patterns store theirs lowercased.
fn normalize_host(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}
