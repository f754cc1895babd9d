//! What remote callers may see of the node's filesystem: nothing. Error
//! bodies have absolute paths replaced (the full message goes to the log),
//! and `/v1/info`'s `cas_base` is the data dir only for loopback callers.

use std::net::SocketAddr;

/// What an absolute path in an error body becomes.
pub const REDACTED_PATH: &str = "<path on the node>";

/// `msg` with every absolute filesystem path replaced by
/// [`REDACTED_PATH`]. API paths (`/v1/...`, `/v2/...`) and URLs are kept.
pub fn error_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    let mut prev: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        let at_boundary = prev.is_none_or(|p| p.is_whitespace() || matches!(p, '"' | '\'' | '(' | '[' | '=' | ','));
        if c == '/' && at_boundary {
            // A quoted path (Debug format) may hold spaces: it ends at its quote.
            let end = if prev == Some('"') {
                rest.find('"')
            } else {
                rest.find(|ch: char| ch.is_whitespace() || matches!(ch, '"' | '\'' | ')' | ']'))
            };
            let end = end.unwrap_or(rest.len());
            let token = &rest[..end];
            // "open /x/y: No such file": the colon and other closing punctuation stay.
            let path = token.trim_end_matches([':', ',', ';', '.']);
            if is_api_path(path) {
                out.push_str(path);
            } else {
                out.push_str(REDACTED_PATH);
            }
            prev = path.chars().last();
            rest = &rest[path.len()..];
            continue;
        }
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn is_api_path(p: &str) -> bool {
    ["/v1", "/v2"].iter().any(|api| p == *api || p.strip_prefix(api).is_some_and(|r| r.starts_with('/')))
}

/// `/v1/info`'s `cas_base` for a caller at `peer`: the data dir for a
/// loopback caller (the operator on the host), else empty. An unknown
/// caller address counts as remote.
pub fn cas_base_for(peer: Option<SocketAddr>, data_dir: &str) -> String {
    let local = peer.is_some_and(|a| match a.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    });
    if local { data_dir.to_owned() } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_are_redacted_and_api_paths_and_urls_kept() {
        let cases = [
            ("open /tmp/.tmpAb12/objects/ab: Permission denied", "open <path on the node>: Permission denied"),
            (r#"cannot snapshot "/srv/data dir": gone"#, r#"cannot snapshot "<path on the node>": gone"#),
            ("rename into refs /d/refs/x-0123456789ab.json.", "rename into refs <path on the node>."),
            ("GET /v1/manifests/a.json from peer 10.0.0.1:7420", "GET /v1/manifests/a.json from peer 10.0.0.1:7420"),
            ("origin http://127.0.0.1:1/blobs/x failed", "origin http://127.0.0.1:1/blobs/x failed"),
            ("see /v2/ and (/var/lib/cairn)", "see /v2/ and (<path on the node>)"),
            ("no paths here", "no paths here"),
            ("/", "<path on the node>"),
        ];
        for (input, want) in cases {
            assert_eq!(error_message(input), want, "{input}");
        }
    }

    #[test]
    fn cas_base_is_shown_to_loopback_callers_only() {
        let dir = "/var/lib/cairn";
        for local in ["127.0.0.1:5", "127.8.9.1:5", "[::1]:5", "[::ffff:127.0.0.1]:5"] {
            assert_eq!(cas_base_for(Some(local.parse().unwrap()), dir), dir, "{local}");
        }
        for remote in ["10.0.0.2:5", "192.168.1.1:5", "[2001:db8::1]:5", "[::ffff:10.0.0.1]:5", "0.0.0.0:5"] {
            assert_eq!(cas_base_for(Some(remote.parse().unwrap()), dir), "", "{remote}");
        }
        assert_eq!(cas_base_for(None, dir), "");
    }
}
