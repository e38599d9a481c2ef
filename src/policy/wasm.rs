//! The Wasm engine: OPA policies compiled to WebAssembly (`opa build -t wasm`), run in-process by
//! `opa-wasm` on wasmtime (Cranelift). The module is compiled once; decisions run on a pool of
//! instances (one per concurrent evaluation), each with its own `Store` and the data document
//! loaded once. Every evaluation is bounded by fuel (an instruction budget) and by an epoch
//! deadline (the policy timeout); an instance that fails for any reason is discarded, so the next
//! decision starts from a fresh one.
//!
//! `opa-wasm` is async (host builtins are async functions); wasmtime runs the guest on a fiber, so
//! its futures complete in one poll here and [`block_on`] drives them on the calling thread. The
//! pipeline runs its evaluations off the async reactor.

use std::future::Future;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use opa_wasm::{DefaultContext, Policy, Runtime};
use serde_json::Value;
use wasmtime::{Config, Engine, Module, Store, StoreLimits, StoreLimitsBuilder};

use super::{PolicyEngine, PolicyError, content_revision, entrypoint_path};

/// How often the shared engine's epoch advances: the granularity of the wall-clock limit.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Wall-clock limit for creating an instance (instantiation and loading the data document).
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// Fuel for creating an instance; the data document is parsed inside the guest.
const SETUP_FUEL: u64 = 1 << 40;

/// What one evaluation may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wasm fuel per evaluation (roughly one unit per instruction).
    pub fuel: u64,
    /// Wall-clock limit per evaluation, enforced with wasmtime's epoch interruption.
    pub timeout: Duration,
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory: usize,
}

impl Limits {
    /// The defaults for a policy timeout: 100 million units of fuel, 256 MiB of memory.
    pub fn new(timeout: Duration) -> Self {
        Self {
            fuel: 100_000_000,
            timeout,
            memory: 256 << 20,
        }
    }
}

/// A compiled OPA Wasm policy.
pub struct WasmPolicy {
    engine: Engine,
    module: Module,
    data: Value,
    entrypoint: String,
    limits: Limits,
    /// Idle instances, reused across evaluations.
    instances: Mutex<Vec<Instance>>,
    revision: String,
}

/// One instantiated module with the data document loaded, in its own store.
struct Instance {
    store: Store<StoreLimits>,
    policy: Policy<DefaultContext>,
}

impl WasmPolicy {
    /// Compiles `module` (the bytes of a `policy.wasm`), instantiates it once with `data` and
    /// checks `entrypoint` (`a/b/c` or `data.a.b.c`) is one of its entrypoints. The revision is
    /// a content hash of the module and the data; see [`WasmPolicy::with_revision`].
    pub fn new(
        module: &[u8],
        data: Value,
        entrypoint: &str,
        limits: Limits,
    ) -> Result<Self, PolicyError> {
        let engine = shared_engine()?;
        let compiled = Module::new(&engine, module)
            .map_err(|e| PolicyError::Load(format!("compiling the Wasm module: {e}")))?;
        let data_text = data.to_string();
        let policy = Self {
            engine,
            module: compiled,
            data,
            entrypoint: entrypoint_path(entrypoint),
            limits,
            instances: Mutex::new(Vec::new()),
            revision: content_revision(&[
                ("policy.wasm", module),
                ("data.json", data_text.as_bytes()),
            ]),
        };
        let first = policy.instance()?;
        policy.check_entrypoint(&first.policy)?;
        policy.release(first);
        Ok(policy)
    }

    /// Reads a `.wasm` file and an optional data document (JSON; `{}` when absent).
    pub fn load(
        module: &Path,
        data: Option<&Path>,
        entrypoint: &str,
        limits: Limits,
    ) -> Result<Self, PolicyError> {
        let read_error = |p: &Path, e: &dyn std::fmt::Display| {
            PolicyError::Load(format!("{}: {e}", p.display()))
        };
        let bytes = std::fs::read(module).map_err(|e| read_error(module, &e))?;
        let data = match data {
            Some(path) => {
                let text = std::fs::read(path).map_err(|e| read_error(path, &e))?;
                serde_json::from_slice(&text).map_err(|e| read_error(path, &e))?
            }
            None => Value::Object(Default::default()),
        };
        Self::new(&bytes, data, entrypoint, limits)
    }

    /// Replaces the content-hash revision (with a bundle manifest's `revision`).
    pub fn with_revision(mut self, revision: String) -> Self {
        self.revision = revision;
        self
    }

