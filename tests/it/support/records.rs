//! Grant and challenge records for store tests: the store contract's (`grant::contract`).

pub use stepguard::grant::contract::{challenge, grant, minted};
