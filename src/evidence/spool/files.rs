//! The spool on disk:
//!
//! ```text
//! <dir>/<chain>/LOCK                        held (flock) by the process writing the chain
//! <dir>/<chain>/00000000000000000001.jsonl  segments, named by the seq of their first record
//! <dir>/<chain>/00000000000000052311.jsonl
//! <dir>/<chain>/00000000000000052311.jsonl.torn-<unix>   bytes cut from a torn tail
//! ```
//!
//! A chain id is its creation time and a random suffix (`20250102T030405Z-1a2b3c4d`), so the
//! most recent sorts last. Opening takes over the most recent chain no live process holds and
//! whose tail verifies, or starts a new one.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::evidence::chain::{self, Head};
use crate::evidence::key::PublicKey;
use crate::evidence::time;

const LOCK: &str = "LOCK";

/// The name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jsonl")
}

/// The first `seq` a segment's name promises.
pub fn segment_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".jsonl")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// An open chain: where the next record goes.
pub struct Open {
    pub chain: String,
    pub dir: PathBuf,
    /// Held for as long as this is open.
    _lock: File,
    pub file: File,
    pub segment: PathBuf,
    pub len: u64,
    pub head: Head,
    /// A new chain (not taken over).
    pub created: bool,
    /// Bytes cut from a torn tail when it was opened, and where they were kept.
    pub torn: Option<(u64, PathBuf)>,
}

/// Opens the spool in `dir`: the most recent chain that is free and verifies, else a new one.
pub fn open(dir: &Path, key: &PublicKey) -> Result<Open, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for chain in chains(dir).into_iter().rev() {
        let Ok(lock) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(chain.join(LOCK))
        else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        match take_over(&chain, lock, key) {
            Ok(open) => return Ok(open),
            Err(e) => tracing::error!(
                chain = %chain.display(),
                error = %e,
                "evidence chain not continued (left as it is for audit)"
            ),
        }
    }
    start(dir)
}

/// The chain directories in `dir`, oldest first.
pub fn chains(dir: &Path) -> Vec<PathBuf> {
    let mut chains: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && (p.join(LOCK).exists() || !segments(p).is_empty()))
        .collect();
    chains.sort();
    chains
}

/// A chain's segments, in order.
pub fn segments(chain: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(chain)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| Some((segment_seq(&p)?, p)))
        .collect();
    segments.sort();
    segments.into_iter().map(|(_, p)| p).collect()
}

fn start(dir: &Path) -> Result<Open, String> {
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let id = chain_id()?;
    let chain = dir.join(&id);
    fs::create_dir(&chain).map_err(|e| err(&chain, e))?;
    sync_dir(dir).map_err(|e| err(dir, e))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(chain.join(LOCK))
        .map_err(|e| err(&chain, e))?;
    lock.try_lock()
        .map_err(|e| format!("{}: {e}", chain.display()))?;
    let segment = chain.join(segment_name(1));
    let file = create_segment(&segment).map_err(|e| err(&segment, e))?;
    sync_dir(&chain).map_err(|e| err(&chain, e))?;
    Ok(Open {
        chain: id,
        dir: chain,
        _lock: lock,
        file,
        segment,
        len: 0,
        head: Head::genesis(),
        created: true,
        torn: None,
    })
}

/// Continues a locked chain: cuts a torn tail (and records after the last checkpoint), verifies
/// the last record, opens for append.
fn take_over(chain: &Path, lock: File, key: &PublicKey) -> Result<Open, String> {
    let id = chain
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mut segments = segments(chain);
    if segments.is_empty() {
        let segment = chain.join(segment_name(1));
        create_segment(&segment).map_err(|e| err(&segment, e))?;
        sync_dir(chain).map_err(|e| err(chain, e))?;
        segments.push(segment);
    }
    let segment = segments.last().cloned().unwrap_or_default();
    let bytes = fs::read(&segment).map_err(|e| err(&segment, e))?;
    let good = covered_len(&bytes[..intact_len(&bytes)]);
    let torn = if good < bytes.len() {
        Some(cut(&segment, &bytes[good..], good as u64).map_err(|e| err(&segment, e))?)
    } else {
        None
    };
    let head = match last_line(&bytes[..good]) {
        Some(line) => tail_head(line, &id, key)?,
        None => {
            // An empty segment (a crash just after rotating): the head ends the previous one.
            let previous = segments.iter().rev().nth(1);
            let head = match previous {
                Some(p) => {
                    let bytes = fs::read(p).map_err(|e| err(p, e))?;
                    let line = last_line(&bytes)
                        .ok_or_else(|| format!("{}: empty closed segment", p.display()))?;
                    tail_head(line, &id, key)?
                }
                None => Head::genesis(),
            };
            if segment_seq(&segment) != Some(head.seq + 1) {
                return Err(format!(
                    "{}: an empty segment that does not follow seq {}",
                    segment.display(),
                    head.seq
                ));
            }
            head
        }
    };
    let file = OpenOptions::new()
        .append(true)
        .open(&segment)
        .map_err(|e| err(&segment, e))?;
    Ok(Open {
        chain: id,
        dir: chain.to_path_buf(),
        _lock: lock,
        file,
        segment,
        len: good as u64,
        head,
        created: false,
        torn,
    })
}

