//! The Redis key schema (`docs/redis.md`): every key of one script shares a hash tag, hence a
//! cluster slot.

/// The key schema (see `docs/redis.md`). Everything about one transaction is hash-tagged on its
/// digest, so it shares one cluster slot.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>:{<digest>}:grant`
    pub(super) fn grant(&self, digest: &str) -> Option<String> {
        key_part(digest).then(|| format!("{}:{{{digest}}}:grant", self.prefix))
    }

    /// `<prefix>:{<digest>}:challenge:<id>`
    pub(super) fn challenge(&self, digest: &str, id: &str) -> Option<String> {
        (key_part(digest) && key_part(id))
            .then(|| format!("{}:{{{digest}}}:challenge:{id}", self.prefix))
    }

    /// `<prefix>:{<digest>}:attempts` → challenges issued for the transaction since its last
    /// grant (the loop guard).
    pub(super) fn attempts(&self, digest: &str) -> Option<String> {
        key_part(digest).then(|| format!("{}:{{{digest}}}:attempts", self.prefix))
    }

    /// `<prefix>:event:{<name>}` → set once: an authentication event already used.
    pub(super) fn event(&self, name: &str) -> Option<String> {
        key_part(name).then(|| format!("{}:event:{{{name}}}", self.prefix))
    }

    /// `<prefix>:{<digest>}:latest` → the id of the transaction's most recent challenge.
    pub(super) fn latest(&self, digest: &str) -> Option<String> {
        key_part(digest).then(|| format!("{}:{{{digest}}}:latest", self.prefix))
    }

    /// `<prefix>:grants:{<subject tag>}` → the subject's transactions with a grant, scored by
    /// the grant's expiry (what revoking a subject's grants walks).
    pub(super) fn subject_grants(&self, subject: &str) -> Option<String> {
        key_part(subject).then(|| format!("{}:grants:{{{subject}}}", self.prefix))
    }

    /// `<prefix>:open:{<subject tag>}` → the subject's transactions with an open challenge,
    /// scored by expiry.
    pub(super) fn open(&self, subject: &str) -> Option<String> {
        key_part(subject).then(|| format!("{}:open:{{{subject}}}", self.prefix))
    }

    /// `<prefix>:count:{<name>}:<window index>` → events counted in that window.
    pub(super) fn counter(&self, name: &str, index: i64) -> Option<String> {
        key_part(name).then(|| format!("{}:count:{{{name}}}:{index}", self.prefix))
    }

    /// `<prefix>:journal:{<name>}` → a journal's entries, scored by expiry (ms).
    pub(super) fn journal(&self, name: &str) -> Option<String> {
        key_part(name).then(|| format!("{}:journal:{{{name}}}", self.prefix))
    }

    /// `<prefix>:challenge:{<id>}` → the challenge's digest.
    pub(super) fn challenge_index(&self, id: &str) -> Option<String> {
        key_part(id).then(|| format!("{}:challenge:{{{id}}}", self.prefix))
    }
}

/// The part of a key that decides its cluster slot: between the first `{` and the next `}`.
pub(super) fn hash_tag(key: &str) -> &str {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or(key, |(tag, _)| tag)
}

/// Digests (`<key id>:<base64url>`) and challenge ids (base64url) are printable ASCII; anything
/// with a brace (which would move the hash tag), a space or a control byte is not ours.
fn key_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
}
