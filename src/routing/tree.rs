//! routing::tree: owns the compiled decision tree and the walks over it; never parses patterns.
//!
//! A port of Go's `net/http/routing_tree.go`. The root branches on the host, the next level on
//! the method, the rest on consecutive path segments. "More specific wins" can need
//! backtracking: with `/a/b/z` and `/a/{x}/c`, the path `/a/b/c` first tries `/a/b/z`, then
//! `/a/{x}/c`. Each node is visited at most once per lookup, so a lookup costs at most the
//! number of nodes along the paths the request could take, never the number of patterns.
//!
//! Go finds conflict candidates with a separate `routingIndex` (routing_index.go) whose multi
//! patterns are compared against everything. Here the same tree answers "which registered
//! patterns could match some path this one matches" by walking it with the pattern instead of
//! a path ([`Tree::overlapping`]), which prunes multis and wildcards as well as literals.

use std::collections::HashMap;

use super::pattern::{unescape, Pattern, Segment};

/// Past this many children a node switches from a list to a map. Go's `mapping` uses the same
/// bound: scanning a few short keys beats hashing them.
const MAX_LISTED: usize = 8;

/// The root: host, then method, then path.
#[derive(Debug, Default)]
pub(super) struct Tree {
    /// Patterns with a host, keyed by the lowercased host. Tried first: a pattern with a host
    /// beats one without (Go's precedence rule 1).
    hosts: HashMap<Box<str>, MethodNode>,
    /// Patterns without a host.
    any_host: MethodNode,
}

#[derive(Debug, Default)]
struct MethodNode {
    /// Method-specific subtrees; few, so a list. Method names are case-sensitive, as in Go.
    methods: Vec<(Box<str>, PathNode)>,
    /// Patterns without a method.
    any_method: Option<PathNode>,
}

/// A node in the path part of the tree. Where Go keys special children by "/", "" and "*",
/// these are separate fields, so no literal segment can collide with them.
#[derive(Debug, Default)]
struct PathNode {
    /// The route whose pattern ends here (the path is used up exactly).
    leaf: Option<usize>,
    /// Literal next segments, percent-decoded.
    literals: Children,
    /// A `{name}` next segment.
    wild: Option<Box<PathNode>>,
    /// The route whose pattern ends with `{$}` here.
    dollar: Option<usize>,
    /// The route whose pattern ends with a multi wildcard (`/` or `{name...}`) here.
    multi: Option<usize>,
}

#[derive(Debug)]
enum Children {
    Listed(Vec<(Box<[u8]>, PathNode)>),
    Hashed(HashMap<Box<[u8]>, PathNode>),
}

/// A position in a request path, optionally with one `/` appended, so that the trailing-slash
/// redirect can try `path + "/"` without allocating it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cursor<'p> {
    /// What is left; empty, or starting with '/'.
    rest: &'p str,
    /// Whether a `/` follows `rest`.
    extra_slash: bool,
}

enum Piece<'p> {
    /// One segment, still escaped.
    Segment(&'p str),
    /// The final `/` of a path that ends in one.
    TrailingSlash,
}

// === impl Tree ===

impl Tree {
    /// Adds `pattern` as route `idx`. The caller has ruled out conflicts, so the slot is free.
    pub(super) fn insert(&mut self, pattern: &Pattern, idx: usize) {
        let methods = match pattern.host() {
            Some(host) => self.hosts.entry(host.into()).or_default(),
            None => &mut self.any_host,
        };
        let mut node = match pattern.method() {
            Some(method) => methods.method_or_insert(method),
            None => methods.any_method.get_or_insert_with(PathNode::default),
        };
        for seg in &pattern.segments {
            node = match seg {
                Segment::Literal(key) => node.literals.get_or_insert(key),
                Segment::Wild(_) => node.wild.get_or_insert_with(Box::default),
                Segment::Dollar => return set_once(&mut node.dollar, idx),
                Segment::Multi(_) => return set_once(&mut node.multi, idx),
            };
        }
        set_once(&mut node.leaf, idx);
    }

    /// Go's `routingNode.match`: the most specific route for the request, if any.
    pub(super) fn lookup(&self, host: &str, method: &str, path: Cursor<'_>) -> Option<usize> {
        if !host.is_empty() {
            // A pattern for this host wins; if none matches, fall back to host-less ones.
            if let Some(found) = self.hosts.get(host).and_then(|m| m.lookup(method, path)) {
                return Some(found);
            }
        }
        self.any_host.lookup(method, path)
    }

