//! A real upstream registry for tests: the CNCF distribution registry
//! (`/usr/bin/docker-registry`, Debian's docker-registry 2.8) started on
//! 127.0.0.1 with a temp config and storage, open or behind token auth; a
//! small token server that signs the JWTs it accepts; and a raw HTTP
//! pusher of test images.
//!
//! Distribution's token auth trusts a JWT whose header carries the signing
//! certificate in `x5c` when that certificate chains to `rootcertbundle`.
//! The server makes a self-signed RSA certificate with `openssl` and signs
//! RS256 by running `openssl dgst -sha256 -sign` (PKCS#1 v1.5).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_store::Digest;

use crate::Server;

/// The distribution registry binary.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// openssl, which makes the token server's key and signs its tokens.
pub const OPENSSL: &str = "/usr/bin/openssl";

/// True when `path` is an executable file. When it is not: with
/// `CAIRN_REQUIRE_TOOLS=1` this panics (the suite must not skip), else it
/// prints why the calling test skips.
pub fn tool_available(path: &str) -> bool {
    if Path::new(path).is_file() {
        return true;
    }
    if std::env::var("CAIRN_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{path} is required (CAIRN_REQUIRE_TOOLS is set) but missing; run scripts/test.sh to install it");
    }
    eprintln!("skipping: {path} is not installed (scripts/test.sh installs it)");
    false
}

/// Writes a skopeo policy accepting any image into `dir`; returns its path.
pub fn skopeo_policy(dir: &Path) -> PathBuf {
    let p = dir.join("policy.json");
    std::fs::write(&p, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).expect("write skopeo policy");
    p
}

