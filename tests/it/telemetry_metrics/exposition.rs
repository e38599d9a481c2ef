//! A strict parser for the Prometheus text exposition format (version 0.0.4): HELP/TYPE/sample
//! lines, label syntax, grouping, histogram bucket/sum/count consistency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

fn metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn float(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` → labels, and the rest of the line.
fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                '\n' => return Err("newline in label value".into()),
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = &rest[end..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or }".into());
        }
    }
}

pub fn family_of(name: &str, families: &BTreeMap<String, Family>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families
                .get(base)
                .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
        {
            return base.to_string();
        }
    }
    name.to_string()
}

pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen = BTreeSet::new();
    let mut switch = |name: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(name) {
            if let Some(previous) = current.take() {
                done.insert(previous);
            }
            if done.contains(name) {
                return Err(format!("family {name} is not contiguous"));
            }
            *current = Some(name.to_string());
        }
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        let err = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if !metric_name(name) {
                return Err(err("bad HELP name".into()));
            }
            switch(name, &mut current).map_err(err)?;
            let f = families.entry(name.into()).or_default();
            if f.help.replace(help.to_string()).is_some() {
                return Err(err("second HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| err("bad TYPE".into()))?;
            if !metric_name(name)
                || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
            {
                return Err(err("bad TYPE".into()));
            }
            switch(name, &mut current).map_err(err)?;
            let f = families.entry(name.into()).or_default();
            if !f.kind.is_empty() || !f.samples.is_empty() {
                return Err(err("TYPE repeated or after samples".into()));
            }
            f.kind = kind.into();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !metric_name(name) {
            return Err(err("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before value".into()))?
            .split(' ');
        let value = float(fields.next().unwrap_or_default()).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        if !seen.insert((name.to_string(), labels.clone())) {
            return Err(err("duplicate sample".into()));
        }
        let family = family_of(name, &families);
        switch(&family, &mut current).map_err(err)?;
        let f = families.entry(family).or_default();
        if f.kind.is_empty() {
            f.kind = "untyped".into();
        }
        if f.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative counter".into()));
        }
        f.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    for (name, f) in &families {
        if f.kind == "histogram" {
            check_histogram(name, f)?;
        }
    }
    Ok(families)
}

type Labels = BTreeMap<String, String>;
/// One histogram series: `(le, count)` buckets, `_sum`, `_count`.
type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);

/// Per label set: buckets cumulative in `le`, a `+Inf` bucket equal to `_count`, a `_sum`.
pub fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    let mut series: BTreeMap<Labels, Series> = BTreeMap::new();
    for s in &f.samples {
        let mut key = s.labels.clone();
        let le = key.remove("le");
        let entry = series.entry(key).or_default();
        match s.name.strip_prefix(name) {
            Some("_bucket") => {
                let le = float(&le.ok_or(format!("{name}: bucket without le"))?)?;
                entry.0.push((le, s.value));
            }
            Some("_sum") => entry.1 = Some(s.value),
            Some("_count") => entry.2 = Some(s.value),
            _ => return Err(format!("{name}: stray sample {}", s.name)),
        }
    }
    for (labels, (mut buckets, sum, count)) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = count.ok_or(format!("{name}{labels:?}: no _count"))?;
        sum.ok_or(format!("{name}{labels:?}: no _sum"))?;
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{name}{labels:?}: buckets not cumulative"));
        }
        match buckets.last() {
            Some((le, n)) if le.is_infinite() && *n == count => {}
            _ => return Err(format!("{name}{labels:?}: +Inf bucket != _count")),
        }
    }
    Ok(())
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total A thing\n# TYPE a_total counter\na_total{x=\"1\",y=\"a\\\"b\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let f = parse(good).unwrap();
    assert_eq!(f["a_total"].samples[0].labels["y"], "a\"b");
    assert_eq!(f["h"].samples.len(), 4);
    for bad in [
        "a_total{x=1} 3\n",
        "a_total{x=\"1\" 3\n",
        "a_total{1x=\"1\"} 3\n",
        "a_total 3 4 5\n",
        "a_total three\n",
        "# TYPE a counter\na -1\n",
        "# TYPE a wat\n",
        "a 1\nb 1\na{x=\"2\"} 1\n",
        "a 1\na 1\n",
        "# TYPE h histogram\nh_bucket{le=\"0.1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
