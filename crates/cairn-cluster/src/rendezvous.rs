//! Rendezvous (highest random weight) hashing: which node owns a digest.
//!
//! Every node scores every member of the healthy set (itself included) for
//! a digest and sorts by score. The first is the owner, the one node that
//! goes to the origin; the rest are the fallbacks, in order. The score
//! depends only on the digest and the member's node id, so any two nodes
//! that see the same set compute the same ranking, and a member leaving
//! only moves the digests it owned.

use cairn_store::Digest;

/// One member of the set being ranked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// The node id (what the score is computed from).
    pub node_id: String,
    /// Where to reach it; `None` for this node itself.
    pub address: Option<String>,
}

impl Member {
    /// This node.
    pub fn local(node_id: &str) -> Self {
        Member { node_id: node_id.to_owned(), address: None }
    }

    /// A peer at `address`.
    pub fn peer(node_id: &str, address: &str) -> Self {
        Member { node_id: node_id.to_owned(), address: Some(address.to_owned()) }
    }

    /// True for this node itself.
    pub fn is_local(&self) -> bool {
        self.address.is_none()
    }
}

/// The score of `node_id` for `digest`. Stable across processes, builds and
/// platforms (no seeded std hasher), since every node must agree on it.
pub fn score(digest: &Digest, node_id: &str) -> u64 {
    // FNV-1a over digest then id, then a full-avalanche finaliser so ids
    // that differ in one byte still get unrelated scores.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in digest.as_bytes().iter().chain(node_id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The members ranked for `digest`: owner first, then the fallbacks.
/// Members with the same node id keep only the first seen (a node listed
/// twice must not count twice); ties in score break on the node id.
pub fn rank(digest: &Digest, members: &[Member]) -> Vec<Member> {
    let mut seen = std::collections::HashSet::new();
    let mut scored: Vec<(u64, &Member)> =
        members.iter().filter(|m| seen.insert(m.node_id.as_str())).map(|m| (score(digest, &m.node_id), m)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.node_id.cmp(&b.1.node_id)));
    scored.into_iter().map(|(_, m)| m.clone()).collect()
}

/// The owner of `digest` among `members`, if there are any.
pub fn owner<'a>(digest: &Digest, members: &'a [Member]) -> Option<&'a Member> {
    let mut seen = std::collections::HashSet::new();
    members.iter().filter(|m| seen.insert(m.node_id.as_str())).max_by(|a, b| {
        score(digest, &a.node_id).cmp(&score(digest, &b.node_id)).then_with(|| b.node_id.cmp(&a.node_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    /// The set as node `me` sees it: itself local, the others as peers.
    fn view(all: &[String], me: usize) -> Vec<Member> {
        all.iter()
            .enumerate()
            .map(|(i, id)| if i == me { Member::local(id) } else { Member::peer(id, &format!("10.0.0.{i}:7420")) })
            .collect()
    }

    fn ranked_ids(d: &Digest, ms: &[Member]) -> Vec<String> {
        rank(d, ms).into_iter().map(|m| m.node_id).collect()
    }

    #[test]
    fn score_is_stable_across_builds() {
        // Pinned: a change here means mixed-version clusters disagree on owners.
        let d = Digest::of(b"cairn");
        assert_eq!(score(&d, "node-a"), 746_680_787_850_110_972);
        assert_ne!(score(&d, "node-a"), score(&d, "node-b"));
        assert_ne!(score(&d, "node-a"), score(&Digest::of(b"cairn2"), "node-a"));
    }

    #[test]
    fn owner_is_the_first_of_the_ranking() {
        let all = ids(5);
        for k in 0..50u32 {
            let d = Digest::of(&k.to_le_bytes());
            let ms = view(&all, 2);
            assert_eq!(owner(&d, &ms).map(|m| m.node_id.clone()), Some(ranked_ids(&d, &ms)[0].clone()));
        }
    }

    #[test]
    fn empty_set_has_no_owner_and_duplicates_count_once() {
        let d = Digest::of(b"x");
        assert!(owner(&d, &[]).is_none());
        assert!(rank(&d, &[]).is_empty());
        let ms = vec![Member::local("a"), Member::peer("a", "h:1"), Member::peer("b", "h:2")];
        let r = rank(&d, &ms);
        assert_eq!(r.len(), 2);
        assert!(r.iter().any(|m| m.node_id == "a" && m.is_local()), "the first entry for an id wins");
    }

    #[test]
    fn ownership_spreads_over_the_nodes() {
        let all = ids(8);
        let ms = view(&all, 0);
        let mut counts = std::collections::HashMap::new();
        for k in 0..4000u32 {
            let d = Digest::of(&k.to_le_bytes());
            *counts.entry(owner(&d, &ms).map(|m| m.node_id.clone())).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 8, "every node owns something");
        // 500 expected each; a broken hash puts nearly everything on one node.
        assert!(counts.values().all(|c| (350..650).contains(c)), "{counts:?}");
    }

    proptest! {
        #[test]
        fn all_nodes_agree_on_the_ranking_for_the_same_set(n in 1usize..12, seed in any::<[u8; 32]>()) {
            let d = Digest::from_bytes(seed);
            let all = ids(n);
            let first = ranked_ids(&d, &view(&all, 0));
            for me in 1..n {
                // Each node also lists its peers in its own order.
                let mut ms = view(&all, me);
                ms.rotate_left(me);
                prop_assert_eq!(&ranked_ids(&d, &ms), &first);
            }
            prop_assert_eq!(first.len(), n);
        }

        #[test]
        fn a_node_leaving_only_moves_what_it_owned(n in 2usize..12, gone in 0usize..12, seed in any::<[u8; 32]>()) {
            let gone = gone % n;
            let d = Digest::from_bytes(seed);
            let all = ids(n);
            let before = ranked_ids(&d, &view(&all, 0));
            let rest: Vec<String> = all.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, s)| s.clone()).collect();
            let after = ranked_ids(&d, &view(&rest, 0));
            // The ranking of the others is unchanged: the next in line takes over.
            let expected: Vec<String> = before.iter().filter(|id| **id != all[gone]).cloned().collect();
            prop_assert_eq!(after, expected);
        }

        #[test]
        fn a_node_joining_takes_only_digests_it_now_owns(n in 1usize..12, seed in any::<[u8; 32]>()) {
            let d = Digest::from_bytes(seed);
            let all = ids(n + 1);
            let before = owner(&d, &view(&all[..n], 0)).map(|m| m.node_id.clone());
            let after = owner(&d, &view(&all, 0)).map(|m| m.node_id.clone());
            prop_assert!(after == before || after.as_deref() == Some(all[n].as_str()));
        }
    }
}
