//! Blobs this node holds as one of the cluster's `replicas` copies: pushed
//! here by a client, or pulled here as a replica of another node's push.
//! One small document per blob under `replication/<hex>` (content:
//! `<role> <pusher node id>`). A held blob is a root for GC and a pin for
//! the bounded cache, so a node never drops a copy the cluster counts on.
//!
//! Also the commit hook the replicator listens on: every blob committed as
//! [`Provenance::Local`](crate::cache::Provenance::Local) (a client's push,
//! through `/v1`, `/v2` or a snapshot) is reported to it.

use std::fmt;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::store::Store;

/// The metadata directory of the markers.
pub const HELD_DIR: &str = "replication";

/// Largest marker read (a role and a node id).
const MAX_MARKER: u64 = 1024;

/// Why this node holds a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A client pushed it to this node.
    Pushed,
    /// Pulled here as a copy of another node's push.
    Replica,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Pushed => "pushed",
            Role::Replica => "replica",
        }
    }
}

/// A held blob's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Pushed here or a replica.
    pub role: Role,
    /// The node id of the node the client pushed it to.
    pub pusher: String,
}

impl Held {
    fn encode(&self) -> String {
        format!("{} {}\n", self.role.as_str(), self.pusher)
    }

    fn decode(bytes: &[u8]) -> Option<Held> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        let (role, pusher) = text.split_once(' ')?;
        let role = match role {
            "pushed" => Role::Pushed,
            "replica" => Role::Replica,
            _ => return None,
        };
        if pusher.is_empty() || pusher.contains(char::is_whitespace) {
            return None;
        }
        Some(Held { role, pusher: pusher.to_owned() })
    }
}

fn key(d: &Digest) -> String {
    format!("{HELD_DIR}/{d}")
}

/// Called with each blob committed as a client's push (see the module docs).
pub type CommitHook = Arc<dyn Fn(Digest) + Send + Sync>;

/// The installed hook, if any (a wrapper so the store stays `Debug`).
#[derive(Default)]
pub(crate) struct HookSlot(std::sync::OnceLock<CommitHook>);

impl fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() { "HookSlot(set)" } else { "HookSlot(none)" })
    }
}

impl Store {
    /// Installs the hook told about every blob a client pushes to this
    /// store; only the first call has an effect (false after that). The hook
    /// runs on the committing thread with the GC lock held: it must only
    /// note the digest and return.
    pub fn on_local_commit(&self, hook: CommitHook) -> bool {
        self.inner.local_commit.0.set(hook).is_ok()
    }

    /// Tells the hook, if any, about a pushed blob.
    pub(crate) fn local_committed(&self, d: Digest) {
        if let Some(h) = self.inner.local_commit.0.get() {
            h(d);
        }
    }

    /// Records that this node holds `d` as `role` of `pusher`'s push; true
    /// when it held no marker for `d` before. A pushed marker is never
    /// turned into a replica one, and an equal marker is not rewritten.
    pub fn hold(&self, d: &Digest, role: Role, pusher: &str) -> Result<bool> {
        self.check_writable()?;
        let h = Held { role, pusher: pusher.to_owned() };
        let old = self.held(d)?;
        match &old {
            Some(o) if o.role == Role::Pushed && role == Role::Replica => return Ok(false),
            Some(o) if *o == h => return Ok(false),
            _ => {}
        }
        self.backend().put(&key(d), h.encode().as_bytes())?;
        Ok(old.is_none())
    }

    /// This node's marker for `d`; `None` when it does not hold it. An
    /// unreadable marker counts as a replica of an unknown pusher, so the
    /// blob stays pinned.
    pub fn held(&self, d: &Digest) -> Result<Option<Held>> {
        match self.backend().get(&key(d), MAX_MARKER)? {
            None => Ok(None),
            Some(b) => Ok(Some(Held::decode(&b).unwrap_or(Held { role: Role::Replica, pusher: "?".into() }))),
        }
    }

    /// Drops the marker of `d` (the blob becomes an ordinary cached copy).
    pub fn release(&self, d: &Digest) -> Result<bool> {
        self.check_writable()?;
        self.backend().delete(&key(d))
    }

