//! routing::tree: owns the compiled decision tree and the walks over it; never parses patterns.
//!
//! A port of Go's `net/http/routing_tree.go`. The root branches on the host, the next level on
//! the method, the rest on consecutive path segments. "More specific wins" can need
//! backtracking: with `/a/b/z` and `/a/{x}/c`, the path `/a/b/c` first tries `/a/b/z`, then
//! `/a/{x}/c`. Each node is visited at most once per walk, so a lookup costs at most the
//! number of nodes along the paths the request could take, never the number of patterns.
//!
//! Go finds conflict candidates with a `routingIndex` (routing_index.go): each new pattern is
//! compared with the patterns sharing its rarest literal, and with every multi pattern. Here the
//! tree is walked against itself once ([`Tree::overlapping_pairs`]), pairing subtrees whose
//! prefixes overlap: literal children meet by key (the smaller side is scanned, the larger
//! probed), a wildcard child meets every literal child once for all patterns below it, and a
//! multi meets what lies below. Per-node reach summaries skip subtrees whose paths differ in
//! length. The cost mostly follows the number of overlapping pairs, not n².

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
    /// How many more path pieces the routes below can match; set by [`Tree::summarize`].
    reach: Reach,
}

/// The numbers of further path pieces (segments, or the trailing slash) that the routes below
/// a node can match. Two subtrees whose reaches do not meet hold no overlapping pair, which
/// lets [`pairs`] skip them without looking inside.
#[derive(Clone, Copy, Debug, Default)]
struct Reach {
    /// Bit `d`: some route ends after exactly `d` more pieces. Bit 63 stands for 63 or more.
    exact: u64,
    /// The fewest more pieces a multi wildcard below needs; it matches that many or more.
    /// Capped at 63, which only makes [`Reach::meets`] more permissive.
    multi: Option<u32>,
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
    /// Adds `pattern` as route `idx`. Patterns alike in host, method and path shape share a
    /// slot; if the slot is taken, it stays with its holder, which is returned.
    pub(super) fn insert(&mut self, pattern: &Pattern, idx: usize) -> Option<usize> {
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
                Segment::Dollar => return claim(&mut node.dollar, idx),
                Segment::Multi(_) => return claim(&mut node.multi, idx),
            };
        }
        claim(&mut node.leaf, idx)
    }

    /// Computes every node's [`Reach`]; call after the last insert, before pairing.
    pub(super) fn summarize(&mut self) {
        for methods in self.hosts.values_mut().chain([&mut self.any_host]) {
            for (_, subtree) in &mut methods.methods {
                summarize(subtree);
            }
            if let Some(subtree) = &mut methods.any_method {
                summarize(subtree);
            }
        }
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

    /// Calls `f(i, j)` for routes (slot holders) `i` and `j` that some request could match
    /// both: same host, methods that are not disjoint (Go's `compareMethods`), paths that are
    /// not disjoint (Go's `comparePaths`). It may call with `i == j`, and with both orders.
    pub(super) fn overlapping_pairs(&self, f: &mut impl FnMut(usize, usize)) {
        // Different hosts never conflict: one with a host beats one without, and two hosts
        // never meet.
        for methods in self.hosts.values().chain([&self.any_host]) {
            let any = methods.any_method.as_ref();
            for (method, subtree) in &methods.methods {
                pairs(subtree, subtree, f);
                if let Some(any) = any {
                    pairs(subtree, any, f);
                }
                if &**method == "GET" {
                    if let Some(head) = methods.method("HEAD") {
                        pairs(subtree, head, f);
                    }
                }
            }
            if let Some(any) = any {
                pairs(any, any, f);
            }
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

/// Calls `f(i, j)` for every route `i` ending under `a` and `j` ending under `b` whose paths
/// overlap, where `a` and `b` were reached by overlapping path prefixes of the same length.
/// Mirrors Go's `compareSegments`: equal literals meet, a literal meets a single wildcard, a
/// single wildcard never meets `{$}`, and a multi meets everything after it (but not the end
/// of the path, which is what a leaf at the same node needs).
fn pairs(a: &PathNode, b: &PathNode, f: &mut impl FnMut(usize, usize)) {
    if !a.reach.meets(b.reach) {
        return;
    }
    if let (Some(i), Some(j)) = (a.leaf, b.leaf) {
        f(i, j);
    }
    if let (Some(i), Some(j)) = (a.dollar, b.dollar) {
        f(i, j);
    }
    if let Some(i) = a.multi {
        visit_below(b, &mut |j| f(i, j));
    }
    if let Some(j) = b.multi {
        // `a.multi` against `b.multi` was paired just above.
        a.dollar.into_iter().for_each(|i| f(i, j));
        visit_children(a, &mut |i| f(i, j));
    }
    // Equal literals: scan the smaller side, probe the larger.
    let (small, large, swapped) = if a.literals.len() <= b.literals.len() {
        (a, b, false)
    } else {
        (b, a, true)
    };
    for (key, child) in small.literals.iter() {
        if let Some(other) = large.literals.get(key) {
            if swapped {
                pairs(other, child, f);
            } else {
                pairs(child, other, f);
            }
        }
    }
    if let Some(b_wild) = &b.wild {
        for child in a.literals.values() {
            pairs(child, b_wild, f);
        }
    }
    if let Some(a_wild) = &a.wild {
        for child in b.literals.values() {
            pairs(a_wild, child, f);
        }
        if let Some(b_wild) = &b.wild {
            pairs(a_wild, b_wild, f);
        }
    }
}

fn summarize(node: &mut PathNode) -> Reach {
    let mut reach = Reach {
        exact: u64::from(node.leaf.is_some()) | u64::from(node.dollar.is_some()) << 1,
        multi: node.multi.map(|_| 1),
    };
    let children = node.literals.values_mut().chain(node.wild.as_deref_mut());
    for child in children {
        let below = summarize(child);
        // One piece further down; bit 63 keeps meaning "63 or more".
        reach.exact |= below.exact << 1 | below.exact & 1 << 63;
        if let Some(m) = below.multi {
            reach.multi = Some(reach.multi.map_or(m + 1, |r| r.min(m + 1)).min(63));
        }
    }
    node.reach = reach;
    reach
}

// === impl Reach ===

impl Reach {
    /// Whether some number of pieces is matched below both: a necessary condition for two
    /// subtrees to hold an overlapping pair.
    fn meets(self, other: Reach) -> bool {
        let multi_meets = |multi: Option<u32>, exact: u64| multi.is_some_and(|m| exact >> m != 0);
        self.exact & other.exact != 0
            || (self.multi.is_some() && other.multi.is_some())
            || multi_meets(self.multi, other.exact)
            || multi_meets(other.multi, self.exact)
    }
}

/// Every route that a multi wildcard at `node` overlaps: all below it but its leaf.
fn visit_below(node: &PathNode, f: &mut impl FnMut(usize)) {
    for route in [node.dollar, node.multi].into_iter().flatten() {
        f(route);
    }
    visit_children(node, f);
}

fn visit_children(node: &PathNode, f: &mut impl FnMut(usize)) {
    for child in node.literals.values() {
        visit_all(child, f);
    }
    if let Some(wild) = &node.wild {
        visit_all(wild, f);
    }
}

fn visit_all(node: &PathNode, f: &mut impl FnMut(usize)) {
    node.leaf.into_iter().for_each(&mut *f);
    visit_below(node, f);
}

/// Takes `slot` for `idx`, or returns its holder.
fn claim(slot: &mut Option<usize>, idx: usize) -> Option<usize> {
    match slot {
        Some(holder) => Some(*holder),
        None => {
            *slot = Some(idx);
            None
        }
    }
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

    fn len(&self) -> usize {
        match self {
            Children::Listed(list) => list.len(),
            Children::Hashed(map) => map.len(),
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

    fn iter(&self) -> impl Iterator<Item = (&[u8], &PathNode)> {
        let (listed, hashed) = match self {
            Children::Listed(list) => (Some(list.iter()), None),
            Children::Hashed(map) => (None, Some(map.iter())),
        };
        let listed = listed.into_iter().flatten().map(|(k, n)| (&**k, n));
        let hashed = hashed.into_iter().flatten().map(|(k, n)| (&**k, n));
        listed.chain(hashed)
    }

    fn values(&self) -> impl Iterator<Item = &PathNode> {
        self.iter().map(|(_, node)| node)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut PathNode> {
        let (listed, hashed) = match self {
            Children::Listed(list) => (Some(list.iter_mut()), None),
            Children::Hashed(map) => (None, Some(map.values_mut())),
        };
        let listed = listed.into_iter().flatten().map(|(_, n)| n);
        listed.chain(hashed.into_iter().flatten())
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
