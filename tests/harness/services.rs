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

use crate::postgres::{as_role, database_name, is_harness_url, roles};
use crate::process::{
    PORT_ATTEMPTS, ScratchDir, free_port, log_tail, lost_port_race, signal, wait_until,
};

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
        let mut attempt = 1;
        loop {
            match process.start_again().await {
                Ok(()) => return Ok(process),
                Err(error) if attempt < PORT_ATTEMPTS && lost_port_race(&error) => {
                    attempt += 1;
                    process.listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                    process.admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                }
                Err(error) => return Err(error),
            }
        }
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

    /// The running process's id (`None` while it is stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

    /// SIGSTOP: the process keeps its sockets open but answers nothing.
    pub fn freeze(&self) -> anyhow::Result<()> {
        signal(
            self.child.as_ref().context("the service is not running")?,
            Signal::SIGSTOP,
        )
    }

    /// SIGCONT: a frozen process carries on where it stopped.
    pub fn thaw(&self) -> anyhow::Result<()> {
        signal(
            self.child.as_ref().context("the service is not running")?,
            Signal::SIGCONT,
        )
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
    Ok(http_request(addr, "GET", path).await?.status)
}

/// Status code and body (as text) of a plain HTTP/1.0 GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = http_request(addr, "GET", path).await?;
    let body = String::from_utf8_lossy(&response.body).into_owned();
    Ok((response.status, body))
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.0 request on a fresh connection, bounded by 5 s.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> anyhow::Result<HttpResponse> {
    http_request_with(addr, method, path, &[]).await
}

/// [`http_request`] with extra request headers.
pub async fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    http_send(addr, method, path, headers, None).await
}

/// [`http_request`] with extra request headers and, when given, a body
/// (sent with its `Content-Length`).
pub async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<HttpResponse> {
    http_send_within(Duration::from_secs(5), addr, method, path, headers, body).await
}

/// [`http_send`] bounded by `within` instead of 5 s.
pub async fn http_send_within(
    within: Duration,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<HttpResponse> {
    let mut request = format!("{method} {path} HTTP/1.0\r\n");
    // The caller's own Host, when it names one (a request has one Host).
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(&request).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(within, exchange)
        .await
        .with_context(|| format!("{method} {path} on {addr} took longer than {within:?}"))??;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("HTTP response without a header end")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .context("malformed HTTP status line")?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: response[split + 4..].to_vec(),
    })
}

/// `POST /api/v1/links` of the JSON `body` with `key` as the bearer token.
pub async fn rest_create(
    rest: SocketAddr,
    key: &str,
    body: &serde_json::Value,
) -> anyhow::Result<HttpResponse> {
    let bearer = format!("Bearer {key}");
    let body = body.to_string();
    http_send(
        rest,
        "POST",
        "/api/v1/links",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    )
    .await
}

