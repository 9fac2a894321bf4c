//! The project's own service binaries as real processes: started with an
//! environment, waited on through `/readyz`, and stopped with SIGTERM or
//! SIGKILL and restarted on the same ports.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::process::{ScratchDir, free_port, log_tail, signal, wait_until};

/// A binary built from this workspace.
#[derive(Debug, Clone)]
pub struct ServiceBinary {
    path: PathBuf,
}

impl ServiceBinary {
    /// Finds `name` in the Cargo target directory the running test or
    /// benchmark was built into (`target/<profile>/`).
    pub fn locate(name: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let mut dir = exe
            .parent()
            .context("executable has no directory")?
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "{} is not built; run `cargo build --workspace --bins` first \
                 (the README's test command does this)",
                path.display()
            );
        }
        Ok(Self { path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// A running (or stopped) service process with fixed listen ports, so a
/// restart comes back where its clients expect it.
#[derive(Debug)]
pub struct ServiceProcess {
    binary: ServiceBinary,
    env: BTreeMap<String, String>,
    listen: SocketAddr,
    admin: SocketAddr,
    log_path: PathBuf,
    child: Option<Child>,
    _scratch: ScratchDir,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl ServiceProcess {
    /// Starts `binary` with `env` (plus listen addresses on free ports) and
    /// waits until `/readyz` answers 200.
    pub async fn start(
        binary: &ServiceBinary,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let scratch = ScratchDir::new("svc", None)?;
        let name = binary
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut process = Self {
            binary: binary.clone(),
            env: env.into_iter().collect(),
            listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            log_path: scratch.path().join(format!("{name}.log")),
            child: None,
            _scratch: scratch,
        };
        process.start_again().await?;
        Ok(process)
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `http://127.0.0.1:port` of the main listener, for tonic clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn log(&self) -> String {
        log_tail(&self.log_path, 40)
    }

    /// (Re)starts the process on its ports and waits for readiness.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(&self.binary.path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("TINYURL_LOG_FORMAT", "json")
            .envs(&self.env)
            .env("TINYURL_LISTEN", self.listen.to_string())
            .env("TINYURL_ADMIN_LISTEN", self.admin.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.path.display()))?;
        self.child = Some(child);
        let admin = self.admin;
        let waited = wait_until(
            "the service to become ready",
            READY_TIMEOUT,
            || async move { Ok(http_status(admin, "/readyz").await? == 200) },
        );
        // Fail fast if the process died instead of waiting out the timeout.
        let result = tokio::select! {
            result = waited => result,
            status = self.wait_for_exit() => Err(anyhow::anyhow!("the service exited during start: {status:?}")),
        };
        if let Err(error) = result {
            let _ = self.kill();
            bail!("{error:#}\n--- service log ---\n{}", self.log());
        }
        Ok(())
    }

    async fn wait_for_exit(&mut self) -> anyhow::Result<ExitStatus> {
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (SIGKILL after).
    /// Waits asynchronously: clients in this runtime must keep running to
    /// answer the server's graceful-shutdown handshake.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("the service is not running")?;
        signal(&child, Signal::SIGTERM)?;
        let deadline = std::time::Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                child.kill()?;
                return Ok(child.wait()?);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Status code of a plain HTTP/1.0 GET, without pulling an HTTP client in.
pub async fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let (status, _) = http_get(addr, path).await?;
    Ok(status)
}

/// Status code and body of a plain HTTP/1.0 GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange).await??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("malformed HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Starts a `tinyurl-idalloc` process on `database_url`, with `extra`
/// variables on top of the defaults.
pub async fn start_idalloc(
    database_url: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<ServiceProcess> {
    let binary = ServiceBinary::locate("tinyurl-idalloc")?;
    let mut env = vec![("TINYURL_DATABASE_URL".to_owned(), database_url.to_owned())];
    env.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    ServiceProcess::start(&binary, env).await
}

/// Everything a writer process needs to know.
#[derive(Debug, Clone)]
pub struct WriterSetup {
    pub database_url: String,
    pub idalloc_urls: Vec<String>,
    pub redis_url: Option<String>,
}

/// The code secret every test writer shares.
pub const TEST_CODE_SECRET: &str = "system-test-code-secret-0123456789";

impl WriterSetup {
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("TINYURL_DATABASE_URL".to_owned(), self.database_url.clone()),
            (
                "TINYURL_IDALLOC_URL".to_owned(),
                self.idalloc_urls.join(","),
            ),
            (
                "TINYURL_CODE_SECRET".to_owned(),
                TEST_CODE_SECRET.to_owned(),
            ),
            (
                "TINYURL_PUBLIC_BASE_URL".to_owned(),
                "https://sho.rt".to_owned(),
            ),
        ];
        if let Some(redis_url) = &self.redis_url {
            env.push(("TINYURL_REDIS_URL".to_owned(), redis_url.clone()));
        }
        env.extend(
            extra
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        env
    }

    pub async fn start(&self, extra: &[(&str, &str)]) -> anyhow::Result<ServiceProcess> {
        let binary = ServiceBinary::locate("tinyurl-writer")?;
        ServiceProcess::start(&binary, self.env(extra)).await
    }

    /// Creates an API key with the writer's own `api-key create` command.
    pub fn create_api_key(&self, name: &str) -> anyhow::Result<String> {
        let binary = ServiceBinary::locate("tinyurl-writer")?;
        let output = Command::new(binary.path())
            .args(["api-key", "create", "--name", name])
            .env_clear()
            .envs(self.env(&[("RUST_LOG", "warn")]))
            .output()
            .context("cannot run tinyurl-writer api-key create")?;
        if !output.status.success() {
            bail!(
                "api-key create failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let key = String::from_utf8(output.stdout)?.trim().to_owned();
        if !key.starts_with("tu_") {
            bail!("api-key create printed {key:?}");
        }
        Ok(key)
    }
}
