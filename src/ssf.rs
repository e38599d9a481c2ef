//! Shared Signals (OpenID SSF 1.0, CAEP, RISC): stepguard as a receiver of Security Event
//! Tokens (RFC 8417) from an IdP or other transmitter, so assurance follows risk after the
//! moment of sign-in. This module holds what a SET *is* and what it *means*:
//!
//! - [`set`]: the claims of a verified SET (type, audience, `iat`, `jti`, one event, subject);
//!   the signature and issuer are checked by [`crate::identity::signed::SignedBy`] with the
//!   transmitter's key set;
//! - [`subject`]: RFC 9493 subject identifiers and the SSF complex subject, and the keys an
//!   event is filed under (the `iss|sub` keys grants are bound to);
//! - [`event`]: the event types stepguard acts on and [`event::assess`], what a subject's
//!   recorded events mean for a token presented later.

pub mod config;
pub mod event;
pub mod receiver;
pub mod set;
pub mod subject;

#[cfg(test)]
mod tests;
