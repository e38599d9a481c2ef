//! `listen`: the optional admin port and listeners that would share an address.

use crate::config::{Config, ConfigError};
use std::path::Path;

fn quickstart_with(listen: &str) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/local/stepguard.yaml"
    ))
    .unwrap();
    let old = "listen:\n  grpc: 127.0.0.1:9191\n  http: 127.0.0.1:9192\n";
    assert!(text.contains(old), "quickstart listen section changed");
    Config::parse(
        &text.replace(old, listen),
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local")),
    )
}

#[test]
fn admin_is_optional() {
    let config =
        quickstart_with("listen:\n  grpc: 127.0.0.1:9191\n  http: 127.0.0.1:9192\n").unwrap();
    assert_eq!(config.listen.admin, None);
    let config = quickstart_with(
        "listen:\n  grpc: 0.0.0.0:9191\n  http: 0.0.0.0:9192\n  admin: 0.0.0.0:9193\n",
    )
    .unwrap();
    assert_eq!(config.listen.admin, Some("0.0.0.0:9193".parse().unwrap()));
}

#[test]
fn listeners_on_one_address_are_refused_by_name() {
    let e = quickstart_with(
        "listen:\n  grpc: 127.0.0.1:9191\n  http: 127.0.0.1:9192\n  admin: 127.0.0.1:9192\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("listen.admin") && e.contains("listen.http"),
        "{e}"
    );
    let e = quickstart_with("listen:\n  grpc: 127.0.0.1:9191\n  http: 127.0.0.1:9191\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listen.http") && e.contains("listen.grpc"),
        "{e}"
    );
    // Port 0 is "any free port": never a clash.
    quickstart_with("listen:\n  grpc: 127.0.0.1:0\n  http: 127.0.0.1:0\n  admin: 127.0.0.1:0\n")
        .unwrap();
}
