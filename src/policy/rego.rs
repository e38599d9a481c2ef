//! The Rego engine: `.rego` sources (and `data.json`) evaluated in-process by `regorus`. The
//! policy is compiled once for the configured entrypoint into a regorus VM program; decisions
//! run on a pool of VMs (one per concurrent evaluation), each bounded by an instruction limit and
//! a wall-clock limit, so an evaluation runs on the calling task ([`PolicyEngine::inline`]). A
//! decision's typed input document becomes regorus's value type directly
//! ([`PolicyInput::to_rego`]); JSON inputs (tools, tests) through [`to_rego`].
//! regorus's interpreter (about 7× slower on the shipped policy) runs the Rego unit tests behind
//! `stepguard policy test` and lists the rules defined for an input ([`RegoPolicy::explain`], for
//! `stepguard check`).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use regorus::Engine;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::rvm::program::Program;
use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::Value;

use super::{PolicyEngine, PolicyError, PolicyInput};

/// Most VM instructions one decision may execute.
const MAX_INSTRUCTIONS: usize = 2_000_000;

/// A compiled Rego policy.
pub struct RegoPolicy {
    program: Arc<Program>,
    data: regorus::Value,
    /// The interpreter over the same modules and data: [`RegoPolicy::explain`] and
    /// [`RegoPolicy::evaluate_interpreted`].
    engine: Engine,
    /// The entrypoint rule, `data.a.b.c`.
    rule: String,
    timer: ExecutionTimerConfig,
    /// Idle VMs, reused across evaluations.
    vms: Mutex<Vec<RegoVM>>,
    revision: String,
}

/// The policy sources found at a path (or in a bundle).
struct Sources {
    rego: Vec<(PathBuf, String)>,
    data: Vec<(PathBuf, String)>,
    /// Parse the modules as Rego v0 (a bundle whose manifest says `rego_version: 0`).
    rego_v0: bool,
}

impl RegoPolicy {
    /// Loads every non-test `.rego` and `data.json` under `source` and compiles `entrypoint`
    /// (`stepguard/authz/decision` or `data.stepguard.authz.decision`).
    pub fn load(source: &Path, entrypoint: &str, timeout: Duration) -> Result<Self, PolicyError> {
        Self::compile(&read_sources(source, false)?, entrypoint, timeout)
    }

    /// Compiles in-memory modules (`(name, text)`, e.g. the `.rego` files of a bundle) over one
    /// data document. The revision is a content hash; see [`RegoPolicy::with_revision`].
    pub fn from_modules(
        modules: Vec<(String, String)>,
        data: &Value,
        rego_v0: bool,
        entrypoint: &str,
        timeout: Duration,
    ) -> Result<Self, PolicyError> {
        if modules.is_empty() {
            return Err(PolicyError::Load("no .rego modules".into()));
        }
        let sources = Sources {
            rego: modules
                .into_iter()
                .map(|(name, text)| (PathBuf::from(name), text))
                .collect(),
            data: vec![(PathBuf::from("data.json"), data.to_string())],
            rego_v0,
        };
        Self::compile(&sources, entrypoint, timeout)
    }

    /// Replaces the content-hash revision (with a bundle manifest's `revision`).
    pub fn with_revision(mut self, revision: String) -> Self {
        self.revision = revision;
        self
    }

    fn compile(
        sources: &Sources,
        entrypoint: &str,
        timeout: Duration,
    ) -> Result<Self, PolicyError> {
        let mut engine = engine_with(sources)?;
        let rule = entrypoint_rule(entrypoint);
        let load_error =
            |e: &dyn std::fmt::Display| PolicyError::Load(format!("entrypoint `{rule}`: {e}"));
        let compiled = engine
            .compile_with_entrypoint(&rule.as_str().into())
            .map_err(|e| load_error(&e))?;
        let program = Compiler::compile_from_policy(&compiled, &[rule.as_str()])
            .map_err(|e| load_error(&e))?;
        let policy = Self {
            program,
            data: engine.get_data(),
            engine,
            rule,
            timer: ExecutionTimerConfig {
                limit: timeout,
                check_interval: NonZeroU32::MIN.saturating_add(63),
            },
            vms: Mutex::new(Vec::new()),
            revision: revision(sources),
        };
        policy.vm()?;
        Ok(policy)
    }