    /// The entrypoint evaluated, in the module's `a/b/c` form.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    fn check_entrypoint(&self, policy: &Policy<DefaultContext>) -> Result<(), PolicyError> {
        let available = policy.entrypoints();
        if available.contains(self.entrypoint.as_str()) {
            return Ok(());
        }
        let mut names: Vec<&str> = available.into_iter().collect();
        names.sort_unstable();
        Err(PolicyError::Load(format!(
            "entrypoint `{}` is not in the Wasm module; available: {}",
            self.entrypoint,
            names.join(", ")
        )))
    }

    /// A fresh instance: its own store, the module instantiated, the data document loaded.
    fn instance(&self) -> Result<Instance, PolicyError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory)
            .build();
        let mut store = Store::new(&self.engine, limits);
        store.limiter(|limits| limits);
        store.epoch_deadline_trap();
        arm(&mut store, SETUP_FUEL, SETUP_LIMIT)?;
        let runtime = block_on(Runtime::new(&mut store, &self.module)).map_err(setup_error)?;
        let policy = block_on(runtime.with_data(&mut store, &self.data)).map_err(setup_error)?;
        Ok(Instance { store, policy })
    }

    fn idle(&self) -> Option<Instance> {
        self.instances.lock().ok()?.pop()
    }

    fn release(&self, instance: Instance) {
        if let Ok(mut idle) = self.instances.lock() {
            idle.push(instance);
        }
    }

    /// Why an evaluation failed, naming the limit when one was reached.
    fn failure(
        &self,
        store: &Store<StoreLimits>,
        started: Instant,
        e: &dyn std::fmt::Display,
    ) -> PolicyError {
        if store.get_fuel().is_ok_and(|fuel| fuel == 0) {
            return PolicyError::Eval(format!(
                "fuel exhausted ({} units): runaway policy stopped",
                self.limits.fuel
            ));
        }
        if started.elapsed() >= self.limits.timeout {
            return PolicyError::Eval(format!(
                "time limit of {:?} reached: runaway policy stopped",
                self.limits.timeout
            ));
        }
        PolicyError::Eval(format!("{e:#}"))
    }
}

/// The host builtins compiled in (opa-wasm features); a module needing another fails to load.
const HOST_BUILTINS: &str = "sprintf, base64url.encode_no_pad, hex.*, json.patch, semver.*, \
                             units.*, urlquery.* and opa-wasm's always-on ones";

impl WasmPolicy {
    /// One evaluation on a pooled instance; `input` is serialized into the module's memory.
    fn run<T: serde::Serialize>(&self, input: &T) -> Result<Value, PolicyError> {
        let mut instance = match self.idle() {
            Some(instance) => instance,
            None => self.instance()?,
        };
        arm(&mut instance.store, self.limits.fuel, self.limits.timeout)?;
        let started = Instant::now();
        let Instance { store, policy } = &mut instance;
        let result = block_on(policy.evaluate::<_, Value, _>(&mut *store, &self.entrypoint, input));
        match result {
            Ok(results) => {
                self.release(instance);
                first_result(results)
            }
            // The instance that failed (out of fuel, interrupted, aborted) is dropped.
            Err(e) => Err(self.failure(&instance.store, started, &e)),
        }
    }
}

/// Not [`PolicyEngine::inline`]: an evaluation is bounded by fuel and the epoch deadline, but
/// a cold pool first creates an instance (instantiation, the data document loaded into the
/// guest), bounded only by [`SETUP_LIMIT`]; the pipeline hands evaluations off the reactor.
impl PolicyEngine for WasmPolicy {
    fn evaluate(&self, input: Value) -> Result<Value, PolicyError> {
        self.run(&input)
    }

    /// The typed document serialized straight into the module's memory (no JSON value first).
    fn evaluate_input(&self, input: &super::PolicyInput<'_>) -> Result<Value, PolicyError> {
        self.run(input)
    }

    fn revision(&self) -> &str {
        &self.revision
    }

    fn engine(&self) -> &'static str {
        "wasm"
    }
}

fn setup_error(e: impl std::fmt::Display) -> PolicyError {
    let message = format!("{e:#}");
    if message.contains("unknown builtin") {
        return PolicyError::Load(format!(
            "the Wasm module needs a host builtin this build does not provide \
             (provided: {HOST_BUILTINS})"
        ));
    }
    PolicyError::Load(format!("instantiating the Wasm module: {message}"))
}

/// Sets the fuel and the epoch deadline for the next call into the guest.
fn arm(store: &mut Store<StoreLimits>, fuel: u64, limit: Duration) -> Result<(), PolicyError> {
    store
        .set_fuel(fuel)
        .map_err(|e| PolicyError::Eval(format!("setting fuel: {e}")))?;
    let ticks = limit.as_millis().div_ceil(EPOCH_TICK.as_millis()) + 1;
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX >> 1));
    Ok(())
}

/// An OPA result set, `[{"result": X}]`, to `X`; `[]` is undefined.
fn first_result(results: Value) -> Result<Value, PolicyError> {
    let Value::Array(mut results) = results else {
        return Err(PolicyError::Eval("the result set is not an array".into()));
    };
    match results.len() {
        0 => Err(PolicyError::Undefined),
        1 => match results.pop() {
            Some(Value::Object(mut row)) => row
                .remove("result")
                .ok_or_else(|| PolicyError::Eval("a result without `result`".into())),
            _ => Err(PolicyError::Eval("a result that is not an object".into())),
        },
        n => Err(PolicyError::Eval(format!("{n} results for one entrypoint"))),
    }
}

/// The process-wide engine (fuel and epoch interruption on), with the thread that advances its
/// epoch. Compiled modules and stores from every `WasmPolicy` share it, so a reloaded policy
/// costs no new thread.
fn shared_engine() -> Result<Engine, PolicyError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.consume_fuel(true).epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| e.to_string())?;
            let ticking = engine.clone();
            std::thread::Builder::new()
                .name("stepguard-wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        ticking.increment_epoch();
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(engine)
        })
        .clone()
        .map_err(|e| PolicyError::Load(format!("Wasm engine: {e}")))
}

/// Drives an `opa-wasm` future on this thread. The guest runs on a wasmtime fiber and the host
/// builtins never wait on anything, so the future is ready after the first poll; the loop only
/// guards against a spurious `Pending`.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}
