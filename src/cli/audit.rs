//! `stepguard audit verify|export|privileges|public-key`: arguments and printing; the work is in
//! `evidence::audit`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Verify spool files (segments, chain directories or a spool directory): hash chain,
    /// sequence, checkpoints (what each covers, its signature). Names the first record altered,
    /// removed, reordered or truncated, and exits non-zero; reports records after the last
    /// checkpoint as an unsigned tail.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A public key (PEM, DER or raw) to check signatures with; repeat for rotated keys.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// Print the decision records that match, as JSON lines (run `verify` first).
    Export {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// From this time (RFC 3339 or unix seconds), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Until this time (RFC 3339 or unix seconds), exclusive.
        #[arg(long)]
        to: Option<String>,
        /// The subject: `iss|sub`, or `sub`.
        #[arg(long)]
        subject: Option<String>,
        /// A transaction digest.
        #[arg(long)]
        transaction: Option<String>,
    },
    /// Report, per subject, standing privilege against its use (access reviews): privileged
    /// roles and scopes seen in its tokens, privileged actions performed, step-ups, break-glass
    /// uses with their justifications, and with --unused-days the privileges left unused. The
    /// evidence is verified first and refused if it does not verify.
    Privileges {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A public key to verify the evidence with (required unless --unverified); repeatable.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Report on records without verifying them (the report says so).
        #[arg(long)]
        unverified: bool,
        /// A role that is privileged whatever the records show; repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A scope that is privileged whatever the records show; repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// An action whose approvals are privileged uses, besides those the records mark
        /// privileged or irreversible; repeatable.
        #[arg(long = "action")]
        actions: Vec<String>,
        /// Only --role and --scope are privileged (none inferred from privileged actions).
        #[arg(long)]
        no_infer: bool,
        /// List subjects holding privileged roles or scopes with no privileged action in the
        /// last N days.
        #[arg(long)]
        unused_days: Option<u64>,
        /// The reference time for --unused-days (RFC 3339 or unix seconds); default: the
        /// latest record's.
        #[arg(long)]
        now: Option<String>,
        /// `table` (for people), `json` (one document) or `csv` (one row per subject).
        #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
        format: String,
    },
    /// Print the public key (PEM) of an evidence signing key, for `verify --key`.
    PublicKey { signing_key: PathBuf },
}

pub(super) fn audit(command: AuditCommand) -> Result<(), String> {
    use crate::evidence::{PublicKey, SigningKey, audit};
    match command {
        AuditCommand::Verify { files, keys } => {
            let keys = keys
                .iter()
                .map(|k| PublicKey::load(k))
                .collect::<Result<Vec<_>, _>>()?;
            let report = audit::verify(&files, &keys)?;
            print!("{report}");
            match report.first_problem() {
                None if report.ok() => Ok(()),
                None => Err("no evidence records found".into()),
                Some(p) => Err(p.to_string()),
            }
        }
        AuditCommand::Export {
            files,
            from,
            to,
            subject,
            transaction,
        } => {
            let time = |t: Option<String>| t.map(|t| crate::evidence::parse_time(&t)).transpose();
            let filter = audit::Filter {
                from: time(from)?,
                to: time(to)?,
                subject,
                transaction,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let (_, skipped) = audit::export(&files, &filter, &mut out)?;
            std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
            if skipped > 0 {
                eprintln!("stepguard: {skipped} unreadable line(s) skipped: run `audit verify`");
            }
            Ok(())
        }
        AuditCommand::Privileges {
            files,
            keys,
            unverified,
            roles,
            scopes,
            actions,
            no_infer,
            unused_days,
            now,
            format,
        } => {
            let query = audit::privileges::Query {
                keys: keys
                    .iter()
                    .map(|k| PublicKey::load(k))
                    .collect::<Result<Vec<_>, _>>()?,
                unverified,
                roles,
                scopes,
                actions,
                infer: !no_infer,
                unused_days,
                now: now.map(|t| crate::evidence::parse_time(&t)).transpose()?,
            };
            let report = audit::privileges::privileges(&files, &query)?;
            let out = match format.as_str() {
                "json" => report.json(),
                "csv" => report.csv(),
                _ => report.table(),
            };
            // Ignoring a closed pipe (`… | head`).
            let _ = std::io::stdout().lock().write_all(out.as_bytes());
            if unverified {
                eprintln!("stepguard: the evidence was NOT verified (--unverified)");
            }
            Ok(())
        }
        AuditCommand::PublicKey { signing_key } => {
            let key = SigningKey::load(&signing_key)
                .map_err(|e| format!("{}: {e}", signing_key.display()))?;
            print!("{}", key.public_key().to_pem());
            Ok(())
        }
    }
}
