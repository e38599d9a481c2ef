//! The `config` and `bundle` harnesses: the files an operator or a bundle server gives.
//!
//! - `config`: YAML text through [`Config::parse`] (relative paths resolve against the
//!   quickstart's directory; parsing reads no file), then the route table it configures.
//! - `bundle`: a policy bundle through [`Bundle::read`] and, without a Wasm module, the Rego
//!   compile of [`Bundle::into_rego`] (Wasm modules are not compiled: Cranelift takes seconds
//!   per module). Input starting with gzip's magic is the `.tar.gz` as served; anything else is
//!   taken as a plain tar and gzipped first, so the fuzzer mutates the archive rather than the
//!   compressed stream whose checksum would refuse nearly every mutation.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::world::DIR;
use crate::config::Config;
use crate::policy::bundle::Bundle;
use crate::route::RouteTable;

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, Path::new(DIR)) {
        let _ = RouteTable::new(&config.actions);
    }
}

pub fn bundle(data: &[u8]) {
    let gzipped;
    let tar_gz = if data.starts_with(&[0x1f, 0x8b]) {
        data
    } else {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        if gz.write_all(data).is_err() {
            return;
        }
        let Ok(bytes) = gz.finish() else {
            return;
        };
        gzipped = bytes;
        &gzipped
    };
    let Ok(bundle) = Bundle::read(tar_gz) else {
        return;
    };
    assert!(!bundle.revision().is_empty(), "a bundle without a revision");
    if !bundle.has_wasm() {
        let _ = bundle.into_rego("stepguard/authz/decision", Duration::from_millis(100));
    }
}
