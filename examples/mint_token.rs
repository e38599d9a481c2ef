//! Mints a DEVELOPMENT token signed with `deploy/local/dev-signing-key.DEV-ONLY.pem` (the test
//! kit's signer), for the quickstart:
//! `cargo run --features testkit --example mint_token -- --acr aal2 --auth-age 10`.

use clap::Parser;
use serde_json::json;
use stepguard::testkit::tokens::{ISSUER, now, sign_text_with};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "alice")]
    sub: String,
    /// The `acr` claim; omitted when empty.
    #[arg(long, default_value = "aal1")]
    acr: String,
    /// Seconds since the user authenticated (`auth_time = now - auth_age`).
    #[arg(long, default_value_t = 3600)]
    auth_age: i64,
    #[arg(long, default_value = "pwd")]
    amr: String,
    #[arg(long, default_value = ISSUER)]
    iss: String,
    #[arg(long, default_value = "stepguard-demo")]
    aud: String,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 600)]
    ttl: i64,
    #[arg(long, default_value = "deploy/local/dev-signing-key.DEV-ONLY.pem")]
    key: String,
    #[arg(long, default_value = "dev-es256-1")]
    kid: String,
}

fn main() {
    let args = Args::parse();
    let now = now();
    let mut claims = json!({
        "iss": args.iss, "sub": args.sub, "aud": args.aud,
        "iat": now, "exp": now + args.ttl, "auth_time": now - args.auth_age,
        "amr": args.amr.split(',').collect::<Vec<_>>(), "sid": "dev-session",
    });
    if !args.acr.is_empty() {
        claims["acr"] = json!(args.acr);
    }
    let header = json!({"alg": "ES256", "kid": args.kid, "typ": "JWT"});
    println!(
        "{}",
        sign_text_with(&header.to_string(), &claims.to_string(), &args.key)
    );
}
