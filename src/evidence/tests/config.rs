//! The `evidence` section, checked by field, and the sinks it builds.

use super::*;

/// The quickstart's evidence section replaced by `section`.
fn parse_evidence(section: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
    let text = std::fs::read_to_string(format!("{}/stepguard.yaml", crate::testkit::DIR)).unwrap();
    let start = text.find("\nevidence:\n").unwrap();
    let text = format!("{}{section}", &text[..start + 1]);
    crate::config::Config::parse(&text, std::path::Path::new(crate::testkit::DIR))
}

/// The sink a whole file's `evidence` section builds.
fn sink_of(config: &crate::config::Config) -> Result<Arc<dyn Evidence>, EvidenceError> {
    from_config(config.evidence.as_ref(), &config.policy.entrypoint)
}

fn field_of(section: &str) -> String {
    match parse_evidence(section) {
        Err(crate::config::ConfigError::Invalid { field, .. }) => field,
        Err(e) => e.to_string(),
        Ok(_) => "accepted".into(),
    }
}

#[test]
fn the_evidence_section_is_checked_by_field() {
    let config = crate::testkit::config(|t| t);
    let evidence = config
        .evidence
        .as_ref()
        .expect("the quickstart keeps a spool");
    assert_eq!(evidence.sink, crate::config::EvidenceSink::Spool);
    assert!(parse_evidence("").unwrap().evidence.is_none(), "optional");
    let spool = "evidence:\n  spool:\n    dir: /tmp/x\n";
    let key = "  signing_key_file: k.pem\n";
    assert!(parse_evidence(&format!("{spool}{key}")).is_ok());
    for (section, field) in [
        (spool.to_string(), "evidence.signing_key_file"),
        (format!("evidence:\n{key}"), "evidence.spool"),
        (format!("evidence:\n  sink: log\n{key}"), "evidence.sink"),
        (
            format!("{spool}    segment_bytes: 10\n{key}"),
            "evidence.spool.segment_bytes",
        ),
        (
            format!("{spool}    max_bytes: 5000\n{key}"),
            "evidence.spool.max_bytes",
        ),
        (
            format!("{spool}    max_batch: 0\n{key}"),
            "evidence.spool.max_batch",
        ),
        (
            format!("{spool}{key}  checkpoint: {{every_records: 0}}\n"),
            "evidence.checkpoint.every_records",
        ),
        (
            format!("{spool}{key}  checkpoint: {{every_secs: 0}}\n"),
            "evidence.checkpoint.every_secs",
        ),
        (
            format!("{spool}{key}  redact: {{fields: [body.payee, body.nope]}}\n"),
            "evidence.redact.fields[1]",
        ),
        (
            format!("{spool}{key}  labels: {{app: x}}\n"),
            "evidence.labels",
        ),
        (
            format!("{spool}{key}  redact: {{actions: [keys.export, nope]}}\n"),
            "evidence.redact.actions[1]",
        ),
        (
            // The quickstart's grant store is in memory: nothing to ship to.
            format!("{spool}{key}  stream: {{}}\n"),
            "evidence.stream",
        ),
    ] {
        assert_eq!(field_of(&section), field, "{section}");
    }
    for unknown in [
        format!("{spool}{key}  spoool: 1\n"),
        format!("{spool}    fsync: false\n{key}"),
        format!("{spool}    when_full: drop\n{key}"),
    ] {
        let error = field_of(&unknown);
        assert!(
            error.contains("spoool") || error.contains("fsync") || error.contains("drop"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn from_config_builds_the_configured_sink() {
    let tmp = spool::tests::TempDir::new("from-config");
    let section = format!(
        "evidence:\n  spool:\n    dir: {}\n  signing_key_file: evidence-signing-key.DEV-ONLY.pem\n",
        tmp.path().display()
    );
    let sink = sink_of(&parse_evidence(&section).unwrap()).unwrap();
    let stats = sink.spool().expect("a spool");
    assert!(stats.available && stats.head_seq == 1, "{stats:?}");
    let no_key = section.replace("evidence-signing-key.DEV-ONLY.pem", "missing.pem");
    let error = sink_of(&parse_evidence(&no_key).unwrap()).err().unwrap();
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let log = sink_of(&parse_evidence("").unwrap()).unwrap();
    assert!(log.spool().is_none());
}

#[test]
fn a_stream_ships_to_the_grant_stores_redis() {
    let field = |stream: &str| {
        let text =
            std::fs::read_to_string(format!("{}/stepguard.yaml", crate::testkit::DIR)).unwrap();
        let start = text.find("\nevidence:\n").unwrap();
        let text = text[..start + 1].replace(
            "grants:\n  store: memory\n  max_entries: 100000\n",
            "grants:\n  store: redis\n  url: redis://127.0.0.1:1/0\n",
        );
        let text = format!(
            "{text}evidence:\n  spool:\n    dir: /tmp/x\n  signing_key_file: k.pem\n{stream}"
        );
        match crate::config::Config::parse(&text, std::path::Path::new(crate::testkit::DIR)) {
            Err(crate::config::ConfigError::Invalid { field, .. }) => field,
            Err(e) => e.to_string(),
            Ok(c) => {
                let s = c.evidence.unwrap().stream.unwrap();
                format!("accepted {} {} {} {}", s.key, s.max_len, s.batch, s.poll_ms)
            }
        }
    };
    assert_eq!(
        field("  stream: {}\n"),
        "accepted stepguard:evidence 1000000 256 200"
    );
    assert_eq!(field("  stream: {key: 'a:{b}'}\n"), "evidence.stream.key");
    assert_eq!(
        field("  stream: {max_len: 10}\n"),
        "evidence.stream.max_len"
    );
    assert_eq!(field("  stream: {batch: 0}\n"), "evidence.stream.batch");
    assert_eq!(field("  stream: {poll_ms: 1}\n"), "evidence.stream.poll_ms");
    assert!(field("  stream: {keys: x}\n").contains("keys"));
}