    /// Every blob this node holds, with its marker (names that are not
    /// digests are skipped).
    pub fn held_blobs(&self) -> Result<Vec<(Digest, Held)>> {
        let mut out = Vec::new();
        for n in self.backend().children(HELD_DIR)? {
            let Ok(d) = Digest::parse(&n) else { continue };
            match self.held(&d) {
                Ok(Some(h)) => out.push((d, h)),
                Ok(None) => {}
                Err(StoreError::Symlink(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The digests of [`Store::held_blobs`]: GC and eviction keep them.
    pub(crate) fn held_pins(&self) -> Result<Vec<Digest>> {
        Ok(self.backend().children(HELD_DIR)?.iter().filter_map(|n| Digest::parse(n).ok()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Env, both_backends};

    both_backends!(
        markers_round_trip_and_a_replica_never_demotes_a_push,
        held_blobs_survive_gc_and_are_listed,
        pushes_reach_the_commit_hook_and_fetched_copies_do_not,
        the_bounded_cache_never_evicts_a_held_blob,
    );

    fn fetched(s: &Store, bytes: &[u8]) -> Digest {
        let mut w = s.writer_for(crate::cache::Provenance::Fetched).unwrap();
        std::io::Write::write_all(&mut w, bytes).unwrap();
        w.commit(None).unwrap().digest
    }

    fn the_bounded_cache_never_evicts_a_held_blob(env: &Env) {
        let s = env.store();
        let w = crate::cache::Watermarks { max_bytes: 20, min_free: 0 };
        s.enable_cache(w).unwrap();
        // The replica is the oldest fetched copy: the first victim without its marker.
        let replica = fetched(&s, b"replica-0123456789");
        s.hold(&replica, Role::Replica, "n1").unwrap();
        let other = fetched(&s, b"other-0123456789");
        let r = s.evict(w).unwrap();
        assert_eq!(r.blobs.iter().map(|b| b.0).collect::<Vec<_>>(), [other]);
        assert!(s.exists(&replica));
    }

    fn markers_round_trip_and_a_replica_never_demotes_a_push(env: &Env) {
        let s = env.store();
        let d = s.put_reader(&b"x"[..], None).unwrap().digest;
        assert_eq!(s.held(&d).unwrap(), None);
        assert!(s.hold(&d, Role::Pushed, "a").unwrap(), "newly held");
        assert!(!s.hold(&d, Role::Replica, "b").unwrap());
        assert_eq!(s.held(&d).unwrap(), Some(Held { role: Role::Pushed, pusher: "a".into() }));
        assert!(s.release(&d).unwrap());
        s.hold(&d, Role::Replica, "b").unwrap();
        assert_eq!(s.held_blobs().unwrap(), [(d, Held { role: Role::Replica, pusher: "b".into() })]);
        assert_eq!(Held::decode(b"pushed"), None);
        assert_eq!(Held::decode(b"owner x"), None);
    }

    fn held_blobs_survive_gc_and_are_listed(env: &Env) {
        let s = env.store();
        let kept = s.put_reader(&b"a replica"[..], None).unwrap().digest;
        let gone = s.put_reader(&b"garbage"[..], None).unwrap().digest;
        s.hold(&kept, Role::Replica, "n1").unwrap();
        env.age(&kept, 7200);
        env.age(&gone, 7200);
        let r = s.gc(crate::GcOptions::default()).unwrap();
        assert_eq!(r.blobs.iter().map(|b| b.0).collect::<Vec<_>>(), [gone]);
        assert!(s.exists(&kept));
    }

    fn pushes_reach_the_commit_hook_and_fetched_copies_do_not(env: &Env) {
        let s = env.store();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        assert!(s.on_local_commit(Arc::new(move |d| seen2.lock().unwrap().push(d))));
        let pushed = s.put_reader(&b"pushed"[..], None).unwrap().digest;
        fetched(&s, b"fetched");
        assert_eq!(*seen.lock().unwrap(), [pushed]);
    }
}
