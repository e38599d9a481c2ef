use super::*;
use crate::fault::Fault;

#[test]
fn the_log_budget_admits_n_lines_a_second_and_reports_the_rest_once() {
    let budget = LogBudget::new(3);
    let admitted: Vec<_> = (0..10).map(|_| budget.admit(100)).collect();
    assert_eq!(admitted[..3], [Some(0), Some(0), Some(0)]);
    assert!(admitted[3..].iter().all(Option::is_none), "{admitted:?}");
    // The next second's first line reports the seven left out, once.
    assert_eq!(budget.admit(101), Some(7));
    assert_eq!(budget.admit(101), Some(0));
    assert_eq!(budget.admit(101), Some(0));
    assert_eq!(budget.admit(101), None);
    assert_eq!(budget.admit(105), Some(1));
}

#[test]
fn a_budget_of_zero_logs_nothing_and_loses_no_count() {
    let budget = LogBudget::new(0);
    for second in [1, 1, 2, 3] {
        assert_eq!(budget.admit(second), None);
    }
    let w = budget.window.lock().unwrap();
    assert_eq!(w.suppressed, 4);
}

#[test]
fn only_refusals_before_identification_are_intake_refusals() {
    let unauthenticated = Verdict::Unauthenticated {
        description: "A bearer token is required".into(),
    };
    let mut invalid_token = Decision::new("d1".into(), unauthenticated, "invalid_token");
    invalid_token.action = Some("payments.transfer".into());
    let malformed = Decision::refuse("d2".into(), Fault::MalformedRequest);
    let unknown_tag = Decision::refuse("d3".into(), Fault::UnknownActionTag);
    for d in [&invalid_token, &malformed, &unknown_tag] {
        assert!(before_subject(d), "{d:?}");
    }
    // After identification the decision carries its action: it is recorded.
    for (verdict, reason) in [
        (Verdict::Refused, "body_unavailable"),
        (Verdict::Fault, "binding_key_unavailable"),
        (Verdict::Fault, "policy_unavailable"),
    ] {
        let mut d = Decision::new("d4".into(), verdict, reason);
        d.action = Some("payments.transfer".into());
        assert!(!before_subject(&d), "{d:?}");
    }
}
