//! OPA bundles: a `.tar.gz` holding `/.manifest` (`revision`, `roots`, `wasm`, `rego_version`),
//! `data.json` (or `data.yaml`) files merged into the data document at their directory's path,
//! and a `policy.wasm` module and/or `.rego` files. A bundle with a Wasm module is evaluated by
//! [`WasmPolicy`] (its `.rego` files, which `opa build -t wasm` ships beside it, are not needed);
//! one with only `.rego` files by [`RegoPolicy`].
//!
//! The archive is read in memory, never extracted. Entry names are relative to the bundle root:
//! one leading `/` (as `opa build` writes them) or `./` is accepted; `..`, `.` and empty
//! components, a second leading `/`, backslashes and drive prefixes are refused, as are links
//! and special files, entries over [`MAX_ENTRY_BYTES`] and bundles over [`MAX_BUNDLE_BYTES`]
//! uncompressed. Signatures (`.signatures.json`) are not verified; delta bundles are refused.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::rego::RegoPolicy;
use super::wasm::{Limits, WasmPolicy};
use super::{PolicyEngine, PolicyError, content_revision};

/// Largest file in a bundle, uncompressed.
pub const MAX_ENTRY_BYTES: u64 = 64 << 20;
pub use super::config::MAX_BUNDLE_BYTES;
/// Most entries (files and directories) in a bundle.
const MAX_ENTRIES: usize = 10_000;

/// A bundle read into memory.
#[derive(Debug)]
pub struct Bundle {
    revision: String,
    roots: Vec<String>,
    data: Value,
    wasm: Option<Vec<u8>>,
    rego: Vec<(String, String)>,
    rego_v0: bool,
}

/// `/.manifest`; unknown fields (`metadata`, …) are ignored, as OPA does.
#[derive(Debug, Default, Deserialize)]
struct Manifest {
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    roots: Option<Vec<String>>,
    #[serde(default)]
    wasm: Vec<WasmEntry>,
    #[serde(default)]
    rego_version: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct WasmEntry {
    module: String,
}

/// Reads the bundle at `path` and builds its engine.
pub fn load(
    path: &Path,
    entrypoint: &str,
    timeout: Duration,
) -> Result<Arc<dyn PolicyEngine>, PolicyError> {
    let named = |e: PolicyError| match e {
        PolicyError::Load(m) => PolicyError::Load(format!("bundle {}: {m}", path.display())),
        other => other,
    };
    let bytes = read_file(path).map_err(named)?;
    Bundle::read(&bytes)
        .and_then(|bundle| bundle.engine(entrypoint, timeout))
        .map_err(named)
}

/// Builds the engine of a bundle already in memory (downloaded from a bundle server).
pub fn load_bytes(
    tar_gz: &[u8],
    entrypoint: &str,
    timeout: Duration,
) -> Result<Arc<dyn PolicyEngine>, PolicyError> {
    if tar_gz.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(PolicyError::Load(format!(
            "{} bytes, over the {MAX_BUNDLE_BYTES}-byte limit",
            tar_gz.len()
        )));
    }
    Bundle::read(tar_gz).and_then(|bundle| bundle.engine(entrypoint, timeout))
}

fn read_file(path: &Path) -> Result<Vec<u8>, PolicyError> {
    let io = |e: std::io::Error| PolicyError::Load(e.to_string());
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_BUNDLE_BYTES {
        return Err(PolicyError::Load(format!(
            "{size} bytes, over the {MAX_BUNDLE_BYTES}-byte limit"
        )));
    }
    std::fs::read(path).map_err(io)
}

impl Bundle {
    /// Reads a bundle from the bytes of its `.tar.gz`.
    pub fn read(tar_gz: &[u8]) -> Result<Self, PolicyError> {
        Self::from_files(read_entries(tar_gz)?)
    }

    /// The manifest's `revision`, or a content hash (`sha256:…`) when it has none.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The manifest's `roots` (`[""]`, everything, when it names none).
    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// The merged data document.
    pub fn data(&self) -> &Value {
        &self.data
    }

    /// Whether the bundle holds a Wasm module (and is evaluated by [`WasmPolicy`]).
    pub fn has_wasm(&self) -> bool {
        self.wasm.is_some()
    }