    fn vm(&self) -> Result<RegoVM, PolicyError> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone())
            .map_err(|e| PolicyError::Load(e.to_string()))?;
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_execution_timer_config(Some(self.timer));
        Ok(vm)
    }

    fn idle_vm(&self) -> Option<RegoVM> {
        self.vms.lock().ok()?.pop()
    }

    /// Evaluates the entrypoint on an input already in regorus's value type, on a pooled VM.
    pub fn evaluate_value(&self, input: regorus::Value) -> Result<regorus::Value, PolicyError> {
        let mut vm = match self.idle_vm() {
            Some(vm) => vm,
            None => self.vm()?,
        };
        vm.set_input(input);
        let value = vm.execute().map_err(|e| PolicyError::Eval(e.to_string()));
        vm.set_input(regorus::Value::Null);
        if let Ok(mut idle) = self.vms.lock() {
            idle.push(vm);
        }
        match value? {
            regorus::Value::Undefined => Err(PolicyError::Undefined),
            value => Ok(value),
        }
    }

    /// Evaluates the entrypoint with regorus's tree-walking interpreter instead of the VM (same
    /// result; slower: for comparison and for tools, not for decisions).
    pub fn evaluate_interpreted(&self, input: Value) -> Result<Value, PolicyError> {
        let mut engine = self.engine.clone();
        engine.set_input(to_rego(input));
        match engine
            .eval_rule(self.rule.clone())
            .map_err(|e| PolicyError::Eval(e.to_string()))?
        {
            regorus::Value::Undefined => Err(PolicyError::Undefined),
            value => Ok(to_json(&value)),
        }
    }

    /// Every rule of every policy package evaluated on `input` with the interpreter: per
    /// package (`data.stepguard.authz`), the rules that are defined, with their values (rules
    /// that are undefined for this input and functions are absent). For explaining a decision.
    pub fn explain(&self, input: Value) -> Result<Vec<(String, Value)>, PolicyError> {
        let mut engine = self.engine.clone();
        engine.set_input(to_rego(input));
        let mut packages = engine
            .get_packages()
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        packages.sort();
        packages.dedup();
        let mut out = Vec::new();
        for package in packages {
            let results = engine
                .eval_query(package.clone(), false)
                .map_err(|e| PolicyError::Eval(format!("{package}: {e}")))?;
            let value = results
                .result
                .first()
                .and_then(|r| r.expressions.first())
                .map(|e| to_json(&e.value))
                .unwrap_or(Value::Null);
            out.push((package, value));
        }
        Ok(out)
    }
}

