//! Real Redis for tests, on a free loopback port, with stop, kill and restart.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::process::{
    PORT_ATTEMPTS, ScratchDir, find_binary, free_port, log_tail, signal, wait_or_kill, wait_until,
};

#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    /// Append-only file, synced on every write: a restart keeps the data.
    persistent: bool,
    log_path: PathBuf,
    child: Option<Child>,
    /// TLS only (no plaintext port) with a password, when set.
    tls: Option<RedisTls>,
    /// A node of a Redis Cluster (`--cluster-enabled yes`).
    cluster_node: bool,
    /// The cluster's other nodes, when this is its first one: the server
    /// then stands for the whole cluster (URL, stop, kill, restart, flush).
    peers: Vec<RedisServer>,
    scratch: ScratchDir,
}

#[derive(Debug, Clone)]
struct RedisTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    password: String,
}

impl RedisServer {
    /// A single Redis; a three-master Redis Cluster instead when
    /// `TINYURL_TEST_REDIS=cluster` (the test script's second pass runs the
    /// writer and redirect tests so).
    pub async fn start() -> anyhow::Result<Self> {
        if std::env::var("TINYURL_TEST_REDIS").as_deref() == Ok("cluster") {
            return Self::start_cluster(3).await;
        }
        Self::start_with(false).await
    }

    /// A Redis Cluster of `masters` masters without replicas, each a real
    /// `redis-server --cluster-enabled yes` on a free loopback port, the hash
    /// slots spread evenly by `redis-cli --cluster create`. The server
    /// returned is the first node and stands for the whole cluster.
    pub async fn start_cluster(masters: usize) -> anyhow::Result<Self> {
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters.max(1) {
            nodes.push(Self::start_node(false, None, true).await?);
        }
        let cli = find_binary("redis-cli", &[], "redis-tools")?;
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut first = nodes.remove(0);
        first.peers = nodes;
        first.wait_cluster_ok().await?;
        Ok(first)
    }