    /// Go's `matchingMethods`: calls `f` with every method whose method-specific patterns
    /// match the path. `GET` implies `HEAD`; the caller adds it.
    pub(super) fn matching_methods<'t>(
        &'t self,
        host: &str,
        path: Cursor<'_>,
        f: &mut impl FnMut(&'t str),
    ) {
        let host_node = if host.is_empty() {
            None
        } else {
            self.hosts.get(host)
        };
        for node in host_node.into_iter().chain([&self.any_host]) {
            for (method, subtree) in &node.methods {
                if match_path(subtree, path).is_some() {
                    f(method);
                }
            }
        }
    }

    /// Calls `f` with every route that some request matching `pattern` could also match: at
    /// least every route that may conflict with it (same host, a method that is not disjoint,
    /// a path that is not disjoint). This replaces Go's `possiblyConflictingPatterns`.
    pub(super) fn overlapping(&self, pattern: &Pattern, f: &mut impl FnMut(usize)) {
        let methods = match pattern.host() {
            Some(host) => self.hosts.get(host),
            None => Some(&self.any_host),
        };
        let Some(methods) = methods else {
            return;
        };
        let segments = &pattern.segments[..];
        // The methods whose requests can meet this pattern's (Go's `compareMethods` is not
        // disjoint): itself, the method-less ones, and the GET/HEAD pair; or all of them.
        for (method, subtree) in &methods.methods {
            let related = match pattern.method() {
                None => true,
                Some(own) => {
                    **method == *own
                        || (own == "GET" && &**method == "HEAD")
                        || (own == "HEAD" && &**method == "GET")
                }
            };
            if related {
                walk_overlap(subtree, segments, f);
            }
        }
        if let Some(subtree) = &methods.any_method {
            walk_overlap(subtree, segments, f);
        }
    }
}

// === impl MethodNode ===

impl MethodNode {
    fn method(&self, method: &str) -> Option<&PathNode> {
        self.methods
            .iter()
            .find(|(m, _)| &**m == method)
            .map(|(_, node)| node)
    }

    fn method_or_insert(&mut self, method: &str) -> &mut PathNode {
        let pos = match self.methods.iter().position(|(m, _)| &**m == method) {
            Some(pos) => pos,
            None => {
                self.methods.push((method.into(), PathNode::default()));
                self.methods.len() - 1
            }
        };
        &mut self.methods[pos].1
    }

    /// Go's `matchMethodAndPath`: the exact method first, then GET for HEAD, then method-less.
    /// Trying them in this order is right because a method-less pattern that matched the same
    /// request as a method-specific one with a more specific path would have conflicted.
    fn lookup(&self, method: &str, path: Cursor<'_>) -> Option<usize> {
        let exact = self.method(method).and_then(|n| match_path(n, path));
        exact
            .or_else(|| match method {
                "HEAD" => self.method("GET").and_then(|n| match_path(n, path)),
                _ => None,
            })
            .or_else(|| self.any_method.as_ref().and_then(|n| match_path(n, path)))
    }
}

/// Go's `matchPath`. Literal children first: by construction (conflicts are rejected) a
/// pattern with a literal here is more specific than one with a wildcard here. Then the single
/// wildcard, more specific than the multi, which comes last.
fn match_path(node: &PathNode, path: Cursor<'_>) -> Option<usize> {
    let Some((piece, rest)) = path.next() else {
        return node.leaf;
    };
    match piece {
        // Only `{$}` and multis match the trailing slash; single wildcards never do.
        Piece::TrailingSlash => node.dollar.or(node.multi),
        Piece::Segment(raw) => {
            if !node.literals.is_empty() {
                // NOTE: decoding allocates, but only for a segment that has a `%` escape.
                let found = node
                    .literals
                    .get(&unescape(raw))
                    .and_then(|child| match_path(child, rest));
                if found.is_some() {
                    return found;
                }
            }
            if let Some(found) = node.wild.as_deref().and_then(|w| match_path(w, rest)) {
                return Some(found);
            }
            node.multi
        }
    }
}