/// Length of the intact prefix: complete lines, without trailing lines that are not even JSON
/// (what a crash leaves: a partial line, or zeroes where the file grew before its data was
/// written). A line that is JSON but does not verify is not cut: the chain is then refused.
fn intact_len(bytes: &[u8]) -> usize {
    let mut good = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    while good > 0 {
        let start = bytes[..good - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = &bytes[start..good - 1];
        if serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| v.is_object()) {
            break;
        }
        good = start;
    }
    good
}

/// Length of `intact` without the records after its last checkpoint: a batch is written with
/// its checkpoint in one `write` and acknowledged after the `fsync`, so records without one are
/// what a crash left of a write cut short — never acknowledged — or were appended by someone
/// without the key. They are cut (and kept beside the segment) rather than signed by the next
/// checkpoint. A batch never spans segments, so they are all in the last one.
fn covered_len(intact: &[u8]) -> usize {
    let mut good = intact.len();
    while let Some(line) = last_line(&intact[..good]) {
        match chain::check(line) {
            Ok(r) if r.sig.is_none() && r.version() >= 2 => good -= line.len() + 1,
            _ => break,
        }
    }
    good
}

/// The last complete line (without its newline).
fn last_line(bytes: &[u8]) -> Option<&[u8]> {
    let body = bytes.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Some(&body[start..])
}

/// Keeps the torn bytes beside the segment, then cuts them off.
fn cut(segment: &Path, torn: &[u8], keep: u64) -> std::io::Result<(u64, PathBuf)> {
    let (_, unix) = time::stamp(std::time::SystemTime::now());
    let mut name = segment.as_os_str().to_owned();
    name.push(format!(".torn-{unix}"));
    let kept = PathBuf::from(name);
    let mut file = OpenOptions::new().create(true).append(true).open(&kept)?;
    file.write_all(torn)?;
    file.sync_all()?;
    let segment_file = OpenOptions::new().write(true).open(segment)?;
    segment_file.set_len(keep)?;
    segment_file.sync_all()?;
    tracing::warn!(
        segment = %segment.display(),
        bytes = torn.len(),
        kept = %kept.display(),
        "evidence spool: torn tail cut (a crash during a write: a partial line, or records \
         without their batch's checkpoint, never acknowledged)"
    );
    Ok((torn.len() as u64, kept))
}

/// The head a verified last record gives.
fn tail_head(line: &[u8], chain: &str, key: &PublicKey) -> Result<Head, String> {
    let record = chain::check(line).map_err(|e| format!("last record: {e}"))?;
    if record.chain != chain {
        return Err(format!("last record belongs to chain {}", record.chain));
    }
    // Every batch ends with a signed checkpoint; `covered_len` cut what follows the last one.
    if record.sig.is_none() {
        return Err(format!(
            "last record (seq {}) is not covered by a signed checkpoint",
            record.seq
        ));
    }
    // A record signed by a previous key cannot be checked here; `audit verify` checks it.
    if record.key_id.as_deref() == Some(key.id()) && !record.signed_by(key) {
        return Err(format!("last record (seq {}): bad signature", record.seq));
    }
    Ok(Head {
        seq: record.seq,
        hash: record.hash,
    })
}

/// Moves `open` to a new segment starting after its head.
pub fn rotate(open: &mut Open) -> std::io::Result<()> {
    let segment = open.dir.join(segment_name(open.head.seq + 1));
    let file = create_segment(&segment)?;
    sync_dir(&open.dir)?;
    open.file = file;
    open.segment = segment;
    open.len = 0;
    Ok(())
}

fn create_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create_new(true).append(true).open(path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes of every segment of every chain in `dir`.
pub fn spool_bytes(dir: &Path) -> u64 {
    chains(dir)
        .iter()
        .flat_map(|c| segments(c))
        .filter_map(|s| fs::metadata(s).ok())
        .map(|m| m.len())
        .sum()
}

/// Deletes the oldest closed segments (never a chain's last, nor one with a record after
/// `shipped(chain)`, the last `seq` shipped) until `need` bytes are freed; the names deleted.
/// A closed segment's last record is the one before the next segment's first.
pub fn delete_oldest(dir: &Path, need: u64, shipped: impl Fn(&str) -> u64) -> Vec<String> {
    let mut closed: Vec<(PathBuf, String)> = Vec::new();
    for chain in chains(dir) {
        let id = chain
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let upto = shipped(&id);
        let segments = segments(&chain);
        for pair in segments.windows(2) {
            let last = segment_seq(&pair[1]).unwrap_or(0).saturating_sub(1);
            if last > upto {
                break;
            }
            closed.push((pair[0].clone(), id.clone()));
        }
    }
    closed
        .sort_by(|a, b| (a.0.parent(), segment_seq(&a.0)).cmp(&(b.0.parent(), segment_seq(&b.0))));
    let mut freed = 0;
    let mut deleted = Vec::new();
    for (segment, chain) in closed {
        if freed >= need {
            break;
        }
        let len = fs::metadata(&segment).map(|m| m.len()).unwrap_or(0);
        if fs::remove_file(&segment).is_ok() {
            freed += len;
            if let Some(name) = segment.file_name() {
                deleted.push(format!("{chain}/{}", name.to_string_lossy()));
            }
        }
    }
    deleted
}

fn chain_id() -> Result<String, String> {
    let (stamp, _) = time::stamp(std::time::SystemTime::now());
    let compact: String = stamp[..19]
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let mut random = [0u8; 4];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| "no randomness".to_string())?;
    Ok(format!(
        "{compact}Z-{}",
        crate::evidence::canonical::hex(&random)
    ))
}