    /// Builds the engine: Wasm when the bundle holds a module, else Rego.
    pub fn engine(
        self,
        entrypoint: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn PolicyEngine>, PolicyError> {
        if let Some(module) = &self.wasm {
            let policy = WasmPolicy::new(module, self.data, entrypoint, Limits::new(timeout))?;
            return Ok(Arc::new(policy.with_revision(self.revision)));
        }
        Ok(Arc::new(self.into_rego(entrypoint, timeout)?))
    }

    /// The bundle's Rego policy (its `.rego` files over its data; the Wasm module, if any, is
    /// ignored), with the bundle's revision.
    pub fn into_rego(self, entrypoint: &str, timeout: Duration) -> Result<RegoPolicy, PolicyError> {
        if self.rego.is_empty() {
            return Err(PolicyError::Load(
                "the bundle holds neither a Wasm module nor .rego files".into(),
            ));
        }
        let policy =
            RegoPolicy::from_modules(self.rego, &self.data, self.rego_v0, entrypoint, timeout)?;
        Ok(policy.with_revision(self.revision))
    }

    fn from_files(files: BTreeMap<String, Vec<u8>>) -> Result<Self, PolicyError> {
        let manifest: Manifest = match files.get(".manifest") {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| PolicyError::Load(format!(".manifest: {e}")))?,
            None => Manifest::default(),
        };
        let roots = roots(&manifest);
        let mut data = Value::Object(Map::new());
        let mut rego = Vec::new();
        let mut modules = Vec::new();
        for (name, bytes) in &files {
            let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
            match file {
                ".signatures.json" if dir.is_empty() => {
                    tracing::warn!("bundle signatures are not verified");
                }
                "patch.json" => {
                    return Err(PolicyError::Load("delta bundles are not supported".into()));
                }
                "data.json" | "data.yaml" | "data.yml" => {
                    let value = parse_data(name, bytes)?;
                    check_roots(&mut components(dir), &value, &roots, name)?;
                    merge_at(&mut data, &components(dir), value, name)?;
                }
                _ if file.ends_with(".wasm") => modules.push(name.as_str()),
                _ if file.ends_with(".rego") && !file.ends_with("_test.rego") => {
                    let text = String::from_utf8(bytes.clone())
                        .map_err(|_| PolicyError::Load(format!("{name}: not UTF-8")))?;
                    check_package(name, &text, &roots)?;
                    rego.push((name.clone(), text));
                }
                _ => {}
            }
        }
        let wasm = wasm_module(&manifest, &modules, &files)?;
        Ok(Self {
            revision: revision(&manifest, &files),
            roots,
            data,
            wasm,
            rego,
            rego_v0: manifest.rego_version == Some(0),
        })
    }
}

/// Every regular file of the archive, by its name relative to the bundle root.
fn read_entries(tar_gz: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, PolicyError> {
    let bad = |e: std::io::Error| PolicyError::Load(format!("reading the archive: {e}"));
    let mut archive = tar::Archive::new(GzDecoder::new(tar_gz));
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    for (i, entry) in archive.entries().map_err(bad)?.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(PolicyError::Load(format!(
                "more than {MAX_ENTRIES} entries"
            )));
        }
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = entry_name(&raw)?;
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) || name.is_empty() {
            return Err(PolicyError::Load(format!(
                "entry `{raw}`: only regular files and directories are allowed"
            )));
        }
        let size = entry.size();
        total = total.saturating_add(size);
        if size > MAX_ENTRY_BYTES || total > MAX_BUNDLE_BYTES {
            return Err(PolicyError::Load(format!(
                "entry `{raw}`: {size} bytes, over the size limit \
                 ({MAX_ENTRY_BYTES} per file, {MAX_BUNDLE_BYTES} in all)"
            )));
        }
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(MAX_ENTRY_BYTES)
            .read_to_end(&mut bytes)
            .map_err(bad)?;
        if files.insert(name, bytes).is_some() {
            return Err(PolicyError::Load(format!("entry `{raw}` appears twice")));
        }
    }
    Ok(files)
}

/// An entry's name relative to the bundle root, or an error when it could leave the bundle.
/// `/data.json` and `./data.json` are `data.json`; directories end up without their `/`.
pub fn entry_name(raw: &str) -> Result<String, PolicyError> {
    let refuse = |why: &str| PolicyError::Load(format!("entry `{raw}`: {why}"));
    let relative = raw
        .strip_prefix("./")
        .or_else(|| raw.strip_prefix('/'))
        .unwrap_or(raw);
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    if relative.is_empty() {
        return Ok(String::new());
    }
    if relative.contains('\\') || relative.contains('\0') {
        return Err(refuse("backslashes and NUL are not allowed in names"));
    }
    for (i, part) in relative.split('/').enumerate() {
        match part {
            "" if i == 0 => return Err(refuse("absolute paths are not allowed")),
            "" | "." => return Err(refuse("empty or `.` path components are not allowed")),
            ".." => return Err(refuse("`..` would leave the bundle")),
            _ if i == 0 && part.ends_with(':') => {
                return Err(refuse("drive prefixes are not allowed"));
            }
            _ => {}
        }
    }
    Ok(relative.to_string())
}

