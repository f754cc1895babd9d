//! An upstream OCI registry that is broken in one chosen way, for the
//! failure paths of registry origins and the `/v2` mirror.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_store::Digest;

use crate::server::Server;

/// How a [`BrokenRegistry`] answers under `/v2/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakage {
    /// Serves each object it holds with its last byte flipped; 404 for others.
    Tamper,
    /// 503 for every request, as during an outage.
    Unavailable,
    /// Accepts every request and never answers.
    Hang,
}

struct Shared {
    mode: Mutex<Breakage>,
    objects: HashMap<String, Vec<u8>>,
}

/// A registry on `127.0.0.1:0` holding `objects` (by digest, whatever the
/// repository), broken as its [`Breakage`] says.
pub struct BrokenRegistry {
    server: Server,
    state: Arc<Shared>,
}

impl BrokenRegistry {
    /// Starts one holding `objects`.
    pub fn start(mode: Breakage, objects: &[Vec<u8>]) -> BrokenRegistry {
        let state = Arc::new(Shared {
            mode: Mutex::new(mode),
            objects: objects.iter().map(|b| (Digest::of(b).oci(), b.clone())).collect(),
        });
        let app = Router::new()
            .route("/v2/", get(answer_root))
            .route("/v2/{*rest}", get(answer))
            .with_state(Arc::clone(&state));
        BrokenRegistry { server: Server::start(app), state }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Breaks it another way from now on.
    pub fn set(&self, mode: Breakage) {
        *self.state.mode.lock().expect("mode lock") = mode;
    }
}

fn mode(s: &Shared) -> Breakage {
    *s.mode.lock().expect("mode lock")
}

async fn answer_root(State(s): State<Arc<Shared>>) -> Response {
    match mode(&s) {
        Breakage::Tamper => "{}".into_response(),
        Breakage::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response(),
        Breakage::Hang => std::future::pending().await,
    }
}

async fn answer(State(s): State<Arc<Shared>>, Path(rest): Path<String>) -> Response {
    match mode(&s) {
        Breakage::Tamper => {
            let Some(b) = rest.rsplit('/').next().and_then(|d| s.objects.get(d)) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let mut v = b.clone();
            if let Some(x) = v.last_mut() {
                *x ^= 0xff;
            }
            ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response()
        }
        Breakage::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response(),
        Breakage::Hang => std::future::pending().await,
    }
}
