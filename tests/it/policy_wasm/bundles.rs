//! Policy bundles (tar.gz): Wasm and Rego-only bundles through the config path, and the bundles
//! refused (escaping links, oversized entries, data files where none are read).

use super::*;

/// A fresh temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepguard-wasm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a `.tar.gz` whose entries are named exactly as given (as `opa build` does, with a
/// leading `/`), bypassing the `tar` crate's own path checks.
fn write_bundle(path: &Path, entries: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *bytes).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// The quickstart config with its `policy` section replaced.
fn config_with_policy(policy: Value) -> Result<Config, stepguard::config::ConfigError> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local");
    let text = std::fs::read_to_string(base.join("stepguard.yaml")).unwrap();
    let mut doc: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    doc["policy"] = yaml_serde::to_value(policy).unwrap();
    Config::parse(&yaml_serde::to_string(&doc).unwrap(), &base)
}

fn simple_fixture_bundle(dir: &Path, manifest: &str) -> PathBuf {
    let fixture = fixtures().join("a2d24-simple");
    let wasm = std::fs::read(fixture.join("policy.wasm")).unwrap();
    let data = std::fs::read(fixture.join("data.json")).unwrap();
    let rego = std::fs::read(fixture.join("policy.rego")).unwrap();
    let path = dir.join("bundle.tar.gz");
    write_bundle(
        &path,
        &[
            ("/.manifest", manifest.as_bytes()),
            ("/data.json", &data),
            ("/policy.rego", &rego),
            ("/policy.wasm", &wasm),
        ],
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_bundle_loads_through_the_config_path() {
    let dir = temp_dir("bundle");
    let manifest = r#"{"revision": "fixture-rev-1", "roots": ["example", "company_name"],
        "wasm": [{"entrypoint": "example/allow", "module": "/policy.wasm"}]}"#;
    let bundle = simple_fixture_bundle(&dir, manifest);
    let config = config_with_policy(json!({
        "source": bundle, "entrypoint": "example/allow", "timeout_ms": 100
    }))
    .unwrap();
    let source = config.policy_source().unwrap();
    assert_eq!(SourceKind::of(&source.path), SourceKind::Bundle);
    let policy = stepguard::policy::load(&source).unwrap();
    assert_eq!(policy.revision(), "fixture-rev-1");
    assert_eq!(
        policy.evaluate(json!({"user": "alice"})).unwrap(),
        json!(true)
    );
    assert_eq!(
        policy.evaluate(json!({"user": "bob"})).unwrap(),
        json!(false)
    );
    // The served pipeline loads the same source, and refuses it: a boolean is not a decision
    // (the start-up trial evaluation reads the result through the output contract).
    let err = App::build(&config).await.err().unwrap().to_string();
    assert!(
        err.contains("trial evaluation") && err.contains("decision is not an object"),
        "{err}"
    );
    // Without a manifest revision, a content hash.
    let unnamed = simple_fixture_bundle(&dir, r#"{"roots": [""]}"#);
    let source = stepguard::policy::PolicySource {
        path: unnamed,
        ..source
    };
    let policy = stepguard::policy::load(&source).unwrap();
    assert!(
        policy.revision().starts_with("sha256:"),
        "{}",
        policy.revision()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_rego_only_bundle_is_evaluated_by_regorus() {
    let dir = temp_dir("rego-bundle");
    let fixture = fixtures().join("dotnet-rbac");
    let rego = std::fs::read(fixture.join("rbac.rego")).unwrap();
    let data = std::fs::read(fixture.join("data.json")).unwrap();
    let path = dir.join("rbac.tgz");
    write_bundle(
        &path,
        &[
            ("/.manifest", br#"{"revision": "rbac-2"}"#),
            ("/app/rbac/rbac.rego", &rego),
            ("/data.json", &data),
        ],
    );
    let config =
        config_with_policy(json!({"source": path, "entrypoint": "app/rbac/allow"})).unwrap();
    let policy = stepguard::policy::load(&config.policy_source().unwrap()).unwrap();
    assert_eq!(policy.revision(), "rbac-2");
    let input = json!({"user": "bob", "action": "update", "type": "finance", "object": "id9"});
    assert_eq!(policy.evaluate(input).unwrap(), json!(true));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bundles_with_escaping_links_or_oversized_entries_are_refused() {
    let dir = temp_dir("bad-bundle");
    let wasm = std::fs::read(fixtures().join("srenatus-browser/policy.wasm")).unwrap();
    let load = |path: &Path| {
        let source = stepguard::policy::PolicySource {
            path: path.to_path_buf(),
            data: None,
            entrypoint: "test/p".into(),
            timeout: TIMEOUT,
        };
        stepguard::policy::load(&source)
            .err()
            .expect("a bad bundle must not load")
            .to_string()
    };
    for name in [
        "../policy.wasm",
        "/a/../../policy.wasm",
        "//etc/policy.wasm",
    ] {
        let path = dir.join("escape.tar.gz");
        write_bundle(&path, &[("/.manifest", b"{}"), (name, &wasm)]);
        let err = load(&path);
        assert!(err.contains(name), "{name}: {err}");
    }

    // A symbolic link, even to a harmless name, is refused.
    let path = dir.join("link.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        let mut builder = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "policy.wasm", "/etc/passwd")
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    assert!(
        load(&path).contains("only regular files"),
        "{}",
        load(&path)
    );

    // An entry whose header claims more than the limit is refused from the header alone (no
    // data follows it).
    let path = dir.join("huge.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        let mut builder = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_path("data.json").unwrap();
        header.set_size(stepguard::policy::bundle::MAX_ENTRY_BYTES + 1);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.get_mut().write_all(header.as_bytes()).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    assert!(load(&path).contains("size limit"), "{}", load(&path));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_wasm_source_reads_its_data_file_and_data_is_refused_elsewhere() {
    let fixture = fixtures().join("weihanchen-rbac");
    let config = config_with_policy(json!({
        "source": fixture.join("policy.wasm"),
        "data": fixture.join("data.json"),
        "entrypoint": "example/allow",
    }))
    .unwrap();
    let policy = stepguard::policy::load(&config.policy_source().unwrap()).unwrap();
    let input = json!({"user": "userA", "action": "edit", "object": "article"});
    assert_eq!(policy.evaluate(input).unwrap(), json!(true));

    let err = config_with_policy(json!({
        "source": "../../policies", "data": fixture.join("data.json"),
    }))
    .expect_err("data with a Rego directory must be refused");
    assert!(err.to_string().contains("policy.data"), "{err}");

    // Existing configs keep loading Rego.
    let config = config_with_policy(json!({"source": "../../policies"})).unwrap();
    assert_eq!(
        SourceKind::of(&config.policy_source().unwrap().path),
        SourceKind::Rego
    );
    let policy = stepguard::policy::load(&config.policy_source().unwrap()).unwrap();
    assert!(policy.revision().starts_with("sha256:"));
}
