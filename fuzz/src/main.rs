//! AFL++ driver: `stepguard-fuzz <target>` runs one harness of `stepguard::fuzz` in AFL's
//! persistent mode (inputs on stdin or shared memory, as `afl-fuzz` gives them). Run through
//! `scripts/fuzz <target> [seconds]`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = stepguard::fuzz::target(&name) else {
        let names: Vec<&str> = stepguard::fuzz::TARGETS.iter().map(|t| t.0).collect();
        eprintln!("usage: stepguard-fuzz <{}>", names.join("|"));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
