//! Manifest listings across the cluster and cluster statistics.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fetch::Cluster;
use crate::peer::ManifestEntry;

/// `GET /v1/cluster/stats` (exact field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// This node plus its peers.
    pub total_nodes: usize,
    /// This node plus its healthy peers.
    pub healthy_nodes: usize,
    /// Manifest entries across the nodes that answered.
    pub total_manifests: usize,
    /// Distinct ref files among them.
    pub unique_manifests: usize,
    /// Replication as the answering node sees it (Cairn's addition; absent
    /// from nodes that predate `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::replicate::ReplicationStats>,
}

impl Cluster {
    /// This node's manifests as `/v1/manifests` lists them.
    pub async fn local_manifests(&self) -> Result<Vec<ManifestEntry>> {
        let list = self.store().run(|s| s.list_manifests()).await?;
        let node_id = self.config().node_id.clone();
        Ok(list
            .into_iter()
            .filter_map(|s| {
                Some(ManifestEntry {
                    name: cairn_store::RefName::parse(&s.name).ok()?,
                    ref_file: s.ref_file,
                    blob_count: s.blob_count,
                    node_id: node_id.clone(),
                })
            })
            .collect())
    }

    /// Local manifests plus every healthy peer's, asked in parallel. A peer
    /// that fails is skipped (and marked if it is down).
    pub async fn cluster_manifests(&self) -> Result<Vec<ManifestEntry>> {
        Ok(self.cluster_manifests_report().await?.0)
    }

    /// [`Cluster::cluster_manifests`], with the peers that were skipped
    /// (failed, or answered with a listing over the client's size cap).
    /// Peer listings are read a few at a time node-wide, so concurrent
    /// callers cannot multiply the memory they take.
    pub async fn cluster_manifests_report(&self) -> Result<(Vec<ManifestEntry>, Vec<String>)> {
        let mut all = self.local_manifests().await?;
        let timeout = self.config().peer_timeout;
        let peers = self.peers().healthy();
        let answers = join_all(peers.iter().map(|p| async move {
            let _slot = self.inner.listings.acquire().await;
            crate::peer::within(timeout, p, || "GET /v1/manifests".into(), self.api().list_manifests(p)).await
        }))
        .await;
        let mut skipped = Vec::new();
        for (p, a) in peers.iter().zip(answers) {
            match a {
                Ok(list) => all.extend(list),
                Err(e) => {
                    tracing::warn!(peer = %p, error = %e, "peer's manifest list skipped");
                    if e.peer_is_down() {
                        self.peers().mark_down(p, &e.to_string());
                    }
                    skipped.push(p.clone());
                }
            }
        }
        Ok((all, skipped))
    }

    /// Node and manifest counts across the cluster.
    pub async fn stats(&self) -> Result<ClusterStats> {
        let all = self.cluster_manifests().await?;
        let unique: HashSet<&str> = all.iter().map(|e| e.ref_file.as_str()).collect();
        let peers = self.peers().snapshot();
        Ok(ClusterStats {
            total_nodes: peers.len() + 1,
            healthy_nodes: peers.iter().filter(|p| p.healthy).count() + 1,
            total_manifests: all.len(),
            unique_manifests: unique.len(),
            replication: None,
        })
    }
}
