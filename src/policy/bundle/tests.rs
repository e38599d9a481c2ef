use serde_json::json;

use super::*;

#[test]
fn entry_names_are_relative_to_the_bundle_root() {
    assert_eq!(entry_name("/data.json").unwrap(), "data.json");
    assert_eq!(entry_name("./a/b/data.json").unwrap(), "a/b/data.json");
    assert_eq!(entry_name("a/b/").unwrap(), "a/b");
    assert_eq!(entry_name("./").unwrap(), "");
    assert_eq!(entry_name(".manifest").unwrap(), ".manifest");
}

#[test]
fn entry_names_that_could_leave_the_bundle_are_refused() {
    for raw in [
        "../evil.rego",
        "a/../../evil.rego",
        "/../evil.rego",
        "//etc/passwd",
        "a//b.rego",
        "a/./b.rego",
        "a\\..\\b.rego",
        "C:/windows.rego",
        "a\0b",
    ] {
        let err = entry_name(raw).unwrap_err().to_string();
        assert!(
            err.contains(raw.split('\0').next().unwrap()),
            "{raw}: {err}"
        );
    }
}

fn files(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
        .collect()
}

#[test]
fn nested_data_files_merge_at_their_path() {
    let bundle = Bundle::from_files(files(&[
        ("data.json", r#"{"top": {"x": 1}}"#),
        ("top/y/data.json", r#"{"z": 2}"#),
        ("other/data.yaml", "list: [1, 2]\n"),
        ("p.rego", "package top\nx := 1\n"),
    ]))
    .unwrap();
    assert_eq!(
        bundle.data(),
        &json!({"top": {"x": 1, "y": {"z": 2}}, "other": {"list": [1, 2]}})
    );
    assert!(!bundle.has_wasm());
    assert!(bundle.revision().starts_with("sha256:"));
    assert_eq!(bundle.roots(), [String::new()]);
}

#[test]
fn conflicting_data_is_refused() {
    let err = Bundle::from_files(files(&[
        ("data.json", r#"{"a": {"b": 1}}"#),
        ("a/data.json", r#"{"b": 2}"#),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("`a/b` conflicts"), "{err}");
}

#[test]
fn data_and_packages_must_lie_under_the_roots() {
    let manifest = r#"{"revision": "r1", "roots": ["app/rbac"]}"#;
    let ok = Bundle::from_files(files(&[
        (".manifest", manifest),
        ("data.json", r#"{"app": {"rbac": {"roles": []}}}"#),
        ("app/rbac/x/data.json", "[1]"),
        ("rbac.rego", "package app.rbac.policy\nallow := true\n"),
    ]))
    .unwrap();
    assert_eq!(ok.revision(), "r1");
    let outside = Bundle::from_files(files(&[
        (".manifest", manifest),
        ("data.json", r#"{"app": {"other": 1}}"#),
    ]))
    .unwrap_err();
    assert!(
        outside.to_string().contains("`app/other` is outside"),
        "{outside}"
    );
    let package = Bundle::from_files(files(&[
        (".manifest", manifest),
        ("x.rego", "package app.other\nallow := true\n"),
    ]))
    .unwrap_err();
    assert!(
        package.to_string().contains("package `app.other`"),
        "{package}"
    );
}

#[test]
fn several_wasm_modules_and_delta_bundles_are_refused() {
    let two = Bundle::from_files(files(&[("a.wasm", "x"), ("b/policy.wasm", "y")])).unwrap_err();
    assert!(two.to_string().contains("one is supported"), "{two}");
    let delta = Bundle::from_files(files(&[("patch.json", "{}")])).unwrap_err();
    assert!(delta.to_string().contains("delta"), "{delta}");
    let missing = Bundle::from_files(files(&[(
        ".manifest",
        r#"{"wasm": [{"entrypoint": "a/b", "module": "/policy.wasm"}]}"#,
    )]))
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("`policy.wasm`, which is missing"),
        "{missing}"
    );
}

#[test]
fn the_revision_is_a_content_hash_without_a_manifest_revision() {
    let a = Bundle::from_files(files(&[("p.rego", "package p\nx := 1\n")])).unwrap();
    let b = Bundle::from_files(files(&[("p.rego", "package p\nx := 2\n")])).unwrap();
    assert_ne!(a.revision(), b.revision());
    let c = Bundle::from_files(files(&[
        (".manifest", r#"{"revision": ""}"#),
        ("p.rego", "package p\nx := 1\n"),
    ]))
    .unwrap();
    assert!(c.revision().starts_with("sha256:"));
}

#[test]
fn a_rego_only_bundle_is_evaluated_by_regorus() {
    let bundle = Bundle::from_files(files(&[
        (".manifest", r#"{"revision": "v7", "rego_version": 0}"#),
        ("data.json", r#"{"limits": {"max": 10}}"#),
        (
            "p/p.rego",
            "package p\nallow { input.n <= data.limits.max }\n",
        ),
    ]))
    .unwrap();
    let engine = bundle
        .engine("p/allow", Duration::from_millis(100))
        .unwrap();
    assert_eq!(engine.revision(), "v7");
    assert_eq!(engine.evaluate(json!({"n": 3})).unwrap(), json!(true));
    assert!(matches!(
        engine.evaluate(json!({"n": 30})),
        Err(PolicyError::Undefined)
    ));
}
