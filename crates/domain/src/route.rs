//! Routes of an API: which paths and methods it serves, and what each route changes (prefix
//! stripping, timeout, retries, an extra rate window, cost). The rules here are shared by the
//! control plane (validation) and the data plane (a [`RouteTable`] compiled into the snapshot).
//!
//! Matching: a route's path is literal segments and `{name}` parameters (one segment each);
//! `prefix` routes also match every path below theirs (at a segment boundary: `/users` matches
//! `/users`, `/users/` and `/users/7`, never `/usersx`), `exact` routes only their own. Of the
//! routes whose path matches, the first in rank order whose methods accept the request wins; rank
//! is `priority` (higher first), then the longer literal path, then the older route.
//!
//! The table is compiled once per snapshot into `matchit` routers: routes that can match a common
//! path go into different routers ("layers"), so each router answers with the one route of its
//! layer that matches, and a request asks each layer once — no pattern is tried one by one.

use std::fmt;
use std::time::Duration;

/// Longest route path accepted.
pub const MAX_PATH_LEN: usize = 200;
/// Most parameters in one path.
const MAX_PARAMS: usize = 16;

/// How a route's path matches a request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// The path and every path below it.
    Prefix,
    /// The path only.
    Exact,
}

impl MatchKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "prefix" => Ok(Self::Prefix),
            "exact" => Ok(Self::Exact),
            other => Err(format!(
                "must be \"prefix\" or \"exact\", not \"{}\"",
                other.escape_default()
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Exact => "exact",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param,
}

/// A validated route path: starts with `/`, no empty segments, no trailing slash (but the root),
/// `{name}` parameters as whole segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath {
    text: Box<str>,
    segments: Vec<Segment>,
}

impl RoutePath {
    /// Parses a path as a tenant wrote it; a trailing `/` is dropped (`/users/` is `/users`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err("must start with /".into());
        }
        if s.len() > MAX_PATH_LEN {
            return Err(format!("must be at most {MAX_PATH_LEN} characters"));
        }
        if let Some(c) = s.chars().find(|c| matches!(c, '?' | '#' | '*')) {
            return Err(format!(
                "must not contain {c:?} (a path only: no query, no wildcard; use match \"prefix\")"
            ));
        }
        // Requests are matched as they arrive, percent-encoded: a route written with a character
        // a request path cannot carry as such would never match.
        if let Some(c) = s.chars().find(|c| !is_path_char(*c)) {
            return Err(format!(
                "must not contain {c:?}: write the path as requests send it, percent-encoded \
                 (a space is %20, é is %C3%A9)"
            ));
        }
        let trimmed = if s.len() > 1 {
            s.strip_suffix('/').unwrap_or(s)
        } else {
            s
        };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        if trimmed != "/" {
            for seg in trimmed[1..].split('/') {
                if seg.is_empty() {
                    return Err("must not contain an empty segment (//)".into());
                }
                if let Some(name) = seg.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                    let valid = name
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && name.len() <= 32
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(format!(
                            "parameter {{{name}}} needs a name of letters, digits and _ (at most 32)"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!("names the parameter {{{name}}} twice"));
                    }
                    names.push(name);
                    segments.push(Segment::Param);
                } else if seg.contains(['{', '}']) {
                    return Err(format!(
                        "segment \"{seg}\": a parameter is a whole segment, like /users/{{id}}"
                    ));
                } else {
                    segments.push(Segment::Literal(seg.into()));
                }
            }
        }
        if names.len() > MAX_PARAMS {
            return Err(format!("must have at most {MAX_PARAMS} parameters"));
        }
        Ok(Self {
            text: trimmed.into(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path up to its first parameter (`/users` of `/users/{id}/orders`; empty when it starts
    /// with one, and for the root): what `strip_prefix` removes.
    pub fn literal_prefix(&self) -> &str {
        let mut end = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => end += 1 + l.len(),
                Segment::Param => break,
            }
        }
        &self.text[..end]
    }

    /// Bytes of its literal segments (the tie-break between routes of one priority).
    pub fn literal_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => 1 + l.len(),
                Segment::Param => 0,
            })
            .sum()
    }

    /// The `matchit` pattern of the path itself (parameters renamed `p0`, `p1`…: names are the
    /// tenant's, and matchit refuses some that our rule allows).
    fn pattern(&self) -> String {
        if self.segments.is_empty() {
            return "/".into();
        }
        let mut out = String::with_capacity(self.text.len() + 8);
        for (i, seg) in self.segments.iter().enumerate() {
            out.push('/');
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param => {
                    out.push_str("{p");
                    out.push_str(&i.to_string());
                    out.push('}');
                }
            }
        }
        out
    }
}

