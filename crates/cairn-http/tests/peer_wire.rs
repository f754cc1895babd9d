//! Property tests of the `/v1` JSON a node reads from its peers (and the
//! CLI from its node): `/v1/health`, `/v1/manifests`, `/v1/peers`,
//! `/v1/info`, `/v1/cluster/stats`, `/v1/oci/tag`, the `PUT /v1/blobs` and
//! sync answers. Arbitrary bytes and near-valid objects never panic, and
//! what is accepted serializes back to JSON that parses to the same value.
//! The last test sends such bodies through the real client over loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_cluster::listing::ClusterStats;
use cairn_cluster::{ManifestEntry, PeerHealth, PeerStatus, SyncReport};
use cairn_http::v1::wire::{Health, NodeInfo, PutBlobAnswer, TagAnswer};
use cairn_store::Digest;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A JSON value of any shape, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A string field as a peer might fill it.
fn text() -> impl Strategy<Value = Value> {
    "\\PC{0,16}".prop_map(Value::from)
}

/// A count, sometimes negative, fractional or too large.
fn count() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (0u64..1_000_000).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::from(2.5)),
    ]
}

fn digest_hex() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => any::<[u8; 32]>().prop_map(|b| Value::from(Digest::from_bytes(b).to_string())),
        1 => any::<[u8; 32]>().prop_map(|b| Value::from(Digest::from_bytes(b).oci())),
        1 => "[0-9a-fA-F:]{0,66}".prop_map(Value::from),
    ]
}

fn ref_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "[A-Za-z0-9_-][A-Za-z0-9._-]{0,12}".prop_map(Value::from),
        1 => proptest::sample::select(vec!["..", "a/b", "", "a\\b", "é"]).prop_map(Value::from),
    ]
}

fn ref_file() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "[a-z0-9_-]{1,12}-[0-9a-f]{12}\\.json".prop_map(Value::from),
        1 => proptest::sample::select(vec!["../x.json", "a/b.json", ".json", "x.txt", ""]).prop_map(Value::from),
    ]
}