fn components(dir: &str) -> Vec<String> {
    dir.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// The manifest's roots, without slashes; `[""]` (everything) when it names none.
fn roots(manifest: &Manifest) -> Vec<String> {
    match &manifest.roots {
        Some(roots) if !roots.is_empty() => roots
            .iter()
            .map(|r| r.trim_matches('/').to_string())
            .collect(),
        _ => vec![String::new()],
    }
}

/// A root as path components; the empty root (everything) has none.
fn root_parts(root: &str) -> Vec<&str> {
    root.split('/').filter(|c| !c.is_empty()).collect()
}

/// Whether `prefix` is a component-wise prefix of `path`.
fn starts_with(path: &[String], prefix: &[&str]) -> bool {
    prefix.len() <= path.len() && prefix.iter().zip(path).all(|(p, c)| p == c)
}

/// Data must lie under one of the roots, as OPA requires: an object above a root is checked
/// key by key.
fn check_roots(
    path: &mut Vec<String>,
    value: &Value,
    roots: &[String],
    file: &str,
) -> Result<(), PolicyError> {
    let roots_parts: Vec<Vec<&str>> = roots.iter().map(|r| root_parts(r)).collect();
    if roots_parts.iter().any(|root| starts_with(path, root)) {
        return Ok(());
    }
    let above_a_root = roots_parts
        .iter()
        .any(|root| root.len() > path.len() && path.iter().zip(root).all(|(c, r)| c == r));
    match value {
        Value::Object(map) if above_a_root => {
            for (key, child) in map {
                path.push(key.clone());
                check_roots(path, child, roots, file)?;
                path.pop();
            }
            Ok(())
        }
        _ => Err(PolicyError::Load(format!(
            "{file}: data at `{}` is outside the manifest's roots",
            path.join("/")
        ))),
    }
}

/// A `.rego` file's package must lie under one of the roots.
fn check_package(file: &str, text: &str, roots: &[String]) -> Result<(), PolicyError> {
    let package = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map(str::trim)
        .ok_or_else(|| PolicyError::Load(format!("{file}: no package")))?;
    let path: Vec<String> = package.split('.').map(str::to_string).collect();
    if roots
        .iter()
        .any(|root| starts_with(&path, &root_parts(root)))
    {
        return Ok(());
    }
    Err(PolicyError::Load(format!(
        "{file}: package `{package}` is outside the manifest's roots"
    )))
}

fn parse_data(name: &str, bytes: &[u8]) -> Result<Value, PolicyError> {
    let bad = |e: &dyn std::fmt::Display| PolicyError::Load(format!("{name}: {e}"));
    if name.ends_with(".json") {
        serde_json::from_slice(bytes).map_err(|e| bad(&e))
    } else {
        yaml_serde::from_slice(bytes).map_err(|e| bad(&e))
    }
}

/// Merges `value` into `data` at `path`; objects merge key by key, anything else must not
/// collide.
fn merge_at(
    data: &mut Value,
    path: &[String],
    value: Value,
    file: &str,
) -> Result<(), PolicyError> {
    let mut wrapped = value;
    for key in path.iter().rev() {
        wrapped = Value::Object(Map::from_iter([(key.clone(), wrapped)]));
    }
    if !wrapped.is_object() {
        return Err(PolicyError::Load(format!(
            "{file}: the root data document must be an object"
        )));
    }
    merge(data, wrapped, &mut Vec::new(), file)
}

fn merge(
    into: &mut Value,
    from: Value,
    path: &mut Vec<String>,
    file: &str,
) -> Result<(), PolicyError> {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                path.push(key.clone());
                match into.get_mut(&key) {
                    Some(existing) => merge(existing, value, path, file)?,
                    None => {
                        into.insert(key, value);
                    }
                }
                path.pop();
            }
            Ok(())
        }
        _ => Err(PolicyError::Load(format!(
            "{file}: data at `{}` conflicts with another data file",
            path.join("/")
        ))),
    }
}

/// The one Wasm module: those the manifest lists, else every `.wasm` file.
fn wasm_module(
    manifest: &Manifest,
    found: &[&str],
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Option<Vec<u8>>, PolicyError> {
    let mut names: Vec<String> = if manifest.wasm.is_empty() {
        found.iter().map(|n| n.to_string()).collect()
    } else {
        manifest
            .wasm
            .iter()
            .map(|w| entry_name(&w.module))
            .collect::<Result<_, _>>()?
    };
    names.dedup();
    match names.as_slice() {
        [] => Ok(None),
        [name] => files.get(name).cloned().map(Some).ok_or_else(|| {
            PolicyError::Load(format!(".manifest names `{name}`, which is missing"))
        }),
        _ => Err(PolicyError::Load(format!(
            "{} Wasm modules ({}); one is supported",
            names.len(),
            names.join(", ")
        ))),
    }
}

fn revision(manifest: &Manifest, files: &BTreeMap<String, Vec<u8>>) -> String {
    match &manifest.revision {
        Some(revision) if !revision.is_empty() => revision.clone(),
        _ => {
            let parts: Vec<(&str, &[u8])> = files
                .iter()
                .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
                .collect();
            content_revision(&parts)
        }
    }
}

#[cfg(test)]
mod tests;
