//! Free loopback TCP ports: the test kit's.

pub use stepguard::testkit::ports::free_port;