type Field = (&'static str, BoxedStrategy<Value>);

/// An object with `fields`, each usually its own kind of value, sometimes
/// any JSON or missing; sometimes an extra field.
fn object(fields: Vec<Field>) -> impl Strategy<Value = Value> {
    let per_field: Vec<_> = fields
        .into_iter()
        .map(|(name, good)| {
            let v = prop_oneof![10 => good.prop_map(Some), 1 => any_json().prop_map(Some), 1 => Just(None)];
            v.prop_map(move |v| (name, v))
        })
        .collect();
    (per_field, proptest::option::weighted(0.1, ("[a-z_]{1,8}", any_json()))).prop_map(|(fs, extra)| {
        let mut o = serde_json::Map::new();
        for (k, v) in fs {
            if let Some(v) = v {
                o.insert(k.to_owned(), v);
            }
        }
        if let Some((k, v)) = extra {
            o.insert(k, v);
        }
        Value::Object(o)
    })
}

fn health() -> impl Strategy<Value = Value> {
    object(vec![
        ("status", prop_oneof![Just(Value::from("ok")), text()].boxed()),
        ("node_id", text().boxed()),
        ("time", text().boxed()),
    ])
}

fn manifest_entry() -> impl Strategy<Value = Value> {
    object(vec![
        ("name", ref_name().boxed()),
        ("ref_file", ref_file().boxed()),
        ("blob_count", count().boxed()),
        ("node_id", text().boxed()),
    ])
}

fn peer_status() -> impl Strategy<Value = Value> {
    object(vec![
        ("address", text().boxed()),
        ("node_id", text().boxed()),
        ("healthy", any::<bool>().prop_map(Value::from).boxed()),
        ("latency", count().boxed()),
    ])
}

fn node_info() -> impl Strategy<Value = Value> {
    object(vec![
        ("node_id", text().boxed()),
        ("listen_addr", text().boxed()),
        ("peers", proptest::collection::vec(text(), 0..3).prop_map(Value::from).boxed()),
        ("cas_base", text().boxed()),
    ])
}

fn cluster_stats() -> impl Strategy<Value = Value> {
    object(vec![
        ("total_nodes", count().boxed()),
        ("healthy_nodes", count().boxed()),
        ("total_manifests", count().boxed()),
        ("unique_manifests", count().boxed()),
    ])
}

fn tag_answer() -> impl Strategy<Value = Value> {
    object(vec![
        ("repo", prop_oneof![Just(Value::from("team/app")), text()].boxed()),
        ("tag", prop_oneof![Just(Value::from("v1")), text()].boxed()),
        ("digest", digest_hex().prop_map(|d| json!(format!("sha256:{}", d.as_str().unwrap_or("")))).boxed()),
        ("media_type", prop_oneof![Just(Value::Null), text()].boxed()),
    ])
}

fn put_blob_answer() -> impl Strategy<Value = Value> {
    object(vec![
        ("digest", digest_hex().boxed()),
        ("size", count().boxed()),
        ("existed", any::<bool>().prop_map(Value::from).boxed()),
    ])
}

fn sync_report() -> impl Strategy<Value = Value> {
    object(vec![
        ("ref_file", ref_file().boxed()),
        ("name", text().boxed()),
        ("blob_count", count().boxed()),
        ("fetched", count().boxed()),
        ("bytes", count().boxed()),
        ("peer", text().boxed()),
    ])
}

/// Parses `bytes` as `T`; when accepted, serializing and parsing again
/// gives the same value.
fn round_trips<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Result<bool, String> {
    let Ok(v) = serde_json::from_slice::<T>(bytes) else { return Ok(false) };
    let again = serde_json::to_vec(&v).map_err(|e| format!("{v:?} does not serialize: {e}"))?;
    match serde_json::from_slice::<T>(&again) {
        Ok(back) if back == v => Ok(true),
        Ok(back) => Err(format!("{v:?} came back as {back:?}")),
        Err(e) => Err(format!("{v:?} written as {} does not parse: {e}", String::from_utf8_lossy(&again))),
    }
}

/// Every wire type against one body.
fn check_all(bytes: &[u8]) -> Result<(), String> {
    round_trips::<PeerHealth>(bytes)?;
    round_trips::<Health>(bytes)?;
    round_trips::<Vec<ManifestEntry>>(bytes)?;
    round_trips::<Vec<PeerStatus>>(bytes)?;
    round_trips::<NodeInfo>(bytes)?;
    round_trips::<ClusterStats>(bytes)?;
    round_trips::<TagAnswer>(bytes)?;
    round_trips::<PutBlobAnswer>(bytes)?;
    round_trips::<SyncReport>(bytes)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn peer_json_from_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_all(&bytes).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn peer_json_of_any_shape_never_panics_and_accepted_values_round_trip(v in any_json()) {
        check_all(&serde_json::to_vec(&v).unwrap()).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn near_valid_peer_answers_parse_or_fail_cleanly_and_accepted_ones_round_trip(
        v in prop_oneof![
            health(),
            proptest::collection::vec(manifest_entry(), 0..4).prop_map(Value::from),
            proptest::collection::vec(peer_status(), 0..4).prop_map(Value::from),
            node_info(),
            cluster_stats(),
            tag_answer(),
            put_blob_answer(),
            sync_report(),
        ],
    ) {
        check_all(&serde_json::to_vec(&v).unwrap()).map_err(TestCaseError::fail)?;
    }
}

/// What the fake peer answers to every request.
type Answer = Arc<Mutex<(StatusCode, Vec<u8>)>>;

async fn answer(State(a): State<Answer>) -> Response {
    let (status, body) = a.lock().unwrap().clone();
    (status, [("content-type", "application/json")], body).into_response()
}

/// The real client against a peer answering near-valid or arbitrary
/// bodies: every call returns (no panic, no hang), and a tag it accepts
/// is the one asked for with a valid digest.
#[test]
fn client_calls_survive_any_peer_answer() {
    let current: Answer = Arc::new(Mutex::new((StatusCode::OK, Vec::new())));
    let app = Router::new().fallback(answer).with_state(Arc::clone(&current));
    let srv = cairn_testkit::Server::start(app);
    let peer = srv.addr();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = cairn_http::Client::new(Duration::from_secs(5));
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..100),
        prop_oneof![
            health(),
            proptest::collection::vec(manifest_entry(), 0..3).prop_map(Value::from),
            proptest::collection::vec(peer_status(), 0..3).prop_map(Value::from),
            node_info(),
            cluster_stats(),
            tag_answer(),
        ]
        .prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ];
    let status =
        proptest::sample::select(vec![StatusCode::OK, StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::BAD_GATEWAY]);
    let config = Config {
        cases: 128,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    runner
        .run(&(status, body), |(status, body)| {
            *current.lock().unwrap() = (status, body);
            rt.block_on(async {
                let _ = client.health(&peer).await;
                let _ = client.manifests(&peer).await;
                let _ = client.peers(&peer).await;
                let _ = client.info(&peer).await;
                let _ = client.cluster_stats(&peer).await;
                if let Ok(Some(t)) = client.resolve_tag(&peer, "team/app", "v1").await {
                    prop_assert_eq!(Digest::parse(&t.digest.oci()).unwrap(), t.digest);
                    prop_assert_eq!(status, StatusCode::OK);
                }
                Ok(())
            })
        })
        .unwrap();
}
