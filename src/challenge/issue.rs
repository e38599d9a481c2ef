//! Issuing a challenge: the record, bound to the browser and its IdP redirect for a browser,
//! stored under the abuse limits — challenges per subject and per source IP (an IPv6 source per
//! /64) in fixed windows, open challenges per subject, and challenges per transaction without a
//! grant in between (the loop guard).

use super::Challenger;
use super::limits::{IssueLimits, Issued, Rate, RateScope, source_tag};
use crate::fault::Fault;
use crate::grant::{Challenge, GrantStore, GrantTerms, Requirement, subject_tag};
use crate::identity::Subject;
use crate::request::AuthzRequest;
use crate::route::Action;
use crate::telemetry::metrics;
use crate::txn::Transaction;

/// What a challenge is issued for.
pub struct ChallengeRequest<'a> {
    /// The decision, for the logs.
    pub decision_id: &'a str,
    pub action: &'a Action,
    pub subject: &'a Subject,
    pub txn: &'a Transaction,
    pub req: &'a AuthzRequest,
    pub requirement: Requirement,
    pub terms: GrantTerms,
    /// The policy revision the step-up is required under.
    pub policy_revision: &'a str,
    pub now: i64,
}

/// A challenge stored and open.
pub struct Issuance {
    pub challenge: Challenge,
    /// Where a browser is sent (the IdP's authorization request), with the binding cookie.
    pub location: Option<String>,
    pub set_cookie: Option<String>,
}

impl Challenger {
    /// Builds the challenge (and, for a browser, its cookie and the IdP's URL: the endpoint
    /// must be known before anything is stored), then stores it under the issue limits.
    pub async fn issue(
        &self,
        grants: &dyn GrantStore,
        r: ChallengeRequest<'_>,
    ) -> Result<Issuance, Fault> {
        let id = r.decision_id;
        let limits = self.issue_limits(r.subject, r.req);
        let mut challenge = self
            .challenge(
                r.action,
                r.subject,
                r.txn,
                r.req,
                r.requirement,
                r.terms,
                r.now,
            )
            .ok_or(Fault::RngUnavailable)?;
        challenge.policy_revision = Some(r.policy_revision.to_string());
        let browser = match r.req.is_browser() {
            false => None,
            true => {
                let cookie = self
                    .bind_browser(&mut challenge)
                    .ok_or(Fault::RngUnavailable)?;
                let location = self
                    .authorization_url(&challenge)
                    .ok_or(Fault::IdpMetadataUnavailable)?;
                Some((location, cookie))
            }
        };
        let issued = super::limits::issue(grants, challenge.clone(), &limits, r.now)
            .await
            .map_err(|e| {
                metrics::store_error("issue_challenge");
                tracing::error!(decision_id = id, error = %e, "issuing challenge failed");
                Fault::GrantStoreUnavailable
            })?;
        match issued {
            Issued::Open { .. } => metrics::challenge_issued(&r.action.name),
            Issued::RateLimited { scope, retry_after } => {
                return Err(match scope {
                    RateScope::Subject => Fault::ChallengeRateLimitedSubject { retry_after },
                    RateScope::SourceIp => Fault::ChallengeRateLimitedSourceIp { retry_after },
                });
            }
            Issued::TooManyOpen { retry_after } => {
                return Err(Fault::TooManyOpenChallenges { retry_after });
            }
            Issued::Looping { attempts, .. } => {
                tracing::warn!(
                    decision_id = id,
                    attempts,
                    "step-up for this transaction keeps failing to complete"
                );
                return Err(Fault::StepUpNotCompleting);
            }
        }
        let (location, set_cookie) = browser.unzip();
        Ok(Issuance {
            challenge,
            location,
            set_cookie,
        })
    }

    /// The abuse limits the store checks as it writes the challenge: challenges per subject and
    /// per source IP in fixed windows (with a `Retry-After`), the subject's first; open
    /// challenges per subject; and challenges per transaction without a grant in between (the
    /// loop guard).
    pub fn issue_limits(&self, subject: &Subject, req: &AuthzRequest) -> IssueLimits {
        let limits = self.limits();
        let mut rates = vec![Rate {
            scope: RateScope::Subject,
            name: subject_tag(&subject.binding_key()),
            window: limits.per_subject.window_secs as i64,
            max: limits.per_subject.max,
        }];
        if let Some(ip) = &req.raw.source_address {
            rates.push(Rate {
                scope: RateScope::SourceIp,
                name: source_tag(ip),
                window: limits.per_source_ip.window_secs as i64,
                max: limits.per_source_ip.max,
            });
        }
        IssueLimits {
            rates,
            max_open: Some(limits.max_open_per_subject),
            max_attempts: Some(limits.max_attempts_per_transaction),
        }
    }
}