/// Visits the routes under `node` whose patterns may match a path that `segments` matches.
/// This mirrors Go's `compareSegments`: equal literals meet, a literal meets a wildcard, a
/// wildcard meets any literal (not `{$}`), and a multi meets everything that follows it.
fn walk_overlap(node: &PathNode, segments: &[Segment], f: &mut impl FnMut(usize)) {
    let Some((seg, rest)) = segments.split_first() else {
        node.leaf.into_iter().for_each(&mut *f);
        return;
    };
    match seg {
        Segment::Literal(key) => {
            if let Some(child) = node.literals.get(key) {
                walk_overlap(child, rest, f);
            }
            if let Some(wild) = &node.wild {
                walk_overlap(wild, rest, f);
            }
        }
        Segment::Wild(_) => {
            for child in node.literals.values() {
                walk_overlap(child, rest, f);
            }
            if let Some(wild) = &node.wild {
                walk_overlap(wild, rest, f);
            }
        }
        Segment::Dollar => node.dollar.into_iter().for_each(&mut *f),
        // A multi matches a non-empty rest, so everything below this node, but not its leaf.
        Segment::Multi(_) => {
            node.dollar.into_iter().for_each(&mut *f);
            for child in node.literals.values() {
                visit_all(child, f);
            }
            if let Some(wild) = &node.wild {
                visit_all(wild, f);
            }
        }
    }
    // Whatever the segment, a multi here matches the rest of any path that gets this far.
    node.multi.into_iter().for_each(f);
}

fn visit_all(node: &PathNode, f: &mut impl FnMut(usize)) {
    for route in [node.leaf, node.dollar, node.multi].into_iter().flatten() {
        f(route);
    }
    for child in node.literals.values() {
        visit_all(child, f);
    }
    if let Some(wild) = &node.wild {
        visit_all(wild, f);
    }
}

fn set_once(slot: &mut Option<usize>, idx: usize) {
    debug_assert!(slot.is_none(), "conflict detection let a duplicate through");
    slot.get_or_insert(idx);
}

// === impl Children ===

impl Default for Children {
    fn default() -> Children {
        Children::Listed(Vec::new())
    }
}

impl Children {
    fn is_empty(&self) -> bool {
        match self {
            Children::Listed(list) => list.is_empty(),
            Children::Hashed(map) => map.is_empty(),
        }
    }

    fn get(&self, key: &[u8]) -> Option<&PathNode> {
        match self {
            Children::Listed(list) => list.iter().find(|(k, _)| **k == *key).map(|(_, n)| n),
            Children::Hashed(map) => map.get(key),
        }
    }

    fn get_or_insert(&mut self, key: &[u8]) -> &mut PathNode {
        if let Children::Listed(list) = self {
            if list.len() >= MAX_LISTED && !list.iter().any(|(k, _)| **k == *key) {
                *self = Children::Hashed(std::mem::take(list).into_iter().collect());
            }
        }
        match self {
            Children::Listed(list) => {
                let pos = match list.iter().position(|(k, _)| **k == *key) {
                    Some(pos) => pos,
                    None => {
                        list.push((key.into(), PathNode::default()));
                        list.len() - 1
                    }
                };
                &mut list[pos].1
            }
            Children::Hashed(map) => map.entry(key.into()).or_default(),
        }
    }

    fn values(&self) -> impl Iterator<Item = &PathNode> {
        let (listed, hashed) = match self {
            Children::Listed(list) => (Some(list.iter().map(|(_, n)| n)), None),
            Children::Hashed(map) => (None, Some(map.values())),
        };
        listed
            .into_iter()
            .flatten()
            .chain(hashed.into_iter().flatten())
    }
}

// === impl Cursor ===

impl<'p> Cursor<'p> {
    /// `path` must be empty or start with '/'.
    pub(super) fn new(path: &'p str, extra_slash: bool) -> Cursor<'p> {
        Cursor {
            rest: path,
            extra_slash,
        }
    }

    /// Go's `firstSegment`: the next piece and what follows it, or `None` at the end.
    fn next(self) -> Option<(Piece<'p>, Cursor<'p>)> {
        let end = Cursor::new("", false);
        if self.rest.is_empty() {
            return self.extra_slash.then_some((Piece::TrailingSlash, end));
        }
        if self.rest == "/" && !self.extra_slash {
            return Some((Piece::TrailingSlash, end));
        }
        let after = self.rest.strip_prefix('/').unwrap_or(self.rest);
        let (seg, rest) = after.split_at(after.find('/').unwrap_or(after.len()));
        Some((Piece::Segment(seg), Cursor { rest, ..self }))
    }
}
