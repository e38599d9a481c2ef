//! The module graph has no circles: each top-level module (`src/<name>.rs` with `src/<name>/`)
//! may use modules below it, never one that uses it back; likewise sibling submodules inside
//! one module (`telemetry/metrics.rs` and `telemetry/traces.rs`). Read from the source: every
//! `crate::<module>` path (and `super::<sibling>` in a submodule) outside comments and tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn the_top_level_modules_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = children(&src);
    let mut graph = Graph::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap_or(&file);
        let Some(from) = first_component(relative) else {
            continue;
        };
        if !modules.contains(&from) || skipped(relative) {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(from.clone()).or_default();
        for to in references(&text, "crate::") {
            if to != from && modules.contains(&to) {
                edges.insert(to);
            }
        }
    }
    assert_eq!(
        circle(&graph),
        None,
        "import circle between top-level modules"
    );
}

#[test]
fn the_submodules_of_each_module_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for module in children(&src) {
        let dir = src.join(&module);
        if !dir.is_dir() {
            continue;
        }
        let siblings = children(&dir);
        let mut graph = Graph::new();
        for file in rust_files(&dir) {
            let relative = file.strip_prefix(&dir).unwrap_or(&file);
            let Some(from) = first_component(relative) else {
                continue;
            };
            if skipped(relative) {
                continue;
            }
            let text = code(&std::fs::read_to_string(&file).unwrap());
            let direct = relative.components().count() == 1;
            let mut to = references(&text, &format!("crate::{module}::"));
            if direct {
                to.extend(references(&text, "super::"));
            }
            let edges = graph.entry(from.clone()).or_default();
            edges.extend(
                to.into_iter()
                    .filter(|to| *to != from && siblings.contains(to)),
            );
        }
        assert_eq!(circle(&graph), None, "import circle inside `{module}`");
    }
}

#[test]
fn a_circle_is_named() {
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(from.into()).or_default().insert(to.to_string());
    }
    assert_eq!(circle(&graph).as_deref(), Some("a -> b -> c -> a"));
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(circle(&graph), None);
    let text = code("use crate::{a, b::{C, d::E}, f};\n// crate::g\nlet x = crate::h::i;");
    let expected: BTreeSet<String> = ["a", "b", "f", "h"].map(String::from).into();
    assert_eq!(references(&text, "crate::"), expected);
}

/// Test code and the test scaffolding may use anything.
fn skipped(relative: &Path) -> bool {
    let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name == "testkit.rs"
        || name == "architecture_tests.rs"
        || relative.components().any(|c| c.as_os_str() == "tests")
}

/// The module names of a directory: `x.rs` and `x/`, without `lib`, `main` and `mod`.
fn children(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            match name.strip_suffix(".rs") {
                Some(stem) => Some(stem.to_string()),
                None => e.path().is_dir().then_some(name),
            }
        })
        .filter(|n| !["lib", "main", "mod"].contains(&n.as_str()))
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// `x` of `x.rs` or `x/…`.
fn first_component(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.strip_suffix(".rs").unwrap_or(first).to_string())
}

/// The source without comments and without an inline `mod tests { … }`.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests {")
        .map_or(text, |at| &text[..at]);
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment after every `prefix` (`crate::x`, `crate::{x, y::z}`).
fn references(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        rest = &rest[at + prefix.len()..];
        if preceded {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group));
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The first segment of each path in a `{…}` group, up to its closing brace.
fn group_heads(group: &str) -> Vec<String> {
    let (mut out, mut depth, mut head, mut expecting) = (Vec::new(), 0, String::new(), true);
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                if !head.is_empty() {
                    out.push(std::mem::take(&mut head));
                }
                expecting = true;
            }
            c if depth == 0 && expecting && (c.is_alphanumeric() || c == '_') => head.push(c),
            _ if depth == 0 && expecting && !head.is_empty() => {
                out.push(std::mem::take(&mut head));
                expecting = false;
            }
            _ => {}
        }
    }
    if !head.is_empty() {
        out.push(head);
    }
    out
}

/// A circle in the graph, written `a -> b -> a`, if there is one.
fn circle(graph: &Graph) -> Option<String> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut names = path[at..].to_vec();
            names.push(node.to_string());
            return Some(names.join(" -> "));
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