/// Runs `skopeo --policy <policy> <args>`; panics with its output when it
/// fails, else returns its stdout.
pub fn skopeo(policy: &Path, args: &[&str]) -> String {
    let out = Command::new("skopeo").arg("--policy").arg(policy).args(args).output().expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Base64 with the standard alphabet and padding (`x5c`, basic auth).
pub fn base64_std(data: &[u8]) -> String {
    base64(data, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", true)
}

/// Base64url without padding (JWT segments).
pub fn base64_url(data: &[u8]) -> String {
    base64(data, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", false)
}

fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(alphabet[*s as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn run_openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new(OPENSSL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl (installed by scripts/test.sh)");
    {
        let mut i = child.stdin.take().expect("stdin");
        if let Some(data) = stdin {
            i.write_all(data).expect("write to openssl");
        }
    }
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

struct Signer {
    key: PathBuf,
    cert_der_b64: String,
    issuer: String,
    service: String,
    lifetime: Duration,
    creds: Option<(String, String)>,
    requests: AtomicUsize,
    issued: AtomicUsize,
    scopes: std::sync::Mutex<Vec<String>>,
}

impl Signer {
    /// A signed token granting `scopes` (`repository:NAME:ACTIONS`).
    fn sign(&self, subject: &str, scopes: &[String]) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der_b64]});
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                // `repository:a/b:pull,push`; the name never holds a colon here.
                let mut p = s.splitn(3, ':');
                let (typ, name, actions) = (p.next()?, p.next()?, p.next()?);
                Some(serde_json::json!({"type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let now = now_secs();
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.lifetime.as_secs(),
            "nbf": now.saturating_sub(1),
            "iat": now,
            "jti": format!("cairn-test-{n}"),
            "access": access,
        });
        let input =
            format!("{}.{}", base64_url(header.to_string().as_bytes()), base64_url(claims.to_string().as_bytes()));
        let key = self.key.to_str().expect("utf-8 temp path");
        let sig = run_openssl(&["dgst", "-sha256", "-sign", key], Some(input.as_bytes()));
        format!("{input}.{}", base64_url(&sig))
    }
}

/// A token server for a [`TestRegistry`] with token auth: `GET /token`
/// grants whatever scopes are asked, after checking basic credentials
/// when it was given some.
pub struct TokenServer {
    server: Server,
    signer: Arc<Signer>,
    cert: PathBuf,
}

/// Settings of a [`TokenServer`].
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// Credentials the token endpoint demands; `None` grants anonymous requests.
    pub creds: Option<(String, String)>,
    /// The `expires_in` of issued tokens.
    pub lifetime: Duration,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions { creds: None, lifetime: Duration::from_secs(300) }
    }
}

impl TokenServer {
    /// Makes a key and certificate in `dir` and starts serving. `None`
    /// when openssl is missing and tools are not required (the caller skips).
    pub fn start(dir: &Path, opts: TokenOptions) -> Option<TokenServer> {
        if !tool_available(OPENSSL) {
            return None;
        }
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let (k, c) = (key.to_str().expect("utf-8"), cert.to_str().expect("utf-8"));
        run_openssl(
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k, "-out", c, "-days", "2"]
                .into_iter()
                .chain(["-subj", "/CN=cairn-test-token"])
                .collect::<Vec<_>>(),
            None,
        );
        let der = run_openssl(&["x509", "-in", c, "-outform", "DER"], None);
        let signer = Arc::new(Signer {
            key,
            cert_der_b64: base64_std(&der),
            issuer: "cairn-test-issuer".into(),
            service: "cairn-test-registry".into(),
            lifetime: opts.lifetime,
            creds: opts.creds,
            requests: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
            scopes: Default::default(),
        });
        let app = Router::new().route("/token", get(token)).with_state(Arc::clone(&signer));
        Some(TokenServer { server: Server::start(app), signer, cert })
    }

    /// The realm URL.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// Requests received (granted or not).
    pub fn requests(&self) -> usize {
        self.signer.requests.load(Ordering::SeqCst)
    }

    /// Every scope asked for, in order.
    pub fn scopes(&self) -> Vec<String> {
        self.signer.scopes.lock().expect("scopes").clone()
    }

    /// A token for `scopes`, signed here without a request (for pushing).
    pub fn issue(&self, scopes: &[&str]) -> String {
        self.signer.sign("cairn-test", &scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }
}

async fn token(State(s): State<Arc<Signer>>, Query(q): Query<Vec<(String, String)>>, headers: HeaderMap) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let mut subject = "anonymous".to_owned();
    if let Some((u, p)) = &s.creds {
        let want = format!("Basic {}", base64_std(format!("{u}:{p}").as_bytes()));
        let got = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"token\"")],
                "bad credentials",
            )
                .into_response();
        }
        subject = u.clone();
    }
    if q.iter().any(|(k, v)| k == "service" && *v != s.service) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    let scopes: Vec<String> = q.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    s.scopes.lock().expect("scopes").extend(scopes.iter().cloned());
    let s2 = Arc::clone(&s);
    let signed = tokio::task::spawn_blocking(move || s2.sign(&subject, &scopes)).await.expect("sign");
    axum::Json(serde_json::json!({
        "token": signed,
        "expires_in": s.lifetime.as_secs(),
        "issued_at": "2026-01-01T00:00:00Z",
    }))
    .into_response()
}

/// How a [`TestRegistry`] authenticates.
pub enum RegistryAuth<'a> {
    /// Open to everyone.
    None,
    /// Token auth through this server.
    Token(&'a TokenServer),
}

