//! Mints a DEVELOPMENT token signed with `deploy/local/dev-signing-key.DEV-ONLY.pem`, for the
//! quickstart: `cargo run --example mint_token -- --acr aal2 --auth-age 10`.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

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
    #[arg(long, default_value = "https://idp.stepguard.local")]
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let mut claims = json!({
        "iss": args.iss, "sub": args.sub, "aud": args.aud,
        "iat": now, "exp": now + args.ttl, "auth_time": now - args.auth_age,
        "amr": args.amr.split(',').collect::<Vec<_>>(), "sid": "dev-session",
    });
    if !args.acr.is_empty() {
        claims["acr"] = json!(args.acr);
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(args.kid);
    let key = EncodingKey::from_ec_pem(&std::fs::read(&args.key)?)?;
    println!("{}", encode(&header, &claims, &key)?);
    Ok(())
}
