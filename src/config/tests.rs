use super::*;

fn quickstart() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/local/stepguard.yaml"
    ))
    .unwrap()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(
        text,
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local")),
    )
}

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn quickstart_config_is_valid() {
    let config = parse(&quickstart()).unwrap();
    assert_eq!(config.actions.len(), 4);
    assert_eq!(config.challenge.acr_ladder, ["aal1", "aal2", "aal3"]);
    // Relative paths were resolved against the file's directory when it was read.
    let Some(jwks) = &config.identity.issuers[0].jwks.file else {
        panic!("the quickstart reads its keys from a file");
    };
    assert!(jwks.is_absolute(), "{jwks:?}");
    assert!(jwks.exists(), "{jwks:?}");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let text = quickstart().replace("  budget_ms: 250", "  budget_ms: 250\n  budjet: 1");
    assert!(error_of(&text).contains("budjet"), "{}", error_of(&text));
}

#[test]
fn bad_path_template_names_the_field() {
    // Templates are typed when the file is read: the error names the matcher, its line and why.
    let text = quickstart().replace("/v1/keys/{key}/export", "/v1/keys/{key}/**/export");
    let error = error_of(&text);
    assert!(
        error.contains("actions[2].match") && error.contains("line") && error.contains("`**`"),
        "{error}"
    );
}

#[test]
fn bind_must_use_template_params() {
    let text = quickstart().replace("bind: [path.key]", "bind: [path.kee]");
    assert!(
        error_of(&text).contains("actions[2].bind[0]"),
        "{}",
        error_of(&text)
    );
}

#[test]
fn value_field_must_be_bound() {
    let text = quickstart().replace(
        "bind: [path.account, body.amount, body.currency, body.payee]",
        "bind: [path.account, body.currency]",
    );
    assert!(
        error_of(&text).contains("actions[0].value"),
        "{}",
        error_of(&text)
    );
}

#[test]
fn symmetric_and_none_algorithms_are_refused() {
    for alg in ["HS256", "none"] {
        let text = quickstart().replace("algorithms: [ES256]", &format!("algorithms: [{alg}]"));
        assert!(
            error_of(&text).contains("identity.issuers[0].algorithms"),
            "{alg}: {}",
            error_of(&text)
        );
    }
}

#[test]
fn active_key_must_exist() {
    let text = quickstart().replace("active_key: dev1", "active_key: dev2");
    assert!(error_of(&text).contains("transaction.active_key"));
}

#[test]
fn duplicate_actions_and_ladder_values_are_refused() {
    let text = quickstart().replace("name: keys.export", "name: payments.transfer");
    assert!(error_of(&text).contains("duplicate action"));
    let text = quickstart().replace("[aal1, aal2, aal3]", "[aal1, aal1]");
    assert!(error_of(&text).contains("challenge.acr_ladder"));
}

#[test]
fn remote_endpoints_must_be_https() {
    let text = quickstart().replace("http://127.0.0.1:9000/auth", "http://idp.example.com/auth");
    assert!(error_of(&text).contains("challenge.authorization_endpoint"));
}

#[test]
fn jwks_needs_exactly_one_source() {
    let text = quickstart().replace(
        "        file: dev-jwks.json",
        "        file: dev-jwks.json\n        url: https://idp/jwks",
    );
    assert!(error_of(&text).contains("identity.issuers[0].jwks"));
}

#[test]
fn jwks_fetch_limits_have_defaults_and_bounds() {
    let jwks = |fields: &str| {
        quickstart().replace(
            "        file: dev-jwks.json",
            &format!("        url: https://idp.example.com/jwks\n{fields}"),
        )
    };
    let config = parse(&jwks("")).unwrap();
    let JwksSource::Url(url) = config.identity.issuers[0].jwks.source(config.jwks_wait()) else {
        panic!("not a URL source");
    };
    assert_eq!(url.max_stale, Duration::from_secs(86_400));
    assert_eq!(
        (url.max_bytes, url.timeout),
        (256 << 10, Duration::from_secs(5))
    );
    assert_eq!(
        url.wait,
        Duration::from_millis(125),
        "half the decision budget"
    );
    for (fields, field) in [
        (
            "        ttl_secs: 600\n        max_stale_secs: 599\n",
            "jwks.max_stale_secs",
        ),
        ("        ttl_secs: 0\n", "jwks.ttl_secs"),
        ("        max_bytes: 1023\n", "jwks.max_bytes"),
        ("        max_bytes: 16777217\n", "jwks.max_bytes"),
        ("        timeout_ms: 99\n", "jwks.timeout_ms"),
        ("        timeout_ms: 60001\n", "jwks.timeout_ms"),
    ] {
        let error = error_of(&jwks(fields));
        assert!(
            error.contains(&format!("identity.issuers[0].{field}")),
            "{error}"
        );
    }
}

