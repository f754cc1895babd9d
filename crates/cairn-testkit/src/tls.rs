//! Test certificates: a CA and certificates it signs (for `127.0.0.1` and
//! `localhost`, usable as server and as client certificates), written as
//! PEM files into a directory the test owns.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A test certificate authority whose certificate is at [`TestCa::cert`].
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
    /// The CA certificate (PEM file).
    pub cert: PathBuf,
}

impl TestCa {
    /// A new CA called `name`, its certificate written to `dir/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, format!("cairn test CA {name}"));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().expect("CA key")).expect("CA certificate");
        let cert = dir.join(format!("{name}.pem"));
        std::fs::write(&cert, issuer.pem()).expect("write the CA certificate");
        TestCa { issuer, dir: dir.to_owned(), name: name.to_owned(), cert }
    }

    /// A certificate for `127.0.0.1` and `localhost` (server and client
    /// use), written as `dir/<ca>-<file>.pem` and `.key`.
    pub fn issue(&self, file: &str) -> CertFiles {
        self.issue_with(file, |_| {})
    }

    /// Like [`TestCa::issue`], valid only in 2020: expired.
    pub fn issue_expired(&self, file: &str) -> CertFiles {
        self.issue_with(file, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 12, 31);
        })
    }

    fn issue_with(&self, file: &str, tweak: impl FnOnce(&mut CertificateParams)) -> CertFiles {
        let mut p = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, format!("{file} of {}", self.name));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        tweak(&mut p);
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.join(format!("{}-{file}.pem", self.name)),
            key: self.dir.join(format!("{}-{file}.key", self.name)),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}
