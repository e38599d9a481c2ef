use super::*;

#[test]
fn the_client_s_faults_are_told_from_the_others() {
    let missing = Fault::unbound(TxnError::Missing("body.amount".into()));
    assert_eq!(missing.reason(), "missing_bound_field");
    assert_eq!(missing.cause(), Cause::Client);
    assert_eq!(missing.field(), Some("body.amount"));
    let key = Fault::unbound(TxnError::Key("k1".into(), "unknown".into()));
    assert_eq!(key, Fault::BindingKeyUnavailable);
    assert_eq!(key.cause(), Cause::Stepguard);
    assert_eq!(key.field(), None);
    assert_eq!(Fault::GrantStoreUnavailable.cause(), Cause::Dependency);
    let limited = Fault::ChallengeRateLimitedSourceIp { retry_after: 9 };
    assert_eq!(limited.reason(), "challenge_rate_limited_source_ip");
    assert_eq!(limited.retry_after(), Some(9));
    assert_eq!(Fault::PolicyTimeout.retry_after(), None);
}

#[test]
fn every_reason_is_a_documented_metric_label() {
    let faults = [
        Fault::MalformedRequest,
        Fault::WorkloadRequiresTransactionToken,
        Fault::GrantAlreadyUsed,
        Fault::SessionRevoked,
        Fault::AccountEvent,
        Fault::StepUpNotCompleting,
        Fault::ChallengeRateLimitedSubject { retry_after: 1 },
        Fault::ChallengeRateLimitedSourceIp { retry_after: 1 },
        Fault::TooManyOpenChallenges { retry_after: 1 },
        Fault::GrantStoreUnavailable,
        Fault::EvidenceUnavailable,
        Fault::IdpMetadataUnavailable,
        Fault::PolicyUnavailable,
        Fault::UnknownActionTag,
        Fault::BindingKeyUnavailable,
        Fault::RngUnavailable,
        Fault::PolicyError,
        Fault::PolicyTimeout,
        Fault::PolicyPanicked,
        Fault::PolicyContractViolation,
        Fault::PolicyUsedMissingGrant,
        Fault::DecisionBudgetExceeded,
        Fault::InternalError,
    ];
    for fault in faults {
        assert!(
            crate::telemetry::metrics::REASONS.contains(&fault.reason()),
            "{fault:?}"
        );
    }
}