/// A running distribution registry on 127.0.0.1; killed on drop.
pub struct TestRegistry {
    child: Option<Child>,
    addr: String,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts the registry and waits until it answers `/v2/`. `None` when
    /// the binary is missing and tools are not required (the caller skips).
    pub fn start(auth: RegistryAuth<'_>) -> Option<TestRegistry> {
        if !tool_available(DOCKER_REGISTRY) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // The registry binds the port itself; a freshly freed one is taken.
        let addr = crate::dead_addr();
        let auth_cfg = match auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Token(t) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm(),
                t.signer.service,
                t.signer.issuer,
                t.cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: cairn-test-secret\n{auth_cfg}",
            dir.path().join("storage").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut r = TestRegistry { child: Some(child), addr, dir };
        r.wait_ready();
        Some(r)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // Any answer means it serves; the probe's path is left out of `requests`.
            if http_status(&self.addr, READY_PROBE).is_some() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("docker-registry exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "docker-registry did not answer within 15 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `METHOD PATH` of every request in the access log, in order (less
    /// the harness's own readiness probe).
    pub fn requests(&self) -> Vec<String> {
        // Access log lines are in combined format: `... "GET /v2/x HTTP/1.1" 200 ...`.
        self.log()
            .lines()
            .filter_map(|l| {
                let start = l.find("] \"")? + 3;
                let rest = &l[start..];
                let req = &rest[..rest.find('"')?];
                let mut p = req.split(' ');
                Some(format!("{} {}", p.next()?, p.next()?))
            })
            .filter(|r| !r.ends_with(READY_PROBE))
            .collect()
    }

    /// The requests received so far, up to now: sends a marker request and
    /// waits until the access log shows it, so nothing is still buffered.
    pub fn requests_settled(&self) -> Vec<String> {
        // Unique per call: an earlier marker in the log must not end the wait.
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, Ordering::SeqCst);
        let marker = format!("/v2/cairn-marker-{}-{n}/tags/list", std::process::id());
        let _ = http_status(&self.addr, &marker);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reqs = self.requests();
            if let Some(i) = reqs.iter().position(|r| r.ends_with(&marker)) {
                return reqs[..i].iter().filter(|r| !r.contains("/cairn-marker-")).cloned().collect();
            }
            assert!(Instant::now() < deadline, "marker request never reached the access log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the registry: its port refuses connections from now on.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The path the harness polls until the registry answers.
const READY_PROBE: &str = "/v2/cairn-ready-probe/tags/list";

/// The status of a plain `GET`, or `None` when nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// An image pushed by [`push_image`].
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The manifest's digest.
    pub manifest: Digest,
    /// The manifest bytes.
    pub manifest_bytes: Vec<u8>,
    /// The config blob's digest.
    pub config: Digest,
    /// The layers' digests, in order.
    pub layers: Vec<Digest>,
}

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes an OCI image (a small config and `layers`) to `base_url` as
/// `repo:tag` with monolithic uploads, sending `token` as a bearer token
/// if given. Panics with the registry's answer on any failure.
pub async fn push_image(base_url: &str, token: Option<&str>, repo: &str, tag: &str, layers: &[Vec<u8>]) -> PushedImage {
    let http = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {},
    })
    .to_string()
    .into_bytes();
    let mut descs = Vec::new();
    for b in std::iter::once(&config).chain(layers) {
        let d = Digest::of(b);
        let r = auth(http.post(format!("{base_url}/v2/{repo}/blobs/uploads/"))).send().await.expect("POST upload");
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED, "start upload: {}", r.text().await.unwrap_or_default());
        let loc =
            r.headers().get(header::LOCATION.as_str()).and_then(|v| v.to_str().ok()).expect("Location").to_owned();
        let loc = if loc.starts_with("http") { loc } else { format!("{base_url}{loc}") };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = auth(http.put(format!("{loc}{sep}digest={}", d.oci())))
            .header(header::CONTENT_TYPE.as_str(), "application/octet-stream")
            .body(b.clone())
            .send()
            .await
            .expect("PUT upload");
        assert_eq!(r.status(), reqwest::StatusCode::CREATED, "finish upload: {}", r.text().await.unwrap_or_default());
        descs.push((d, b.len()));
    }
    let layer_json: Vec<serde_json::Value> = descs[1..]
        .iter()
        .map(|(d, n)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.oci(), "size": n})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": descs[0].0.oci(), "size": descs[0].1},
        "layers": layer_json,
    })
    .to_string()
    .into_bytes();
    let r = auth(http.put(format!("{base_url}/v2/{repo}/manifests/{tag}")))
        .header(header::CONTENT_TYPE.as_str(), OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED, "put manifest: {}", r.text().await.unwrap_or_default());
    PushedImage {
        manifest: Digest::of(&manifest),
        manifest_bytes: manifest,
        config: descs[0].0,
        layers: descs[1..].iter().map(|(d, _)| *d).collect(),
    }
}

