use super::*;
use crate::fault::Fault;
use crate::grant::Requirement;

fn decision(verdict: Verdict) -> Decision {
    let mut d = Decision::new("dec-1".into(), verdict, "why");
    d.action = Some("payments.transfer".into());
    d.remove_headers = vec![
        "x-stepguard-subject".into(),
        "X-Stepguard-Decision-Id".into(),
    ];
    d
}

fn headers(r: &CheckResponse) -> Vec<(String, String)> {
    let list = match r.http_response.as_ref().unwrap() {
        HttpResponse::OkResponse(ok) => &ok.headers,
        HttpResponse::DeniedResponse(d) => &d.headers,
        _ => panic!("unexpected response kind"),
    };
    list.iter()
        .map(|h| {
            let h = h.header.as_ref().unwrap();
            (h.key.clone(), h.value.clone())
        })
        .collect()
}

fn denied(r: &CheckResponse) -> &DeniedHttpResponse {
    match r.http_response.as_ref().unwrap() {
        HttpResponse::DeniedResponse(d) => d,
        _ => panic!("not denied"),
    }
}

fn requirement() -> Requirement {
    Requirement {
        acr_values: vec!["aal2".into()],
        max_age: 300,
    }
}

#[test]
fn allow_adds_upstream_headers_and_removes_client_ones() {
    let r = render(&decision(Verdict::Allow));
    assert_eq!(r.status.as_ref().unwrap().code, 0);
    let HttpResponse::OkResponse(ok) = r.http_response.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(ok.headers_to_remove, ["x-stepguard-subject"]);
    assert!(headers(&r).contains(&(DECISION_ID_HEADER.into(), "dec-1".into())));
    assert!(headers(&r).contains(&(ACTION_HEADER.into(), "payments.transfer".into())));
    let meta = r.dynamic_metadata.unwrap();
    assert!(meta.fields.contains_key("decision_id"));
}

#[test]
fn browser_challenge_is_a_302_without_caching() {
    let r = render(&decision(Verdict::Challenge {
        challenge_id: "c".into(),
        requirement: requirement(),
        location: Some("https://idp/auth?x=1".into()),
        set_cookie: Some("__Host-stepguard-x=v; Path=/; Secure".into()),
    }));
    assert_eq!(denied(&r).status.unwrap().code, 302);
    let h = headers(&r);
    assert!(h.contains(&("location".into(), "https://idp/auth?x=1".into())));
    assert!(h.contains(&("cache-control".into(), "no-store".into())));
    assert!(h.contains(&(
        "set-cookie".into(),
        "__Host-stepguard-x=v; Path=/; Secure".into()
    )));
}

#[test]
fn api_challenge_is_an_rfc9470_401_with_a_json_body() {
    let r = render(&decision(Verdict::Challenge {
        challenge_id: "c-9".into(),
        requirement: requirement(),
        location: None,
        set_cookie: None,
    }));
    let d = denied(&r);
    assert_eq!(d.status.unwrap().code, 401);
    let www = headers(&r)
        .into_iter()
        .find(|(k, _)| k == "www-authenticate")
        .unwrap()
        .1;
    assert!(
        www.starts_with(r#"Bearer error="insufficient_user_authentication""#),
        "{www}"
    );
    let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["challenge_id"], "c-9");
    assert_eq!(body["max_age"], 300);
}

#[test]
fn invalid_token_deny_and_fault() {
    let r = render(&decision(Verdict::Unauthenticated {
        description: "expired".into(),
    }));
    assert_eq!(denied(&r).status.unwrap().code, 401);
    assert!(
        headers(&r)
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.contains("invalid_token"))
    );
    let r = render(&decision(Verdict::Deny { status: 403 }));
    assert_eq!(denied(&r).status.unwrap().code, 403);
    assert!(!headers(&r).iter().any(|(k, _)| k == "www-authenticate"));
    assert_eq!(
        denied(&r).body,
        r#"{"decision_id":"dec-1","error":"access_denied","reason":"why"}"#
    );
    let r = render(&decision(Verdict::Fault));
    assert_eq!(denied(&r).status.unwrap().code, 503);
    assert!(headers(&r).contains(&("retry-after".into(), "1".into())));
    assert_ne!(r.status.unwrap().code, 0);
}

#[test]
fn rate_limited_is_a_429_with_retry_after() {
    let d = Decision::refuse(
        "dec-1".into(),
        Fault::TooManyOpenChallenges { retry_after: 17 },
    );
    let r = render(&d);
    assert_eq!(denied(&r).status.unwrap().code, 429);
    assert!(headers(&r).contains(&("retry-after".into(), "17".into())));
}

#[test]
fn the_trace_id_goes_with_the_decision_id_when_known() {
    let mut d = decision(Verdict::Allow);
    let r = render(&d);
    assert!(!headers(&r).iter().any(|(k, _)| k == TRACE_ID_HEADER));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    d.trace_id = Some(trace.into());
    // Removing a client-sent x-stepguard-trace-id never removes the one set here.
    d.remove_headers.push(TRACE_ID_HEADER.into());
    let r = render(&d);
    assert!(headers(&r).contains(&(TRACE_ID_HEADER.into(), trace.into())));
    let HttpResponse::OkResponse(ok) = r.http_response.as_ref().unwrap() else {
        panic!()
    };
    assert!(!ok.headers_to_remove.contains(&TRACE_ID_HEADER.to_string()));
    assert!(r.dynamic_metadata.unwrap().fields.contains_key("trace_id"));
    let mut d = decision(Verdict::Deny { status: 403 });
    d.trace_id = Some(trace.into());
    assert!(headers(&render(&d)).contains(&(TRACE_ID_HEADER.into(), trace.into())));
}