/// What a request path carries unencoded (RFC 3986 `pchar` and `/`), and the braces of
/// `{param}` segments.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || (c.is_ascii() && "/-._~%!$&'()+,;=:@{}".contains(c))
}

impl fmt::Display for RoutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The methods a route accepts, as a set (empty: any method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Methods(u16);

/// The methods a route may name, in the order `Allow` lists them.
pub const METHOD_NAMES: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];
const GET: u16 = 1;
const HEAD: u16 = 2;

impl Methods {
    pub const ANY: Self = Self(0);

    /// Parses a list of method names (any case); `bad method` names the one it cannot accept.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut bits = 0;
        for name in names {
            let name = name.as_ref().trim();
            let Some(i) = METHOD_NAMES
                .iter()
                .position(|m| m.eq_ignore_ascii_case(name))
            else {
                return Err(format!(
                    "\"{}\" is not a method a route can name (one of {})",
                    name.escape_default(),
                    METHOD_NAMES.join(", ")
                ));
            };
            bits |= 1 << i;
        }
        Ok(Self(bits))
    }

    /// From the stored form (names joined by commas; empty for any).
    pub fn from_stored(s: &str) -> Self {
        let names: Vec<&str> = s.split(',').filter(|n| !n.trim().is_empty()).collect();
        Self::parse(&names).unwrap_or(Self::ANY)
    }

    pub fn is_any(self) -> bool {
        self.0 == 0
    }

    /// The stored form: upper-case names joined by commas, in `Allow` order.
    pub fn to_stored(self) -> String {
        self.names().collect::<Vec<_>>().join(",")
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        METHOD_NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, m)| *m)
    }

    /// The set as matched: `HEAD` wherever `GET` is.
    fn effective(self) -> u16 {
        if self.0 & GET != 0 {
            self.0 | HEAD
        } else {
            self.0
        }
    }

    /// Whether a request of `method` (as received, case-sensitive as RFC 9110 says) is accepted.
    pub fn accepts(self, method: &str) -> bool {
        if self.0 == 0 {
            return true;
        }
        METHOD_NAMES
            .iter()
            .position(|m| *m == method)
            .is_some_and(|i| self.effective() & (1 << i) != 0)
    }

    fn overlaps(self, other: Self) -> bool {
        self.0 == 0 || other.0 == 0 || self.effective() & other.effective() != 0
    }
}

impl fmt::Display for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            return f.write_str("any");
        }
        f.write_str(&self.names().collect::<Vec<_>>().join(", "))
    }
}

/// A route's own rate window, per (route, key or client), on top of the plan's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimit {
    pub requests_per_minute: u64,
    pub burst: u64,
    pub requests_per_day: Option<u64>,
}

impl RouteLimit {
    /// The window as the limiter takes it (a plan's shape, without a month).
    pub fn limits(self) -> crate::plan::PlanLimits {
        crate::plan::PlanLimits {
            requests_per_minute: self.requests_per_minute,
            burst: self.burst,
            requests_per_day: self.requests_per_day,
            requests_per_month: None,
        }
    }
}

/// One route as the data plane uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub id: i64,
    pub path: RoutePath,
    pub kind: MatchKind,
    pub methods: Methods,
    pub priority: i32,
    pub strip_prefix: bool,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub rate_limit: Option<RouteLimit>,
    pub cost: u32,
}

