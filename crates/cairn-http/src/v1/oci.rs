//! `GET /v1/oci/tag`: the answer peers give each other when one of them
//! lacks a tag of the `/v2` mirror (see [`cairn_cluster::mirror`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use cairn_cluster::ClusterError;
use cairn_cluster::mirror::TagTarget;
use cairn_store::oci::{Reference, RepoName, Tag};

use crate::error::ApiError;
use crate::state::AppState;
use crate::v1::wire::{TagAnswer, TagQuery};

/// The local tag, else a fresh cached upstream answer. Never asks anyone
/// else, so peers asking each other cannot loop.
pub(crate) async fn tag(
    State(st): State<Arc<AppState>>,
    Query(q): Query<TagQuery>,
) -> Result<Json<TagAnswer>, ApiError> {
    let repo = RepoName::parse(&q.repo).map_err(|e| ApiError::BadRequest(format!("repo {:?}: {e}", q.repo)))?;
    let tag = Tag::parse(&q.tag).map_err(|e| ApiError::BadRequest(format!("tag {:?}: {e}", q.tag)))?;
    let found = match st.registry.clone() {
        Some(reg) => cairn_store::aio::blocking(move || reg.resolve(&repo, &Reference::Tag(tag)).ok())
            .await
            .map_err(worker_failed)?,
        None => None,
    };
    let (digest, media_type) = match found {
        Some((d, mt)) => (d, Some(mt)),
        None => match st.cluster.cached_tag(&q.repo, &q.tag) {
            Some(TagTarget { digest, media_type, .. }) => (digest, media_type),
            None => return Err(ApiError::UnknownTag { repo: q.repo, tag: q.tag }),
        },
    };
    Ok(Json(TagAnswer { repo: q.repo, tag: q.tag, digest: digest.oci(), media_type }))
}

/// A registry worker that panicked or was cancelled: this node's fault
/// (500), never the caller's.
fn worker_failed(e: cairn_store::StoreError) -> ApiError {
    ApiError::Cluster(ClusterError::Task(format!("the registry worker resolving a tag failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_registry_worker_is_500_not_400() {
        let join = cairn_store::aio::blocking(|| panic!("worker died")).await.unwrap_err();
        let e = worker_failed(join);
        assert_eq!(e.status().as_u16(), 500, "{e}");
    }
}
