//! The cluster-wide `/v2` mirror's HTTP side: the `/v1/oci/tag` answer
//! peers give each other when one of them lacks a tag.

use serde::{Deserialize, Serialize};

/// `GET /v1/oci/tag?repo=R&tag=T`: what this node's registry has for a tag
/// (its own tags and its fresh upstream answers). 404 when it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagAnswer {
    /// The repository asked for.
    pub repo: String,
    /// The tag asked for.
    pub tag: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// The manifest's media type, when known.
    pub media_type: Option<String>,
}