/// Sum of every sample of `metric` whose labels contain all of `labels`
/// (`key="value"` strings), read from a service's `/metrics`.
pub async fn metric(admin: SocketAddr, metric: &str, labels: &[&str]) -> anyhow::Result<f64> {
    let (status, text) = http_get(admin, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok(metric_in(&text, metric, labels))
}

/// [`metric`] over a `/metrics` text already read, for a caller that
/// wants several metrics of one scrape.
pub fn metric_in(text: &str, metric: &str, labels: &[&str]) -> f64 {
    let mut total = 0.0;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if name == metric && labels.iter().all(|label| series_labels.contains(label)) {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// Starts a `tinyurl-redirect` process with `env`.
pub async fn start_redirect(env: &[(&str, &str)]) -> anyhow::Result<ServiceProcess> {
    let binary = ServiceBinary::locate("tinyurl-redirect")?;
    // As its own role, which may read a few columns of links and nothing
    // else (the writer's grants.sql).
    let env = env.iter().map(|(key, value)| {
        let value = match *key {
            "TINYURL_DATABASE_URL" | "TINYURL_REPLICA_URLS" => value
                .split(',')
                .map(|url| as_role(url, roles::REDIRECT))
                .collect::<Vec<_>>()
                .join(","),
            _ => (*value).to_owned(),
        };
        ((*key).to_owned(), value)
    });
    ServiceProcess::start(&binary, env).await
}

/// (database, binary) pairs whose migrations this process applied.
static MIGRATED: std::sync::Mutex<std::collections::BTreeSet<(String, &'static str)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The last value of `name` in `env`, as a process started with it sees it.
fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `env` for `binary` run as a deployment runs it: its migrations applied
/// first as the migrator (once per database), then the process as `role`
/// with `TINYURL_MIGRATE=false`. A test that sets `TINYURL_MIGRATE=true`
/// (to watch the service migrate itself) keeps the owner's URL, as does one
/// on a store the harness did not make.
fn least_privilege(
    binary: &'static str,
    role: &str,
    mut env: Vec<(String, String)>,
) -> anyhow::Result<Vec<(String, String)>> {
    if env_value(&env, "TINYURL_MIGRATE") == Some("true") {
        return Ok(env);
    }
    let Some(url) = env_value(&env, "TINYURL_DATABASE_URL")
        .filter(|url| is_harness_url(url))
        .map(str::to_owned)
    else {
        return Ok(env);
    };
    let key = (database_name(&url).to_owned(), binary);
    let migrated = MIGRATED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(&key);
    if !migrated {
        let output = Command::new(ServiceBinary::locate(binary)?.path())
            .arg("migrate")
            .env_clear()
            .envs(env.iter().cloned())
            .env("TINYURL_DATABASE_URL", as_role(&url, roles::MIGRATOR))
            .env("TINYURL_MIGRATE", "true")
            .env("RUST_LOG", "warn")
            .output()
            .with_context(|| format!("cannot run {binary} migrate"))?;
        if !output.status.success() {
            bail!(
                "{binary} migrate as {} failed: {}",
                roles::MIGRATOR,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        MIGRATED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key);
    }
    env.push(("TINYURL_DATABASE_URL".to_owned(), as_role(&url, role)));
    env.push(("TINYURL_MIGRATE".to_owned(), "false".to_owned()));
    Ok(env)
}

/// The service token test idallocs require and test writers present.
pub const TEST_IDALLOC_TOKEN: &str = "system-test-idalloc-token-0123456789abcdef";
/// The namespaces test idallocs serve: the writers' and the tests' own.
pub const TEST_IDALLOC_NAMESPACES: &str = "links,race,bench-grpc";

/// An idalloc client that presents [`TEST_IDALLOC_TOKEN`], as a writer does.
pub type IdallocClient = tinyurl_proto::v1::id_allocator_client::IdAllocatorClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        tinyurl_runtime::grpc::Bearer,
    >,
>;

pub fn idalloc_client(channel: tonic::transport::Channel) -> anyhow::Result<IdallocClient> {
    let bearer = tinyurl_runtime::grpc::Bearer::new(TEST_IDALLOC_TOKEN)
        .context("the test token is not a header value")?;
    Ok(
        tinyurl_proto::v1::id_allocator_client::IdAllocatorClient::with_interceptor(
            channel, bearer,
        ),
    )
}

/// Starts a `tinyurl-idalloc` process on `database_url`, with `extra`
/// variables on top of the defaults, as its own role
/// ([`least_privilege`]).
pub async fn start_idalloc(
    database_url: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<ServiceProcess> {
    let binary = ServiceBinary::locate("tinyurl-idalloc")?;
    let mut env = vec![
        ("TINYURL_DATABASE_URL".to_owned(), database_url.to_owned()),
        (
            "TINYURL_IDALLOC_TOKEN".to_owned(),
            TEST_IDALLOC_TOKEN.to_owned(),
        ),
        (
            "TINYURL_IDALLOC_NAMESPACES".to_owned(),
            TEST_IDALLOC_NAMESPACES.to_owned(),
        ),
    ];
    env.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    let env = least_privilege("tinyurl-idalloc", roles::IDALLOC, env)?;
    ServiceProcess::start(&binary, env).await
}

/// Everything a writer process needs to know.
#[derive(Debug, Clone)]
pub struct WriterSetup {
    pub database_url: String,
    pub idalloc_urls: Vec<String>,
    pub redis_url: Option<String>,
    /// More variables for every writer process and command (internal TLS).
    pub env: Vec<(String, String)>,
}

/// The code secret every test writer shares.
pub const TEST_CODE_SECRET: &str = "system-test-code-secret-0123456789";

impl WriterSetup {
    /// The environment of a writer process or command, as the writer's
    /// role ([`least_privilege`]).
    fn env(&self, extra: &[(&str, &str)]) -> anyhow::Result<Vec<(String, String)>> {
        least_privilege("tinyurl-writer", roles::WRITER, self.owner_env(extra))
    }

    fn owner_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("TINYURL_DATABASE_URL".to_owned(), self.database_url.clone()),
            (
                "TINYURL_IDALLOC_URL".to_owned(),
                self.idalloc_urls.join(","),
            ),
            (
                "TINYURL_IDALLOC_TOKEN".to_owned(),
                TEST_IDALLOC_TOKEN.to_owned(),
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
        env.extend(self.env.iter().cloned());
        env.extend(
            extra
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        env
    }

    pub async fn start(&self, extra: &[(&str, &str)]) -> anyhow::Result<ServiceProcess> {
        let binary = ServiceBinary::locate("tinyurl-writer")?;
        ServiceProcess::start(&binary, self.env(extra)?).await
    }

    /// [`Self::start`] with the REST API on a free port; returns its address.
    pub async fn start_with_rest(
        &self,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<(ServiceProcess, SocketAddr)> {
        let mut attempt = 1;
        loop {
            let rest = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let listen = rest.to_string();
            let mut env = extra.to_vec();
            env.push(("TINYURL_REST_LISTEN", &listen));
            match self.start(&env).await {
                Ok(process) => return Ok((process, rest)),
                Err(error) if attempt < PORT_ATTEMPTS && lost_port_race(&error) => attempt += 1,
                Err(error) => return Err(error),
            }
        }
    }

    /// Runs the writer's own `api-key ARGS` command.
    pub fn api_key_command(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut full = vec!["api-key"];
        full.extend_from_slice(args);
        self.command(&full)
    }

    /// Runs `tinyurl-writer ARGS` with this setup's environment.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let binary = ServiceBinary::locate("tinyurl-writer")?;
        Command::new(binary.path())
            .args(args)
            .env_clear()
            .envs(self.env(&[("RUST_LOG", "warn")])?)
            .output()
            .with_context(|| format!("cannot run tinyurl-writer {args:?}"))
    }

    /// Creates an API key with the writer's own `api-key create` command.
    pub fn create_api_key(&self, name: &str) -> anyhow::Result<String> {
        self.create_api_key_with(&["--name", name])
    }

    /// `api-key create` with `args` (a name, a scope); returns the key.
    pub fn create_api_key_with(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        let output = self.api_key_command(&full)?;
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

/// A `tinyurl.v1.Links` client of a writer process (connects lazily; 20 s
/// per call).
pub fn links_client(
    process: &ServiceProcess,
) -> anyhow::Result<tinyurl_proto::v1::links_client::LinksClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Channel::from_shared(process.endpoint())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .connect_lazy();
    Ok(tinyurl_proto::v1::links_client::LinksClient::new(channel))
}

/// `message` with `authorization: Bearer <key>`.
pub fn authed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {key}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// A well-formed API key that was never issued.
pub fn unissued_api_key() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let body: String = (0..43)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("tu_{body}")
}

/// What a client retries with the same idempotency key: the server said it
/// is unavailable, or no answer arrived (a deadline; a connection closed
/// under the call, which tonic reports as CANCELLED — this client never
/// cancels a call itself), or the server refused the stream unprocessed: a
/// writer that is shutting down sends GOAWAY, and a call the client had
/// already started past its last stream id fails with that GOAWAY (tonic
/// says INTERNAL, "h2 protocol error"), which RFC 9113 §6.8 guarantees the
/// server never processed.
pub fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    ) || refused_unprocessed(status)
}

/// Whether the call failed on a GOAWAY or REFUSED_STREAM from the server:
/// its stream was never processed.
fn refused_unprocessed(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR)
                    || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = error.source();
    }
    false
}
