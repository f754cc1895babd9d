//! A real S3 server for tests: moto (`python3 -m moto.server`, from the
//! `moto[server]` PyPI package `./scripts/test.sh` installs) on
//! `127.0.0.1`, with one bucket, killed when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::tools_required;

/// How long moto may take to answer before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A moto S3 server process with a bucket, killed and reaped on drop.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The region clients should sign for.
    pub region: String,
    /// The bucket created at start.
    pub bucket: String,
    /// Access key id (moto accepts any).
    pub access_key: String,
    /// Secret access key (moto accepts any).
    pub secret_key: String,
    log: tempfile::NamedTempFile,
}

impl MotoServer {
    /// Starts moto and creates the bucket `cairn-test`; returns once the
    /// bucket exists. `None` (with a SKIPPED message naming `test`) when
    /// moto is not installed, unless `CAIRN_REQUIRE_TOOLS=1`, then it panics.
    pub fn start(test: &str) -> Option<MotoServer> {
        let have = Command::new("python3")
            .args(["-c", "import moto.server, boto3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            assert!(
                !tools_required(),
                "{test}: moto[server] and boto3 are not installed and CAIRN_REQUIRE_TOOLS=1 (run ./scripts/test.sh)"
            );
            eprintln!("SKIPPED {test}: moto[server] and boto3 are not installed (pip install 'moto[server]' boto3)");
            return None;
        }
        let port = crate::free_port();
        let log = tempfile::NamedTempFile::new().expect("temp file for moto's log");
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().expect("moto log")))
            .stderr(Stdio::from(log.reopen().expect("moto log")))
            .spawn()
            .expect("spawn python3 -m moto.server");
        let mut m = MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            region: "us-east-1".into(),
            bucket: "cairn-test".into(),
            access_key: "testing".into(),
            secret_key: "testing".into(),
            log,
        };
        let end = Instant::now() + START_TIMEOUT;
        let addr = format!("127.0.0.1:{port}");
        // Creating the bucket is the readiness check: it answers 200 once moto serves.
        loop {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("moto exited with {status} before answering:\n{}", m.log());
            }
            match http(&addr, "PUT", &format!("/{}", m.bucket)) {
                Ok(200) => break,
                Ok(code) => panic!("moto answered {code} to creating bucket {}:\n{}", m.bucket, m.log()),
                Err(_) => {}
            }
            assert!(Instant::now() < end, "moto did not answer on {addr} within {START_TIMEOUT:?}:\n{}", m.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(m)
    }

    /// What moto logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Runs a Python script with `boto3` in scope as `s3` (a client of this
    /// server) and `bucket`; returns its stdout, panics with its stderr when
    /// it fails. An S3 client independent of Cairn's.
    pub fn boto3(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3, hashlib, sys\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='{}', aws_access_key_id='{}', aws_secret_access_key='{}')\n\
             bucket = '{}'\n",
            self.endpoint, self.region, self.access_key, self.secret_key, self.bucket
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .output()
            .expect("run python3 with boto3");
        assert!(out.status.success(), "boto3 script failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The SHA-256 (hex) of object `key` as boto3 downloads it, streamed.
    pub fn sha256_of(&self, key: &str) -> String {
        let script = format!(
            "h = hashlib.sha256()\n\
             for c in s3.get_object(Bucket=bucket, Key='{key}')['Body'].iter_chunks(1 << 20):\n    h.update(c)\n\
             print(h.hexdigest())\n"
        );
        self.boto3(&script).trim().to_owned()
    }

    /// Every key in the bucket, as boto3 lists them.
    pub fn keys(&self) -> Vec<String> {
        let script = "p = s3.get_paginator('list_objects_v2')\n\
                      for page in p.paginate(Bucket=bucket):\n    \
                      for o in page.get('Contents', []):\n        print(o['Key'])\n";
        self.boto3(script).lines().map(str::to_owned).collect()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with an empty body; the status code.
fn http(addr: &str, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP status line"))
}
