//! CheckRequests as Envoy's ext_authz filter builds them: the test kit's.

pub use stepguard::testkit::check::request;
