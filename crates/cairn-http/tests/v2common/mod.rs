//! A /v2 registry server on 127.0.0.1:0 for tests; dropping it stops it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use cairn_http::mirror::RemoteSource;
use cairn_http::v2::{V2State, registry_app};
use cairn_store::oci::{Registry, RegistryOptions};
use cairn_store::{Store, StoreOptions};

pub struct Server {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub registry: Registry,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(dir: &Path) -> Server {
    start_with(dir, None).await
}

pub async fn start_with(dir: &Path, remote: Option<Arc<dyn RemoteSource>>) -> Server {
    let store = Store::open_with(dir, StoreOptions { fsync: false, ..Default::default() }).unwrap();
    // The manifest cache keeps even just-written files, so every test runs through it.
    let registry =
        Registry::new(store, RegistryOptions::default()).unwrap().with_cache_settle(std::time::Duration::ZERO);
    let state = match remote {
        Some(r) => V2State::new(registry.clone()).with_remote(r),
        None => V2State::new(registry.clone()),
    };
    // Bound before serving: the address accepts connections once this returns.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        cairn_http::serve(listener, registry_app(state), std::future::pending(), std::time::Duration::ZERO)
            .await
            .unwrap();
    });
    Server { base: format!("http://{addr}"), addr, registry, task }
}

/// `CAIRN_REQUIRE_TOOLS=1` turns a missing tool into a failure instead of a skip.
pub fn tool_missing(what: &str) -> bool {
    if std::env::var("CAIRN_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{what} is required (CAIRN_REQUIRE_TOOLS=1) but missing; run scripts/test.sh to install it");
    }
    eprintln!("skipping: {what} is not installed");
    true
}
