//! The report as printed (table, JSON, CSV), and the decision record fields it reads.

use super::*;

#[test]
fn renders_a_table_json_and_csv() {
    let dir = TempDir::new("privileges-render");
    let path = spool(dir.path(), run(&Recorder::default()), Vec::new());
    let q = Query {
        unused_days: Some(30),
        ..query()
    };
    let report = privileges(&[path], &q).unwrap();

    let json: Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(json["report"], "privileges");
    assert_eq!(
        json["subjects"][0]["privileged_actions"][0]["unix"],
        T0 + 30
    );
    assert_eq!(json["subjects"][0]["step_ups"][0]["method"], "grant_api");
    assert_eq!(json["unused"], json!([format!("{ISS}|bob")]));

    let csv = report.csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], super::super::render::CSV_COLUMNS.join(","));
    assert_eq!(lines.len(), 5);
    assert!(
        lines[1].starts_with(&format!("{ISS}|alice,{ISS},alice,human,")),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(",admin,keys:admin,1,keys.export,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(",1,grant_api,hwk;webauthn,0,,false"),
        "{}",
        lines[1]
    );
    assert!(lines[2].ends_with(",true"), "bob is unused: {}", lines[2]);
    assert!(
        lines[3].contains(&format!(",1,\"{JUSTIFICATION}\",false")),
        "{}",
        lines[3]
    );

    let table = report.table();
    assert!(
        table.starts_with("evidence: verified, 1 chain(s), 7 record(s)"),
        "{table}"
    );
    let bob = table
        .lines()
        .find(|l| l.starts_with(&format!("{ISS}|bob ")))
        .unwrap();
    assert!(
        bob.contains("admin") && bob.trim_end().ends_with("yes"),
        "{bob}"
    );
    assert!(
        table.contains(&format!("justification {JUSTIFICATION:?}")),
        "{table}"
    );
    assert!(
        table.contains("method grant_api  acr aal3  amr hwk,webauthn"),
        "{table}"
    );
    assert!(
        table.contains(&format!("unused (1):\n  {ISS}|bob\n")),
        "{table}"
    );
}

#[test]
fn csv_cells_are_quoted_and_never_formulas() {
    assert_eq!(super::super::render::csv_cell("a,b"), "\"a,b\"");
    assert_eq!(
        super::super::render::csv_cell("say \"hi\""),
        "\"say \"\"hi\"\"\""
    );
    assert_eq!(
        super::super::render::csv_cell("=HYPERLINK(1)"),
        "'=HYPERLINK(1)"
    );
    assert_eq!(super::super::render::csv_cell("plain"), "plain");
}

#[test]
fn the_decision_record_carries_roles_scopes_class_and_justification() {
    let recorder = Recorder::default();
    let carol = token("carol", &["break-glass"], "openid keys:admin");
    let event = Event {
        at: 0,
        who: &carol,
        action: "iam.escalate",
        class: PRIVILEGED,
        verdict: Verdict::Allow,
        reasons: &["grant_satisfies", "break_glass"],
        grant: None,
        justification: Some(JUSTIFICATION),
    };
    let r = Value::Object(decision(&recorder, &event));
    assert_eq!(r["input"]["subject"]["roles"], json!(["break-glass"]));
    assert_eq!(
        r["input"]["subject"]["scopes"],
        json!(["openid", "keys:admin"])
    );
    assert_eq!(
        r["input"]["action_class"],
        json!({"privileged": true, "reversible": false})
    );
    assert_eq!(
        r["input"]["context"]["break_glass_justification"],
        JUSTIFICATION
    );
    assert!(r.get("masked").is_none());

    // Redacted with the action's bound values.
    let redacted = Recorder::new(
        "stepguard/authz/decision",
        &BTreeMap::new(),
        Redaction::new([], Some(&[7u8; 32][..])).with_actions(["iam.escalate".to_string()]),
    );
    let r = Value::Object(decision(&redacted, &event));
    let value = r["input"]["context"]["break_glass_justification"]
        .as_str()
        .unwrap();
    assert!(value.starts_with("hmac-sha256:"), "{value}");
    assert!(!r.to_string().contains("INC-4711"));
    let masked = r["masked"].as_array().unwrap();
    assert!(
        masked.contains(&json!("/input/context/break_glass_justification")),
        "{masked:?}"
    );
}
