//! The fan-out benchmark's origin: serves `DIR/<hex digest>` files on
//! `/blobs/{digest}` with a first-byte delay and a shared bandwidth, and
//! counts requests and bytes on `/stats` (see `cairn_testkit::paced`).
//!
//! Usage: `cairn-bench-origin DIR LISTEN_ADDR FIRST_BYTE_MS RATE_BYTES_PER_S` (rate 0: unlimited).

use std::time::Duration;

use cairn_testkit::OriginMode;
use cairn_testkit::paced::{Blobs, PacedSpec, PacedState, router};

fn usage(why: &str) -> ! {
    eprintln!("cairn-bench-origin: {why}\nusage: cairn-bench-origin DIR LISTEN_ADDR FIRST_BYTE_MS RATE_BYTES_PER_S");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, listen, delay, rate] = args.as_slice() else { usage("expected 4 arguments") };
    let delay: u64 = delay.parse().unwrap_or_else(|_| usage(&format!("FIRST_BYTE_MS {delay:?} is not a number")));
    let rate: u64 = rate.parse().unwrap_or_else(|_| usage(&format!("RATE_BYTES_PER_S {rate:?} is not a number")));
    let spec = PacedSpec {
        first_byte: Duration::from_millis(delay),
        rate: (rate > 0).then_some(rate),
        mode: OriginMode::Good,
        fail_first: 0,
    };
    let state = PacedState::new(Blobs::Dir(dir.into()), spec);
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| usage(&format!("cannot start a runtime: {e}")));
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .unwrap_or_else(|e| usage(&format!("cannot listen on {listen}: {e}")));
        eprintln!("cairn-bench-origin: serving {dir} on {listen}");
        if let Err(e) = axum::serve(l, router(state)).await {
            usage(&format!("server failed: {e}"));
        }
    });
}