    /// Whether this stands for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster_node
    }

    /// The ports of every node (one for a single server).
    pub fn ports(&self) -> Vec<u16> {
        std::iter::once(self.port)
            .chain(self.peers.iter().map(Self::port))
            .collect()
    }

    /// `FLUSHALL` on every node.
    pub async fn flush_all(&self) -> anyhow::Result<()> {
        for port in self.ports() {
            command(port, &["FLUSHALL"]).await?;
        }
        Ok(())
    }

    async fn wait_cluster_ok(&self) -> anyhow::Result<()> {
        if !self.cluster_node {
            return Ok(());
        }
        for port in self.ports() {
            wait_until(
                "every cluster node to report cluster_state:ok",
                Duration::from_secs(30),
                || async move {
                    Ok(matches!(
                        command(port, &["CLUSTER", "INFO"]).await?,
                        Reply::Bulk(Some(info)) if info.contains("cluster_state:ok")
                    ))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// A server whose data survives a restart (an append-only file synced
    /// on every write), as a production Redis holding a stream is run.
    pub async fn start_persistent() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    /// A server that speaks only TLS (certificate `leaf` of `ca`) and asks
    /// for `password`: its [`Self::url`] is `rediss://:password@…`.
    pub async fn start_tls(
        ca: &crate::tls::TestCa,
        leaf: &crate::tls::Leaf,
        password: &str,
    ) -> anyhow::Result<Self> {
        Self::start_configured(
            false,
            Some(RedisTls {
                cert: leaf.cert.clone(),
                key: leaf.key.clone(),
                ca: ca.ca_cert.clone(),
                password: password.to_owned(),
            }),
        )
        .await
    }

    async fn start_with(persistent: bool) -> anyhow::Result<Self> {
        Self::start_configured(persistent, None).await
    }

    async fn start_configured(persistent: bool, tls: Option<RedisTls>) -> anyhow::Result<Self> {
        Self::start_node(persistent, tls, false).await
    }

    async fn start_node(
        persistent: bool,
        tls: Option<RedisTls>,
        cluster_node: bool,
    ) -> anyhow::Result<Self> {
        let binary = find_binary("redis-server", &[], "redis-server")?;
        let scratch = ScratchDir::new("redis", None)?;
        let mut server = Self {
            binary,
            port: free_port()?,
            persistent,
            log_path: scratch.path().join("redis.log"),
            child: None,
            tls,
            cluster_node,
            peers: Vec::new(),
            scratch,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(error) => {
                    server.kill()?;
                    last_error = Some(error);
                    server.port = free_port()?;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis did not start")))
    }

    /// The server's process id (`None` while stopped; a cluster's first
    /// node for a cluster).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        if !self.peers.is_empty() {
            // fred reads this as a cluster: the first node, the others as
            // further seeds.
            let seeds: Vec<String> = self
                .peers
                .iter()
                .map(|peer| format!("node=127.0.0.1:{}", peer.port))
                .collect();
            return format!(
                "redis-cluster://127.0.0.1:{}?{}",
                self.port,
                seeds.join("&")
            );
        }
        match &self.tls {
            Some(tls) => format!("rediss://:{}@127.0.0.1:{}", tls.password, self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut command = Command::new(&self.binary);
        command.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            if self.persistent { "yes" } else { "no" },
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
        ]);
        if self.cluster_node {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        match &self.tls {
            None => {
                command.arg("--port").arg(self.port.to_string());
            }
            Some(tls) => {
                command
                    .args(["--port", "0", "--tls-auth-clients", "no"])
                    .arg("--tls-port")
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .arg("--requirepass")
                    .arg(&tls.password);
            }
        }
        let child = command
            .arg("--dir")
            .arg(self.scratch.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start redis-server")?;
        self.child = Some(child);
        let port = self.port;
        let tls = self.tls.is_some();
        let waited = wait_until(
            "redis to answer PING",
            Duration::from_secs(30),
            || async move {
                // Over TLS a listening port is as far as a plain probe gets.
                Ok(if tls {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                } else {
                    ping(port).await.is_ok()
                })
            },
        )
        .await;
        if let Err(error) = waited {
            bail!(
                "{error:#}\n--- redis log ---\n{}",
                log_tail(&self.log_path, 20)
            );
        }
        Ok(())
    }

    /// Restarts a stopped or killed server on the same port. Data is kept
    /// only by a persistent server.
    /// A cluster restarts every node and waits for the cluster to be whole
    /// again (each node keeps its slots in its `nodes.conf`).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        for peer in &mut self.peers {
            if peer.child.is_none() {
                peer.spawn_and_wait().await?;
            }
        }
        if self.child.is_none() {
            self.spawn_and_wait().await?;
        }
        self.wait_cluster_ok().await
    }

    pub fn stop(&mut self) -> anyhow::Result<()> {
        for peer in &mut self.peers {
            peer.stop()?;
        }
        if let Some(mut child) = self.child.take() {
            signal(&child, Signal::SIGTERM)?;
            wait_or_kill(&mut child, Duration::from_secs(10))?;
        }
        Ok(())
    }

    pub fn kill(&mut self) -> anyhow::Result<()> {
        for peer in &mut self.peers {
            peer.kill()?;
        }
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Sends PING over RESP and expects +PONG.
pub async fn ping(port: u16) -> anyhow::Result<()> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await??;
    stream.write_all(b"PING\r\n").await?;
    let mut reply = [0_u8; 7];
    tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply)).await??;
    if &reply != b"+PONG\r\n" {
        bail!("unexpected reply {:?}", String::from_utf8_lossy(&reply));
    }
    Ok(())
}

/// A reply to [`command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Integer(i64),
    Bulk(Option<String>),
    Error(String),
    Array(Vec<Reply>),
}

impl Reply {
    /// Every bulk string in the reply, depth first.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Self::Bulk(Some(text)) => vec![text.clone()],
            Self::Array(items) => items.iter().flat_map(Self::strings).collect(),
            _ => Vec::new(),
        }
    }
}

/// Sends one command over RESP and reads the reply, so tests can inspect
/// what services wrote without a client library of their own. On a cluster
/// node, a `MOVED` answer is followed to the node that owns the key's slot.
pub async fn command(port: u16, args: &[&str]) -> anyhow::Result<Reply> {
    let reply = command_once(port, args).await?;
    if let Reply::Error(error) = &reply
        && let Some(owner) = error.strip_prefix("MOVED ")
        && let Some(owner_port) = owner
            .rsplit(':')
            .next()
            .and_then(|port| port.parse::<u16>().ok())
    {
        return command_once(owner_port, args).await;
    }
    Ok(reply)
}

/// [`command`] on the node at `port` only: a `MOVED` answer is returned.
pub async fn command_once(port: u16, args: &[&str]) -> anyhow::Result<Reply> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut stream = tokio::io::BufStream::new(stream);
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        read_reply(&mut stream).await
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await?
}

fn read_reply<'a, S>(
    stream: &'a mut S,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Reply>> + Send + 'a>>
where
    S: tokio::io::AsyncBufRead + Unpin + Send,
{
    Box::pin(async move {
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(stream, &mut line).await?;
        let line = line.trim_end().to_owned();
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Integer(rest.parse()?),
            "$" => {
                let length: i64 = rest.parse()?;
                if length < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut body = vec![0_u8; usize::try_from(length)? + 2];
                    stream.read_exact(&mut body).await?;
                    body.truncate(body.len() - 2);
                    Reply::Bulk(Some(String::from_utf8(body)?))
                }
            }
            "*" => {
                let count: i64 = rest.parse()?;
                let mut items = Vec::new();
                for _ in 0..count.max(0) {
                    items.push(read_reply(stream).await?);
                }
                Reply::Array(items)
            }
            other => bail!("unsupported RESP reply type {other:?}"),
        })
    })
}