#[test]
fn missing_file_is_a_read_error() {
    assert!(matches!(
        Config::load(Path::new("/nonexistent.yaml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn key_rotation_needs_an_end_of_overlap_for_previous_keys_only() {
    let two_keys = |active_until: &str, previous_until: &str| {
        quickstart().replace(
            "    - id: dev1\n      secret_file: txn-key.DEV-ONLY\n",
            &format!(
                "    - id: dev1\n      secret_file: txn-key.DEV-ONLY\n{active_until}    - id: old\n      secret_file: txn-key.DEV-ONLY\n{previous_until}"
            ),
        )
    };
    assert!(parse(&two_keys("", "      accept_until: 1800000000\n")).is_ok());
    assert!(error_of(&two_keys("", "")).contains("transaction.keys[1].accept_until"));
    let both = two_keys(
        "      accept_until: 1\n",
        "      accept_until: 1800000000\n",
    );
    assert!(error_of(&both).contains("transaction.keys[0].accept_until"));
}

fn with_grant_api(section: &str) -> String {
    quickstart() + "\ngrant_api:\n" + section
}

const GRANT_API_TOKEN: &str = "  token:\n    issuer: https://approvals.example\n    audiences: [stepguard-grant-api]\n    algorithms: [ES256]\n    jwks: {file: dev-jwks.json}\n";

#[test]
fn the_grant_api_is_optional_and_typed() {
    assert!(parse(&quickstart()).unwrap().grant_api.is_none());
    let config = parse(&with_grant_api(&format!(
        "{GRANT_API_TOKEN}  allowed_subjects: [approval-service]\n"
    )))
    .unwrap();
    let api = config.grant_api.unwrap();
    assert_eq!(api.token.issuer, "https://approvals.example");
    assert_eq!(api.allowed_subjects, ["approval-service"]);
    let text = with_grant_api(&format!("{GRANT_API_TOKEN}  allowed_subject: [x]\n"));
    assert!(
        error_of(&text).contains("allowed_subject"),
        "{}",
        error_of(&text)
    );
}

#[test]
fn the_grant_api_token_is_validated_like_an_issuer() {
    let hs = GRANT_API_TOKEN.replace("[ES256]", "[HS256]");
    assert!(error_of(&with_grant_api(&hs)).contains("grant_api.token.algorithms"));
    let no_aud = GRANT_API_TOKEN.replace("[stepguard-grant-api]", "[]");
    assert!(error_of(&with_grant_api(&no_aud)).contains("grant_api.token.audiences"));
    let remote = GRANT_API_TOKEN.replace("{file: dev-jwks.json}", "{url: http://idp.example/jwks}");
    assert!(error_of(&with_grant_api(&remote)).contains("grant_api.token.jwks.url"));
    let empty = format!("{GRANT_API_TOKEN}  allowed_subjects: [\"\"]\n");
    assert!(error_of(&with_grant_api(&empty)).contains("grant_api.allowed_subjects[0]"));
}

#[test]
fn user_tokens_cannot_double_as_grant_api_tokens() {
    let same = GRANT_API_TOKEN
        .replace("https://approvals.example", "https://idp.stepguard.local")
        .replace(
            "[stepguard-grant-api]",
            "[stepguard-grant-api, stepguard-demo]",
        );
    let error = error_of(&with_grant_api(&same));
    assert!(error.contains("grant_api.token.audiences"), "{error}");
    let own_audience =
        GRANT_API_TOKEN.replace("https://approvals.example", "https://idp.stepguard.local");
    assert!(parse(&with_grant_api(&own_audience)).is_ok());
}

#[test]
fn context_signals_and_dry_runs_are_validated() {
    let c = Config::parse(&quickstart(), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.context.velocity_window_secs, 600);
    assert_eq!(
        c.context.break_glass_justification_header,
        "x-break-glass-justification"
    );
    let text = format!("{}\ncontext:\n  velocity_window_secs: 1\n", quickstart());
    assert!(error_of(&text).contains("context.velocity_window_secs"));
    let text = format!(
        "{}\ncontext:\n  device_trust_header: X-Posture\n",
        quickstart()
    );
    assert!(error_of(&text).contains("context.device_trust_header"));
    // A dry run is refused for privileged (and irreversible) actions.
    let text = quickstart().replace(
        "    bind: [path.key]\n",
        "    bind: [path.key]\n    mode: shadow\n",
    );
    assert!(
        error_of(&text).contains("actions[2].mode"),
        "{}",
        error_of(&text)
    );
}

#[test]
fn policy_reload_and_bundle_server_are_validated() {
    let config = parse(&quickstart()).unwrap();
    assert_eq!(config.policy.reload.interval_ms, 10_000);
    assert!(config.policy.bundle.is_none());
    assert!(config.policy_source().is_some());

    let server = |extra: &str| {
        quickstart().replace(
            "  source: ../../policies\n",
            &format!("  bundle:\n    url: https://bundles.example/stepguard.tar.gz\n{extra}"),
        )
    };
    let config = parse(&server("    headers: {x-api-key: k1}\n")).unwrap();
    let bundle = config.policy.bundle.as_ref().unwrap();
    assert_eq!((bundle.interval_ms, bundle.timeout_ms), (30_000, 10_000));
    assert_eq!(bundle.max_bytes, 32 << 20);
    assert!(config.policy_source().is_none());

    let field_of = |text: &str| match parse(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let both = quickstart().replace(
        "  source: ../../policies\n",
        "  source: ../../policies\n  bundle:\n    url: https://b.example/x.tar.gz\n",
    );
    assert_eq!(field_of(&both), "policy.bundle");
    let neither = quickstart().replace("  source: ../../policies\n", "");
    assert_eq!(field_of(&neither), "policy.source");
    assert_eq!(
        field_of(&server("").replace("https://bundles.example", "http://bundles.example")),
        "policy.bundle.url"
    );
    assert_eq!(
        field_of(&server("    interval_ms: 10\n")),
        "policy.bundle.interval_ms"
    );
    assert_eq!(
        field_of(&server("    max_bytes: 0\n")),
        "policy.bundle.max_bytes"
    );
    assert_eq!(
        field_of(&server(
            "    bearer_token_env: T\n    headers: {Authorization: x}\n"
        )),
        "policy.bundle.headers.Authorization"
    );
    assert_eq!(
        field_of(&server(
            "    bearer_token_env: T\n    bearer_token_file: t\n"
        )),
        "policy.bundle.bearer_token_file"
    );
    let reload = quickstart().replace(
        "  timeout_ms: 100\n",
        "  timeout_ms: 100\n  reload:\n    interval_ms: 5\n",
    );
    assert_eq!(field_of(&reload), "policy.reload.interval_ms");
    let off = quickstart().replace(
        "  timeout_ms: 100\n",
        "  timeout_ms: 100\n  reload:\n    interval_ms: 0\n",
    );
    assert_eq!(parse(&off).unwrap().policy.reload.interval_ms, 0);
}

#[test]
fn otlp_export_is_optional_and_checked() {
    assert!(parse(&quickstart()).unwrap().telemetry.otlp.is_none());
    let with = |otlp: &str| {
        quickstart().replace(
            "telemetry:\n  log_format: json\n  log_level: info\n",
            &format!("telemetry:\n  log_format: json\n  log_level: info\n  otlp:\n{otlp}"),
        )
    };
    let config = parse(&with("    endpoint: http://127.0.0.1:4317\n")).unwrap();
    let otlp = config.telemetry.otlp.unwrap();
    assert_eq!(
        (
            otlp.service_name.as_str(),
            otlp.sample_ratio,
            otlp.timeout_ms
        ),
        ("stepguard", None, 3000)
    );
    for (bad, field) in [
        ("    endpoint: 127.0.0.1:4317\n", "telemetry.otlp.endpoint"),
        (
            "    endpoint: https://collector:4317\n",
            "telemetry.otlp.endpoint",
        ),
        (
            "    endpoint: http://c:4317\n    sample_ratio: 1.5\n",
            "telemetry.otlp.sample_ratio",
        ),
        (
            "    endpoint: http://c:4317\n    timeout_ms: 0\n",
            "telemetry.otlp.timeout_ms",
        ),
        (
            "    endpoint: http://c:4317\n    service_name: \"\"\n",
            "telemetry.otlp.service_name",
        ),
    ] {
        assert!(error_of(&with(bad)).contains(field), "{bad}");
    }
}

#[test]
fn plain_http_is_loopback_by_the_parsed_host_only() {
    use super::secure_url;
    for ok in [
        "https://idp.example.com/x",
        "http://127.0.0.1:9000/auth",
        "http://127.1.2.3/x",
        "http://localhost:8080/cb",
        "http://LOCALHOST/cb",
        "http://[::1]:9/x",
    ] {
        assert!(secure_url(ok), "{ok}");
    }
    for bad in [
        "http://localhost.evil.com/auth",
        "http://127.0.0.1@evil.com/auth",
        "http://127.0.0.1.evil.com/auth",
        "http://[::1].evil.com/",
        "http://evil.com/127.0.0.1",
        "https://user:pass@idp.example.com/",
        "http://10.0.0.1/",
        "ftp://127.0.0.1/",
        "not a url",
    ] {
        assert!(!secure_url(bad), "{bad}");
    }
    let text = quickstart().replace(
        "http://127.0.0.1:9000/auth",
        "http://127.0.0.1@evil.example.com/auth",
    );
    assert!(error_of(&text).contains("challenge.authorization_endpoint"));
}

#[test]
fn bound_fields_may_be_declared_optional_and_are_listed_once() {
    let text = quickstart().replace(
        "bind: [path.account, body.amount, body.currency, body.payee]",
        "bind: [path.account, body.amount, body.currency, body.payee, {field: body.memo, optional: true}]",
    );
    let config = parse(&text).unwrap();
    assert!(
        config.actions[0]
            .bind
            .iter()
            .any(|b| b.field().name() == "body.memo" && b.optional())
    );
    assert!(
        config.actions[0]
            .bind
            .iter()
            .any(|b| b.field().name() == "body.amount" && !b.optional())
    );
    let text = quickstart().replace(
        "bind: [path.account, body.amount, body.currency, body.payee]",
        "bind: [path.account, body.amount, body.currency, body.payee, body.amount]",
    );
    assert!(
        error_of(&text).contains("listed twice"),
        "{}",
        error_of(&text)
    );
}

#[test]
fn form_bodies_cannot_bind_nested_names() {
    for nested in ["body.payee.iban", "'body.payee[iban]'"] {
        let text = quickstart().replace(
            "bind: [path.account, body.amount, body.currency, body.payee]",
            &format!("body: form\n    bind: [path.account, body.amount, body.currency, {nested}]"),
        );
        let error = error_of(&text);
        assert!(
            error.contains("actions[0].bind[3]") && error.contains("flat names"),
            "{error}"
        );
    }
}

#[test]
fn the_completion_skew_is_small_and_separate_from_the_token_leeway() {
    let config = parse(&quickstart()).unwrap();
    assert_eq!(
        (
            config.challenge.completion_skew_secs,
            config.identity.leeway_secs
        ),
        (5, 30)
    );
    let with = |secs: u64| {
        quickstart().replace(
            "  ttl_secs: 300\n",
            &format!("  ttl_secs: 300\n  completion_skew_secs: {secs}\n"),
        )
    };
    assert_eq!(parse(&with(30)).unwrap().challenge.completion_skew_secs, 30);
    let e = error_of(&with(31));
    assert!(e.contains("challenge.completion_skew_secs"), "{e}");
    assert!(e.contains("at most 30"), "{e}");
}
