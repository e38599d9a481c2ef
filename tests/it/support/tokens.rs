//! Dev-key tokens (the quickstart issuer and audience): the test kit's, on the wall clock.

pub use stepguard::testkit::tokens::{
    fresh_claims as claims, fresh_token as token, now, sign_claims as sign, signed_in_at,
};
