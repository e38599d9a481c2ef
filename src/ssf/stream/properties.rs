//! What a stream configuration (SSF 1.0 §8.1.1) says, read leniently: its delivery method and
//! endpoint (the drafts' `delivery_method` and `url` too), its events, which of a receiver's
//! streams is stepguard's, and whether it differs from what stepguard needs.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{EVENTS, Wanted};
use crate::ssf::discovery::{POLL, PUSH};

/// Whether the stream's delivery or requested events differ from what stepguard needs. An
/// `authorization_header` the transmitter does not echo back cannot be compared.
pub(super) fn differs(current: &Value, wanted: &Wanted) -> bool {
    let (method, endpoint) = delivery(current);
    let authorization = current
        .pointer("/delivery/authorization_header")
        .and_then(Value::as_str);
    let push_differs = wanted.method == PUSH
        && (endpoint != Some(wanted.endpoint.as_str())
            || authorization.is_some_and(|a| Some(a) != wanted.authorization.as_deref()));
    let requested: BTreeSet<&str> = strings(current.get("events_requested")).collect();
    method != Some(wanted.method) || push_differs || requested != BTreeSet::from(EVENTS)
}

/// Which of the receiver's streams is stepguard's.
pub(super) enum Pick<'a> {
    None,
    One(&'a Value),
    /// Several, none delivering the wanted way.
    Ambiguous(usize),
}

/// The stream delivering the wanted way (push: to the wanted endpoint), else the only one.
pub(super) fn pick<'a>(streams: &'a [Value], wanted: &Wanted) -> Pick<'a> {
    let delivers = |s: &Value| match delivery(s) {
        (Some(method), endpoint) if method == wanted.method => {
            method == POLL || endpoint == Some(wanted.endpoint.as_str())
        }
        _ => false,
    };
    match (streams.iter().find(|s| delivers(s)), streams) {
        (Some(stream), _) => Pick::One(stream),
        (None, []) => Pick::None,
        (None, [only]) => Pick::One(only),
        (None, many) => Pick::Ambiguous(many.len()),
    }
}

/// A stream's delivery method and endpoint (SSF 1.0 names; the drafts' `delivery_method` and
/// `url` too).
pub(super) fn delivery(stream: &Value) -> (Option<&str>, Option<&str>) {
    let field = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| stream.get("delivery")?.get(n)?.as_str())
    };
    (
        field(["method", "delivery_method"]),
        field(["endpoint_url", "url"]),
    )
}

/// The events stepguard acts on missing from `events_delivered` (none when it is absent).
pub(super) fn undelivered(stream: &Value) -> Vec<String> {
    let Some(delivered) = stream.get("events_delivered") else {
        return Vec::new();
    };
    let delivered: BTreeSet<&str> = strings(Some(delivered)).collect();
    EVENTS
        .iter()
        .filter(|e| !delivered.contains(*e))
        .map(|e| e.to_string())
        .collect()
}

/// The strings of a string or an array of strings.
pub(super) fn strings(value: Option<&Value>) -> impl Iterator<Item = &str> {
    let (one, many) = match value {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(list)) => (None, Some(list.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}

/// `endpoint` with the `stream_id` query parameter.
pub(super) fn with_stream_id(endpoint: &str, stream_id: &str) -> Result<String, String> {
    let mut url = url::Url::parse(endpoint).map_err(|e| e.to_string())?;
    url.query_pairs_mut().append_pair("stream_id", stream_id);
    Ok(url.to_string())
}