impl Route {
    /// Whether some request path matches both routes (at compile time: which layer each goes in).
    fn overlaps_path(&self, other: &Self) -> bool {
        let (a, b) = (&self.path.segments, &other.path.segments);
        let compatible = a.iter().zip(b).all(|pair| match pair {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            _ => true,
        });
        if !compatible {
            return false;
        }
        match a.len().cmp(&b.len()) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => self.kind == MatchKind::Prefix,
            std::cmp::Ordering::Greater => other.kind == MatchKind::Prefix,
        }
    }

    /// The part of `rest` (the request's path below the API) forwarded upstream.
    pub fn forwarded_rest<'p>(&self, rest: &'p str) -> &'p str {
        if self.strip_prefix {
            rest.get(self.path.literal_prefix().len()..).unwrap_or("")
        } else {
            rest
        }
    }

    fn patterns(&self) -> Vec<String> {
        let own = self.path.pattern();
        match self.kind {
            MatchKind::Exact => vec![own],
            MatchKind::Prefix if own == "/" => vec![own, "/{*rest}".into()],
            MatchKind::Prefix => vec![format!("{own}/"), format!("{own}/{{*rest}}"), own],
        }
    }
}

/// Most retries a route may ask for.
pub const MAX_RETRIES: i64 = 5;
/// Highest cost of one request.
pub const MAX_COST: i64 = 1_000;
/// Priorities range over ±this.
pub const MAX_PRIORITY: i64 = 1_000_000;

/// A route to store, validated (see `crate::validate::route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoute {
    pub path: RoutePath,
    pub kind: MatchKind,
    pub methods: Methods,
    pub priority: i32,
    pub strip_prefix: bool,
    pub timeout_ms: Option<i32>,
    pub retries: Option<i32>,
    pub rate_limit: Option<RouteLimit>,
    pub cost: i32,
}

impl NewRoute {
    /// A route of `path` and `kind` taking `methods`, every other field at its default.
    pub fn new(path: RoutePath, kind: MatchKind, methods: Methods) -> Self {
        Self {
            path,
            kind,
            methods,
            priority: 0,
            strip_prefix: false,
            timeout_ms: None,
            retries: None,
            rate_limit: None,
            cost: 1,
        }
    }

    /// Whether it takes requests `other` already takes (same path, match and a common method).
    pub fn duplicates(&self, other: &Self) -> bool {
        self.path == other.path && self.kind == other.kind && self.methods.overlaps(other.methods)
    }
}

/// What a request's method and path find among an API's routes.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'t> {
    /// The route to serve it (its index in [`RouteTable::get`]).
    Found(u32, &'t Route),
    /// No route's path matches.
    NoPath,
    /// Routes match the path, none with this method: what they accept, for `Allow`.
    WrongMethod(String),
}

/// An API's routes, compiled for matching (see the module docs).
#[derive(Debug, Default)]
pub struct RouteTable {
    /// In rank order: a lower index wins.
    routes: Vec<Route>,
    layers: Vec<matchit::Router<u32>>,
}

