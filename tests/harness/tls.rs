//! A throwaway certificate authority for TLS tests, made with the installed
//! `openssl` tool: a CA and leaf certificates for `localhost` and
//! `127.0.0.1`, good for both server and client authentication (ECDSA
//! P-256, two days).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use tinyurl_runtime::tls::{InternalTls, TlsFiles};

use crate::process::{ScratchDir, find_binary};

#[derive(Debug)]
pub struct TestCa {
    dir: ScratchDir,
    openssl: PathBuf,
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
}

/// A certificate and its key, issued by a [`TestCa`].
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> anyhow::Result<Self> {
        let openssl = find_binary("openssl", &[], "openssl")?;
        let dir = ScratchDir::new("tls", None)?;
        let ca_cert = dir.path().join("ca.pem");
        let ca_key = dir.path().join("ca.key");
        run(Command::new(&openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=tinyurl test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_cert))?;
        Ok(Self {
            dir,
            openssl,
            ca_cert,
            ca_key,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new leaf named `name` (the file stem) for `localhost`/`127.0.0.1`.
    pub fn issue(&self, name: &str) -> anyhow::Result<Leaf> {
        let key = self.dir.path().join(format!("{name}.key"));
        let csr = self.dir.path().join(format!("{name}.csr"));
        let cert = self.dir.path().join(format!("{name}.pem"));
        let extensions = self.dir.path().join(format!("{name}.ext"));
        std::fs::write(
            &extensions,
            "basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )?;
        run(Command::new(&self.openssl)
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr))?;
        run(Command::new(&self.openssl)
            .args(["x509", "-req", "-days", "2", "-set_serial"])
            .arg(format!("0x{}", uuid::Uuid::new_v4().simple()))
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.ca_cert)
            .arg("-CAkey")
            .arg(&self.ca_key)
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(&cert))?;
        Ok(Leaf { cert, key })
    }

    /// The environment that turns internal TLS on with `leaf`.
    pub fn env(&self, leaf: &Leaf) -> Vec<(String, String)> {
        [
            ("TINYURL_INTERNAL_TLS_CERT", &leaf.cert),
            ("TINYURL_INTERNAL_TLS_KEY", &leaf.key),
            ("TINYURL_INTERNAL_TLS_CA", &self.ca_cert),
        ]
        .into_iter()
        .map(|(name, path)| (name.to_owned(), path.display().to_string()))
        .collect()
    }

    /// A client identity with `leaf`, trusting this CA.
    pub fn identity(&self, leaf: &Leaf) -> anyhow::Result<InternalTls> {
        InternalTls::load(&TlsFiles {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
            ca: self.ca_cert.clone(),
        })
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().context("cannot run openssl")?;
    if !output.status.success() {
        bail!(
            "openssl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
