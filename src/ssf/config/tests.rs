//! The section's rules for discovery, stream management and the paths stepguard serves.

use super::*;

const AUD: &str = "audiences: [https://stepguard.example/ssf]\n";

fn parse(yaml: &str) -> SharedSignalsConfig {
    yaml_serde::from_str(yaml).unwrap()
}

/// The field the section refuses, if it does.
fn refused(yaml: &str) -> Option<String> {
    parse(yaml).validate().err().map(|e| e.field)
}

#[test]
fn a_discovered_transmitter_needs_no_key_set_but_a_url_to_discover() {
    let discovered = format!("transmitter:\n  issuer: https://idp.example/t1\n{AUD}push: {{}}\n");
    assert_eq!(refused(&discovered), None);
    let config = parse(&discovered);
    let transmitter = config.transmitter.as_ref().unwrap();
    assert!(transmitter.discovers());
    assert_eq!(transmitter.jwks.url, None);
    assert_eq!(transmitter.jwks.max_bytes, 256 << 10);

    let not_a_url = format!("transmitter:\n  issuer: idp\n{AUD}push: {{}}\n");
    assert_eq!(
        refused(&not_a_url).as_deref(),
        Some("shared_signals.transmitter.issuer")
    );
    let with_metadata_url = format!(
        "transmitter:\n  issuer: idp\n  metadata_url: https://idp.example/ssf-meta\n{AUD}push: {{}}\n"
    );
    assert_eq!(refused(&with_metadata_url), None);
    let plain_http = format!(
        "transmitter:\n  issuer: idp\n  metadata_url: http://idp.example/ssf-meta\n{AUD}push: {{}}\n"
    );
    assert_eq!(
        refused(&plain_http).as_deref(),
        Some("shared_signals.transmitter.metadata_url")
    );
    // An explicit key set: no discovery, any issuer string as before.
    let explicit = format!(
        "transmitter:\n  issuer: idp\n  jwks: {{url: https://idp.example/jwks}}\n{AUD}push: {{}}\n"
    );
    assert_eq!(refused(&explicit), None);
    assert!(!parse(&explicit).transmitter.unwrap().discovers());
    let both = format!(
        "transmitter:\n  issuer: idp\n  jwks: {{url: https://idp.example/jwks, file: k.json}}\n{AUD}push: {{}}\n"
    );
    assert_eq!(
        refused(&both).as_deref(),
        Some("shared_signals.transmitter.jwks")
    );
}

#[test]
fn stream_management_needs_the_push_endpoints_public_url_and_a_sane_recheck() {
    let managed = |management: &str, push: &str| {
        format!(
            "transmitter:\n  issuer: https://idp.example\n  management: {management}\n{AUD}push: {push}\n"
        )
    };
    let ok = managed(
        "{bearer_token_file: t}",
        "{endpoint_url: https://sg.example/ssf/events}",
    );
    assert_eq!(refused(&ok), None);
    let management = parse(&ok).transmitter.unwrap().management.unwrap();
    assert!(management.verify);
    assert_eq!(management.recheck_secs, 3_600);
    assert_eq!(
        refused(&managed("{bearer_token_file: t}", "{}")).as_deref(),
        Some("shared_signals.push.endpoint_url")
    );
    assert_eq!(
        refused(&managed(
            "{bearer_token_file: t}",
            "{endpoint_url: http://sg.example/ssf/events}"
        ))
        .as_deref(),
        Some("shared_signals.push.endpoint_url")
    );
    for (recheck, field) in [
        ("0", None),
        ("60", None),
        (
            "5",
            Some("shared_signals.transmitter.management.recheck_secs"),
        ),
        (
            "100000",
            Some("shared_signals.transmitter.management.recheck_secs"),
        ),
    ] {
        let yaml = managed(
            &format!("{{bearer_token_file: t, recheck_secs: {recheck}}}"),
            "{endpoint_url: https://sg.example/e}",
        );
        assert_eq!(refused(&yaml).as_deref(), field, "{recheck}");
    }
    let no_token = managed("{verify: false}", "{endpoint_url: https://sg.example/e}");
    assert!(yaml_serde::from_str::<SharedSignalsConfig>(&no_token).is_err());
}

#[test]
fn served_paths_stay_apart_and_off_the_well_known_location() {
    let send = "send:\n  issuer: https://sg.example\n  signing_key_file: k.pem\n  \
                receivers: [{url: https://idp.example/ssf, audience: idp}]\n";
    let receiving =
        format!("transmitter:\n  issuer: https://idp.example\n  jwks: {{file: k.json}}\n{AUD}");
    assert_eq!(refused(&format!("{receiving}push: {{}}\n{send}")), None);
    assert_eq!(
        refused(&format!(
            "{receiving}push: {{path: /ssf/jwks.json}}\n{send}"
        ))
        .as_deref(),
        Some("shared_signals.send.jwks_path")
    );
    assert_eq!(
        refused(&format!(
            "{receiving}push: {{path: /.well-known/ssf-configuration/x}}\n"
        ))
        .as_deref(),
        Some("shared_signals.push.path")
    );
    assert_eq!(
        refused(&format!(
            "{send}  jwks_path: /.well-known/ssf-configuration\n"
        ))
        .as_deref(),
        Some("shared_signals.send.jwks_path")
    );
    assert_eq!(
        refused(&format!("{send}  jwks_path: /metrics\n")).as_deref(),
        Some("shared_signals.send.jwks_path")
    );
    assert_eq!(
        refused(&format!("{receiving}push: {{path: /healthz}}\n")).as_deref(),
        Some("shared_signals.push.path")
    );
}