impl RouteTable {
    /// Compiles `routes` (any order; ids tell the older of two) into a table.
    pub fn compile(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(b.path.literal_len().cmp(&a.path.literal_len()))
                .then(a.id.cmp(&b.id))
        });
        let mut layers: Vec<(Vec<usize>, matchit::Router<u32>)> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            let placed = layers.iter_mut().any(|(members, router)| {
                if members.iter().any(|&m| routes[m].overlaps_path(route)) {
                    return false;
                }
                let mut trial = router.clone();
                if route
                    .patterns()
                    .iter()
                    .all(|p| trial.insert(p.as_str(), idx).is_ok())
                {
                    *router = trial;
                    members.push(i);
                    true
                } else {
                    false
                }
            });
            if !placed {
                let mut fresh = matchit::Router::new();
                let ok = route
                    .patterns()
                    .iter()
                    .all(|p| fresh.insert(p.as_str(), idx).is_ok());
                if ok {
                    layers.push((vec![i], fresh));
                } else {
                    tracing::warn!(route_id = route.id, path = %route.path, "route not compiled");
                }
            }
        }
        Self {
            routes,
            layers: layers.into_iter().map(|(_, r)| r).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn get(&self, index: u32) -> Option<&Route> {
        self.routes.get(index as usize)
    }

    /// The routes in rank order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route a request of `method` to `path` (below the API; empty means `/`) takes.
    pub fn find(&self, method: &str, path: &str) -> RouteMatch<'_> {
        let path = if path.is_empty() { "/" } else { path };
        let mut best: Option<u32> = None;
        let mut allowed = Methods::ANY;
        let mut path_matched = false;
        for layer in &self.layers {
            let Ok(m) = layer.at(path) else { continue };
            let idx = *m.value;
            let Some(route) = self.get(idx) else { continue };
            path_matched = true;
            if route.methods.accepts(method) {
                if best.is_none_or(|b| idx < b) {
                    best = Some(idx);
                }
            } else {
                allowed.0 |= route.methods.effective();
            }
        }
        match best {
            Some(idx) => RouteMatch::Found(idx, &self.routes[idx as usize]),
            None if path_matched => {
                RouteMatch::WrongMethod(allowed.names().collect::<Vec<_>>().join(", "))
            }
            None => RouteMatch::NoPath,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: i64, path: &str, kind: MatchKind, methods: &[&str], priority: i32) -> Route {
        Route {
            id,
            path: RoutePath::parse(path).unwrap(),
            kind,
            methods: Methods::parse(methods).unwrap(),
            priority,
            strip_prefix: false,
            timeout: None,
            retries: None,
            rate_limit: None,
            cost: 1,
        }
    }

    fn found(t: &RouteTable, method: &str, path: &str) -> Option<i64> {
        match t.find(method, path) {
            RouteMatch::Found(_, r) => Some(r.id),
            _ => None,
        }
    }

    #[test]
    fn paths_are_checked_and_normalised() {
        assert_eq!(RoutePath::parse("/users/").unwrap().as_str(), "/users");
        assert_eq!(RoutePath::parse("/").unwrap().as_str(), "/");
        assert_eq!(
            RoutePath::parse("/caf%C3%A9").unwrap().as_str(),
            "/caf%C3%A9"
        );
        for bad in [
            "users", "/a//b", "/a?b", "/a/{}", "/a/{1x}", "/a/x{id}", "/{a}/{a}", "/a b", "/*",
            "/café", "/a\"b", "/a\\b",
        ] {
            assert!(RoutePath::parse(bad).is_err(), "{bad} accepted");
        }
        let p = RoutePath::parse("/users/{id}/orders").unwrap();
        assert_eq!(p.literal_prefix(), "/users");
        assert_eq!(p.literal_len(), "/users".len() + "/orders".len());
        assert_eq!(RoutePath::parse("/{id}").unwrap().literal_prefix(), "");
    }

    #[test]
    fn prefix_matches_at_segment_boundaries_and_exact_only_itself() {
        let t = RouteTable::compile(vec![
            route(1, "/users", MatchKind::Prefix, &[], 0),
            route(2, "/health", MatchKind::Exact, &[], 0),
        ]);
        for p in ["/users", "/users/", "/users/7", "/users/7/orders"] {
            assert_eq!(found(&t, "GET", p), Some(1), "{p}");
        }
        assert_eq!(t.find("GET", "/usersx"), RouteMatch::NoPath);
        assert_eq!(found(&t, "GET", "/health"), Some(2));
        assert_eq!(t.find("GET", "/health/x"), RouteMatch::NoPath);
        assert_eq!(t.find("GET", "/health/"), RouteMatch::NoPath);
    }

    #[test]
    fn params_match_one_segment() {
        let t = RouteTable::compile(vec![route(
            1,
            "/users/{id}/orders",
            MatchKind::Exact,
            &[],
            0,
        )]);
        assert_eq!(found(&t, "GET", "/users/42/orders"), Some(1));
        assert_eq!(t.find("GET", "/users/4/2/orders"), RouteMatch::NoPath);
        assert_eq!(t.find("GET", "/users//orders"), RouteMatch::NoPath);
    }

    #[test]
    fn priority_then_literal_length_then_age() {
        let t = RouteTable::compile(vec![
            route(1, "/", MatchKind::Prefix, &[], 0),
            route(2, "/users", MatchKind::Prefix, &[], 0),
            route(3, "/users/{id}", MatchKind::Prefix, &[], 5),
            route(4, "/users/me", MatchKind::Exact, &[], 0),
            route(5, "/users/me", MatchKind::Exact, &["POST"], 0),
        ]);
        // Priority 5 beats the longer literal path.
        assert_eq!(found(&t, "GET", "/users/me"), Some(3));
        assert_eq!(found(&t, "GET", "/users"), Some(2));
        assert_eq!(found(&t, "GET", "/other"), Some(1));
        let t = RouteTable::compile(vec![
            route(9, "/a/{x}", MatchKind::Exact, &[], 0),
            route(8, "/a/{y}", MatchKind::Exact, &[], 0),
        ]);
        // Same priority and literal length: the older (lower id) route.
        assert_eq!(found(&t, "GET", "/a/b"), Some(8));
    }

    #[test]
    fn a_method_no_route_takes_is_405_with_what_they_do() {
        let t = RouteTable::compile(vec![
            route(1, "/items", MatchKind::Exact, &["GET"], 0),
            route(2, "/items", MatchKind::Prefix, &["POST", "DELETE"], 0),
        ]);
        assert_eq!(found(&t, "HEAD", "/items"), Some(1));
        assert_eq!(found(&t, "DELETE", "/items"), Some(2));
        assert_eq!(
            t.find("PUT", "/items"),
            RouteMatch::WrongMethod("GET, HEAD, POST, DELETE".into())
        );
        assert_eq!(
            t.find("get", "/items"),
            RouteMatch::WrongMethod("GET, HEAD, POST, DELETE".into())
        );
    }

    #[test]
    fn strip_prefix_forwards_what_follows_the_literal_prefix() {
        let mut r = route(1, "/v1/users/{id}", MatchKind::Prefix, &[], 0);
        r.strip_prefix = true;
        assert_eq!(r.forwarded_rest("/v1/users/7/x"), "/7/x");
        r.path = RoutePath::parse("/v1").unwrap();
        assert_eq!(r.forwarded_rest("/v1"), "");
    }

    #[test]
    fn a_hundred_routes_compile_into_few_layers() {
        let routes: Vec<Route> = (0..100)
            .map(|i| {
                route(
                    i,
                    &format!("/r{i}/{{id}}"),
                    MatchKind::Prefix,
                    &["GET"],
                    100 - i32::try_from(i).unwrap(),
                )
            })
            .collect();
        let t = RouteTable::compile(routes);
        assert_eq!(t.layers.len(), 1);
        assert_eq!(found(&t, "GET", "/r99/5/x"), Some(99));
    }

    #[test]
    fn duplicates_are_same_path_kind_and_a_common_method() {
        let new = |path: &str, kind, methods: &[&str]| {
            NewRoute::new(
                RoutePath::parse(path).unwrap(),
                kind,
                Methods::parse(methods).unwrap(),
            )
        };
        let a = new("/x", MatchKind::Exact, &["GET"]);
        assert!(a.duplicates(&new("/x/", MatchKind::Exact, &["HEAD"])));
        assert!(a.duplicates(&new("/x", MatchKind::Exact, &[])));
        assert!(!a.duplicates(&new("/x", MatchKind::Exact, &["POST"])));
        assert!(!a.duplicates(&new("/x", MatchKind::Prefix, &["GET"])));
    }
}
