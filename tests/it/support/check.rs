//! CheckRequests as Envoy's ext_authz filter builds them: the test kit's.

pub use stepguard::testkit::check::request;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

/// What a client of stepguard's gRPC port at `grpc_url` sees for `req`: the status and, for an
/// approval, its decision id (`x-stepguard-decision-id`), else the denial's body.
pub async fn answer(grpc_url: String, req: CheckRequest) -> (u16, String) {
    let mut client = AuthorizationClient::connect(grpc_url).await.unwrap();
    match client.check(req).await.unwrap().into_inner().http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let id = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-stepguard-decision-id")
                .map(|h| h.value.clone())
                .unwrap_or_default();
            (200, id)
        }
        Some(HttpResponse::DeniedResponse(d)) => (d.status.map_or(403, |s| s.code as u16), d.body),
        _ => (0, String::new()),
    }
}