/// `serde_json` → regorus, directly (regorus's own `From` goes through serde's deserializer,
/// about three times slower on a stepguard input).
pub fn to_rego(value: Value) -> regorus::Value {
    match value {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::Bool(b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                regorus::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                regorus::Value::from(i)
            } else {
                n.as_f64()
                    .map_or(regorus::Value::Undefined, regorus::Value::from)
            }
        }
        Value::String(s) => regorus::Value::from(s),
        Value::Array(items) => {
            regorus::Value::from(items.into_iter().map(to_rego).collect::<Vec<_>>())
        }
        Value::Object(map) => regorus::Value::from(
            map.into_iter()
                .map(|(k, v)| (regorus::Value::from(k), to_rego(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

/// regorus → `serde_json`: sets become arrays, non-string keys their JSON text, undefined null.
pub fn to_json(value: &regorus::Value) -> Value {
    match value {
        regorus::Value::Null | regorus::Value::Undefined => Value::Null,
        regorus::Value::Bool(b) => Value::Bool(*b),
        regorus::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                // Fractions and big numbers: regorus's own decimal rendering.
                serde_json::to_value(n).unwrap_or(Value::Null)
            }
        }
        regorus::Value::String(s) => Value::String(s.to_string()),
        regorus::Value::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        regorus::Value::Set(items) => Value::Array(items.iter_sorted().map(to_json).collect()),
        regorus::Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        regorus::Value::String(s) => s.to_string(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

impl PolicyEngine for RegoPolicy {
    fn evaluate(&self, input: Value) -> Result<Value, PolicyError> {
        self.evaluate_value(to_rego(input)).map(|v| to_json(&v))
    }

    fn evaluate_input(&self, input: &PolicyInput<'_>) -> Result<Value, PolicyError> {
        let input = input
            .to_rego()
            .map_err(|e| PolicyError::Eval(format!("input: {e}")))?;
        self.evaluate_value(input).map(|v| to_json(&v))
    }

    /// Every evaluation is bounded by [`MAX_INSTRUCTIONS`] and by the policy timeout (regorus's
    /// execution timer, checked every 64 instructions).
    fn inline(&self) -> bool {
        true
    }

    fn revision(&self) -> &str {
        &self.revision
    }

    fn engine(&self) -> &'static str {
        "rego"
    }

    fn misconfiguration(&self, input: Value) -> Result<Option<Vec<String>>, PolicyError> {
        self.validation(input, "misconfiguration")
    }
}

/// `stepguard/authz/decision` → `data.stepguard.authz.decision`.
fn entrypoint_rule(entrypoint: &str) -> String {
    if entrypoint.starts_with("data.") {
        entrypoint.to_string()
    } else {
        format!("data.{}", entrypoint.trim_matches('/').replace('/', "."))
    }
}

fn engine_with(sources: &Sources) -> Result<Engine, PolicyError> {
    let mut engine = Engine::new();
    engine.set_rego_v0(sources.rego_v0);
    for (path, text) in &sources.rego {
        engine
            .add_policy(path.display().to_string(), text.clone())
            .map_err(|e| PolicyError::Load(e.to_string()))?;
    }
    for (path, text) in &sources.data {
        let data = regorus::Value::from_json_str(text)
            .map_err(|e| PolicyError::Load(format!("{}: {e}", path.display())))?;
        engine
            .add_data(data)
            .map_err(|e| PolicyError::Load(format!("{}: {e}", path.display())))?;
    }
    Ok(engine)
}

/// The files [`RegoPolicy::load`] reads under `source`, sorted: non-test `.rego` files and
/// `data.json` (what a reloader fingerprints).
pub fn source_files(source: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    source_files_with(source, false)
}

fn source_files_with(source: &Path, with_tests: bool) -> Result<Vec<PathBuf>, PolicyError> {
    let mut files = Vec::new();
    collect(source, &mut files)?;
    files.sort();
    files.retain(|path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        is_rego(name, with_tests) || name == "data.json"
    });
    Ok(files)
}

fn is_rego(name: &str, with_tests: bool) -> bool {
    name.ends_with(".rego") && (with_tests || !name.ends_with("_test.rego"))
}

fn read_sources(source: &Path, with_tests: bool) -> Result<Sources, PolicyError> {
    let mut sources = Sources {
        rego: Vec::new(),
        data: Vec::new(),
        rego_v0: false,
    };
    for path in source_files_with(source, with_tests)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let is_rego = is_rego(name, with_tests);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PolicyError::Load(format!("{}: {e}", path.display())))?;
        if is_rego {
            sources.rego.push((path, text));
        } else {
            sources.data.push((path, text));
        }
    }
    if sources.rego.is_empty() {
        return Err(PolicyError::Load(format!(
            "no .rego files in {}",
            source.display()
        )));
    }
    Ok(sources)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| PolicyError::Load(format!("{}: {e}", path.display())))?;
    for entry in entries.flatten() {
        // Hidden entries are skipped: Kubernetes ConfigMap mounts hold `..data` copies.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// A content hash over every source, stable across machines.
fn revision(sources: &Sources) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for (path, text) in sources.rego.iter().chain(&sources.data) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(text.as_bytes());
        ctx.update(&[0]);
    }
    let hash = ctx.finish();
    let hex: String = hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The result of one Rego test.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub outcome: TestOutcome,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Pass,
    Fail,
    Error(String),
}

/// Runs every `test_*` rule of every `*_test.rego` package under `source`, like `opa test`.
pub fn run_tests(source: &Path) -> Result<Vec<TestResult>, PolicyError> {
    let sources = read_sources(source, true)?;
    let engine = engine_with(&sources)?;
    let mut results = Vec::new();
    for (path, text) in &sources.rego {
        if !path.to_string_lossy().ends_with("_test.rego") {
            continue;
        }
        let package = package_of(text)
            .ok_or_else(|| PolicyError::Load(format!("{}: no package", path.display())))?;
        for rule in test_rules(text) {
            let name = format!("data.{package}.{rule}");
            let started = Instant::now();
            let mut engine = engine.clone();
            let outcome = match engine.eval_rule(name.clone()) {
                Ok(regorus::Value::Bool(true)) => TestOutcome::Pass,
                Ok(_) => TestOutcome::Fail,
                Err(e) => TestOutcome::Error(e.to_string()),
            };
            results.push(TestResult {
                name,
                outcome,
                elapsed: started.elapsed(),
            });
        }
    }
    Ok(results)
}

fn package_of(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map(str::trim)
}

/// Names of `test_*` rules defined at the start of a line, in order, once each.
fn test_rules(text: &str) -> Vec<&str> {
    let mut rules: Vec<&str> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("test_") else {
            continue;
        };
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &line[..5 + len];
        if !rules.contains(&name) {
            rules.push(name);
        }
    }
    rules
}

mod validation;

#[cfg(test)]
mod tests;