/// A ustar archive holding one regular file `name` (under 100 bytes) with
/// `data`, closed by the two zero blocks.
pub fn tar_one_file(name: &str, data: &[u8]) -> Vec<u8> {
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut h = [0u8; 512];
    let mut put = |at: usize, field: &[u8]| h[at..at + field.len()].copy_from_slice(field);
    put(0, name.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", data.len()).as_bytes());
    put(136, format!("{:011o}\0", 1_700_000_000u64).as_bytes());
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    // The checksum is the byte sum of the header with its own field as spaces.
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512) + 1024, 0);
    out
}

/// CRC-32 (IEEE, reflected), as gzip's trailer wants it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A gzip member of `data` in stored deflate blocks: valid for every
/// decompressor, no compression library needed.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Writes an OCI image layout at `dir` holding one image tagged `tag`:
/// each of `files` becomes a gzip layer with that one file, and the config
/// lists the layers' diff ids, so a client that unpacks (containerd) can
/// check them. Returns the image as [`push_image`] does.
pub fn oci_layout_image(dir: &Path, tag: &str, files: &[(&str, Vec<u8>)]) -> PushedImage {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let write = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.to_string()), bytes).expect("write layout blob");
        serde_json::json!({"digest": d.oci(), "size": bytes.len()})
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (name, data) in files {
        let tar = tar_one_file(name, data);
        diff_ids.push(Digest::of(&tar).oci());
        let mut desc = write(&gzip_stored(&tar));
        desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
        layers.push(desc);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    })
    .to_string();
    let mut config_desc = write(config.as_bytes());
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": layers,
    })
    .to_string()
    .into_bytes();
    let mut manifest_desc = write(&manifest);
    manifest_desc["mediaType"] = OCI_MANIFEST.into();
    manifest_desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest_desc]});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("write index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
    let digest_of = |v: &serde_json::Value| v["digest"].as_str().and_then(|d| d.parse().ok()).expect("digest");
    PushedImage {
        manifest: Digest::of(&manifest),
        manifest_bytes: manifest,
        config: digest_of(&config_desc),
        layers: layers.iter().map(digest_of).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
        for (plain, enc) in cases {
            assert_eq!(base64_std(plain.as_bytes()), enc);
            assert_eq!(base64_url(plain.as_bytes()), enc.trim_end_matches('='));
        }
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64_std(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn gzip_stored_round_trips_through_the_gzip_tool() {
        if !tool_available("/usr/bin/gzip") {
            return;
        }
        for data in [Vec::new(), b"hello".to_vec(), crate::blob(7, 70_000)] {
            let mut child = Command::new("/usr/bin/gzip")
                .arg("-dc")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run gzip");
            let gz = gzip_stored(&data);
            let mut stdin = child.stdin.take().expect("stdin");
            let writer = std::thread::spawn(move || stdin.write_all(&gz));
            let out = child.wait_with_output().expect("gzip output");
            writer.join().expect("writer").expect("write to gzip");
            assert!(out.status.success(), "gzip -d: {}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout == data, "gzip -d gave different bytes ({} of {})", out.stdout.len(), data.len());
        }
    }

    #[test]
    fn tar_one_file_is_read_back_by_the_tar_tool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = crate::blob(8, 1500);
        std::fs::write(dir.path().join("x.tar"), tar_one_file("etc/data.bin", &data)).expect("write tar");
        let out = Command::new("tar").arg("-xf").arg("x.tar").current_dir(dir.path()).output().expect("run tar");
        assert!(out.status.success(), "tar -x: {}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::read(dir.path().join("etc/data.bin")).expect("extracted") == data);
    }
}
