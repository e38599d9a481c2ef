//! Fuzz harnesses: bytes in, the product's code exercised, its invariants asserted; a harness
//! never panics on any input unless the product has a bug. Shared by the AFL++ driver (`fuzz/`,
//! run with `scripts/fuzz <target> [seconds]`) and the replay test (`tests.rs`), which runs
//! every file of `tests/fuzz-corpus/<target>/` through its harness in `cargo test --lib`.
//! docs/fuzzing.md has the input encodings and how to add a corpus entry.
//!
//! | target | what | input |
//! |---|---|---|
//! | `pipeline` | a request through [`crate::pipeline::Pipeline::decide`] and the response | [`request`]'s text encoding |
//! | `check_request` | the same from Envoy's protobuf | `CheckRequest` bytes |
//! | `jwt` | bearer-token verification ([`crate::identity`], [`crate::jose`], [`crate::ijson`]) | [`token`]'s encoding |
//! | `callback` | the OIDC callback's query and cookie handling, code exchange, ID token | [`callback`]'s encoding |
//! | `config` | [`crate::config::Config::parse`] and the route table | YAML text |
//! | `bundle` | [`crate::policy::bundle::Bundle::read`] and its Rego | `.tar.gz`, or a plain tar |

mod callback;
mod files;
mod idp;
mod request;
mod token;
mod world;

use std::future::Future;
use std::sync::{Mutex, OnceLock};

use tokio::runtime::Runtime;

use world::World;

/// A harness: never panics unless the product has a bug.
pub type Harness = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: &[(&str, Harness)] = &[
    ("pipeline", request::pipeline),
    ("check_request", request::check_request),
    ("jwt", token::jwt),
    ("callback", callback::callback),
    ("config", files::config),
    ("bundle", files::bundle),
];

/// The harness named `name`.
pub fn target(name: &str) -> Option<Harness> {
    TARGETS.iter().find(|t| t.0 == name).map(|t| t.1)
}

/// One runtime for the process; inputs run one at a time (the replay tests run in parallel).
fn run<F: Future>(future: impl FnOnce() -> F) -> F::Output {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    RUNTIME.get_or_init(world::runtime).block_on(future())
}

/// Runs `f` against the quickstart pipeline, emptied of every grant, challenge and record.
fn with_world<F: Future<Output = ()>>(f: impl FnOnce(&'static World) -> F) {
    static WORLD: OnceLock<World> = OnceLock::new();
    run(|| async {
        let world = match WORLD.get() {
            Some(w) => w,
            None => {
                let built = World::build(world::parse(&world::quickstart_text(|t| t))).await;
                WORLD.get_or_init(|| built)
            }
        };
        world.reset();
        f(world).await;
    });
}

#[cfg(test)]
mod tests;
