//! One single-use grant, 64 requests at once: exactly one approval. Through real Envoy, the
//! gRPC server and the grant store on real Redis — not only the store's atomic consume — with
//! the grant minted by a real OIDC step-up (issue #15, catalogue C2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::stack::header;
use crate::support::stepup::StepUpStack;
use crate::support::tokens::token;

const RACERS: usize = 64;
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_requests_spend_one_single_use_grant_exactly_once() {
    // A generous budget: this test is about how many approvals, and under a loaded machine a
    // 250 ms budget turns the one winner into a budget-overrun 503 (its grant spent, recorded).
    let stack = StepUpStack::start_budgeted(false, false, 2000).await;
    for round in 0..ROUNDS {
        // A subject per round: each round's 63 losers are challenged again, which counts against
        // the subject's challenge rate limit.
        let user = format!("racer{round}");
        let weak = token(&user, "aal1", 30);
        let key = format!("race{round}");
        let browser = stack.browser();
        let r = stack.export(&browser, &key, &weak).send().await.unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
        let location = header(&r, "location");
        let (_, r) = stack
            .complete_in_browser(&browser, &location, &user, "aal3")
            .await;
        assert_eq!(r.status(), 303, "the callback minted the grant");

        let hits = stack.upstream.hits();
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                let request = stack.export(&browser, &key, &weak);
                tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        let mut statuses = Vec::new();
        for racer in racers {
            statuses.push(racer.await.unwrap().unwrap());
        }
        let approved = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(approved, 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| [200, 302, 403, 429].contains(s)),
            "round {round}: every other request is refused or challenged: {statuses:?}"
        );
        assert_eq!(
            stack.upstream.hits(),
            hits + 1,
            "round {round}: the upstream saw one"
        );
    }
}
