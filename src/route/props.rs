//! Property tests for the classifier over generated tables and requests: no request is
//! classified `Public` when some action's matcher matches its normalized form, and none is
//! classified `Sensitive` by the table when no matcher does. "Matches" is decided by the simple,
//! independent reference matcher below, over requests written the ways an attacker varies them:
//! `//` and trailing `/`, percent-encoded letters, host case, a trailing-dot host and a port,
//! `HEAD` for `GET`, lower-case methods and method-override headers.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::request::RawRequest;
use crate::route::config::ActionConfig;

const LITERALS: [&str; 6] = ["v1", "accounts", "transfers", "admin", "Users", "a"];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
const HOSTS: [&str; 3] = ["example.com", "api.example.com", "pay.api.example.com"];

/// A generated action matcher.
#[derive(Debug, Clone)]
struct Rule {
    methods: Vec<String>,
    host: Option<String>,
    /// `Some(literal)` or `None` for a `{param}`.
    segments: Vec<Option<String>>,
    rest: bool,
}

impl Rule {
    fn template(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.segments.iter().enumerate() {
            out.push('/');
            match s {
                Some(l) => out.push_str(l),
                None => out.push_str(&format!("{{p{i}}}")),
            }
        }
        if self.rest {
            out.push_str("/**");
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    fn config(&self, i: usize) -> ActionConfig {
        let mut matcher = json!({"methods": self.methods, "path": self.template()});
        if let Some(host) = &self.host {
            matcher["host"] = json!(host);
        }
        serde_json::from_value(json!({"name": format!("a{i}"), "match": matcher, "risk": "high"}))
            .unwrap()
    }

    /// The reference: does this rule match a request in normal form?
    fn matches(&self, method: &str, host: &str, path: &[String]) -> bool {
        let method_ok = self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m == method || (method == "HEAD" && m == "GET"));
        let host_ok = match self.host.as_deref().map(reference_host) {
            None => true,
            Some(pattern) => match pattern.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == pattern,
            },
        };
        let length_ok = if self.rest {
            path.len() >= self.segments.len()
        } else {
            path.len() == self.segments.len()
        };
        let segments_ok = self
            .segments
            .iter()
            .zip(path)
            .all(|(s, p)| s.as_ref().is_none_or(|l| l == p));
        method_ok && host_ok && length_ok && segments_ok
    }
}

/// A host in normal form: no port, no trailing dot, lower case.
fn reference_host(host: &str) -> String {
    let host = host.split(':').next().unwrap_or_default();
    host.trim_end_matches('.').to_lowercase()
}

/// A generated request: what it means and how it is written.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    override_method: Option<String>,
    host: String,
    segments: Vec<String>,
    /// Per segment, per character: written percent-encoded (upper- or lower-case hex).
    encode: Vec<Vec<u8>>,
    double_slash: Vec<bool>,
    trailing_slash: bool,
    query: bool,
}

impl Req {
    fn path(&self) -> String {
        let mut out = String::new();
        for (i, segment) in self.segments.iter().enumerate() {
            out.push_str(if self.double_slash[i] { "//" } else { "/" });
            for (j, c) in segment.chars().enumerate() {
                match self.encode[i].get(j).copied().unwrap_or(0) {
                    1 => out.push_str(&format!("%{:02X}", c as u32)),
                    2 => out.push_str(&format!("%{:02x}", c as u32)),
                    _ => out.push(c),
                }
            }
        }
        if self.trailing_slash || out.is_empty() {
            out.push('/');
        }
        if self.query {
            out.push_str("?x=%2F..%2F");
        }
        out
    }

    fn raw(&self) -> RawRequest {
        let mut raw = RawRequest {
            method: self.method.clone(),
            host: self.host.clone(),
            path: self.path(),
            ..Default::default()
        };
        if let Some(m) = &self.override_method {
            raw.headers
                .insert("x-http-method-override".into(), m.clone());
        }
        raw
    }

    /// The methods the request may be acted on under, upper case.
    fn methods(&self) -> Vec<String> {
        let mut methods = vec![self.method.to_uppercase()];
        methods.extend(self.override_method.iter().map(|m| m.to_uppercase()));
        methods
    }
}

fn literal() -> impl Strategy<Value = String> {
    prop::sample::select(LITERALS.to_vec()).prop_map(str::to_string)
}

fn rule() -> impl Strategy<Value = Rule> {
    let host = prop_oneof![
        Just(None),
        prop::sample::select(HOSTS.to_vec()).prop_map(|h| Some(h.to_string())),
        Just(Some("*.example.com".to_string())),
        Just(Some("API.Example.COM.".to_string())),
    ];
    (
        prop::sample::subsequence(METHODS.to_vec(), 0..3),
        host,
        prop::collection::vec(prop::option::weighted(0.7, literal()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(methods, host, segments, rest)| Rule {
            methods: methods.into_iter().map(str::to_string).collect(),
            host,
            segments,
            rest,
        })
}

fn req() -> impl Strategy<Value = Req> {
    let method = prop::sample::select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "get", "head", "post",
    ]);
    let host = (
        prop::sample::select(vec![
            "example.com",
            "api.example.com",
            "pay.api.example.com",
            "API.EXAMPLE.COM",
            "evilexample.com",
            "example.com.evil",
        ]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(h, dot, port)| {
            format!(
                "{h}{}{}",
                if dot { "." } else { "" },
                if port { ":8443" } else { "" }
            )
        });
    let segment = prop_oneof![literal(), Just("42".to_string()), Just("A".to_string())];
    (
        method,
        prop::option::weighted(0.2, prop::sample::select(vec!["DELETE", "put", "GET"])),
        host,
        prop::collection::vec(
            (
                segment,
                prop::collection::vec(0u8..3, 0..9),
                prop::bool::weighted(0.2),
            ),
            0..5,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(method, override_method, host, parts, trailing_slash, query)| Req {
                method: method.into(),
                override_method: override_method.map(str::to_string),
                host,
                segments: parts.iter().map(|(s, ..)| s.clone()).collect(),
                encode: parts.iter().map(|(_, e, _)| e.clone()).collect(),
                double_slash: parts.iter().map(|(.., d)| *d).collect(),
                trailing_slash,
                query,
            },
        )
}

fn reference(rules: &[Rule], r: &Req) -> bool {
    let host = reference_host(&r.host);
    r.methods()
        .iter()
        .any(|m| rules.iter().any(|rule| rule.matches(m, &host, &r.segments)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn sensitive_exactly_when_a_matcher_matches_the_normalized_request(
        rules in prop::collection::vec(rule(), 1..5),
        r in req(),
    ) {
        let configs: Vec<ActionConfig> = rules.iter().enumerate().map(|(i, r)| r.config(i)).collect();
        let table = RouteTable::new(&configs);
        let req = AuthzRequest::new(r.raw(), 16).unwrap();
        let sensitive = matches!(table.classify(&req), Ok(Classification::Sensitive { .. }));
        prop_assert_eq!(
            sensitive,
            reference(&rules, &r),
            "{} {} {} (override {:?}) against {:?}",
            r.method, r.host, r.path(), r.override_method, rules
        );
    }
}
