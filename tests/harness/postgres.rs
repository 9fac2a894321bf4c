//! Real Postgres for tests: a primary and streaming replicas on free loopback
//! ports, a fresh database per test, and fault handles (stop, SIGKILL, freeze,
//! restart, replica apply delay).
//!
//! `initdb` runs once per machine into a cached template that each cluster
//! copies, so a cluster with a replica starts in about a second.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;

use crate::process::{
    PORT_ATTEMPTS, RunAs, ScratchDir, find_binary, free_port, log_tail, signal, signal_tree,
    unprivileged_user, wait_or_kill, wait_until,
};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const DEBIAN_PACKAGE: &str = "postgresql";

/// The installed Postgres server binaries.
#[derive(Debug)]
pub struct PgBinaries {
    bindir: PathBuf,
    run_as: Option<RunAs>,
}

impl PgBinaries {
    /// Finds `postgres`, `initdb` and `pg_basebackup`, preferring the newest
    /// Debian installation under /usr/lib/postgresql.
    pub fn locate() -> anyhow::Result<Self> {
        let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        candidates.sort_by_key(|dir| {
            dir.parent()
                .and_then(|version| version.file_name())
                .and_then(|name| name.to_str())
                .and_then(|name| name.parse::<u32>().ok())
                .unwrap_or(0)
        });
        candidates.reverse();
        Self::locate_in(&candidates)
    }

    /// Like [`Self::locate`] but only in `dirs` (and PATH).
    pub fn locate_in(dirs: &[PathBuf]) -> anyhow::Result<Self> {
        let postgres = find_binary("postgres", dirs, DEBIAN_PACKAGE)?;
        let bindir = postgres
            .parent()
            .context("postgres binary has no directory")?
            .to_path_buf();
        for tool in ["initdb", "pg_basebackup"] {
            find_binary(tool, std::slice::from_ref(&bindir), DEBIAN_PACKAGE)?;
        }
        Ok(Self {
            bindir,
            run_as: unprivileged_user()?,
        })
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bindir.join(tool));
        if let Some(run_as) = self.run_as {
            command.uid(run_as.uid).gid(run_as.gid);
        }
        command.env_remove("PGDATA").env("LC_ALL", "C");
        command
    }

    fn major_version(&self) -> String {
        self.bindir
            .parent()
            .and_then(|dir| dir.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// The cached `initdb` output for this Postgres version and user, made
    /// under a file lock so parallel test processes build it once.
    fn template(&self) -> anyhow::Result<PathBuf> {
        let uid = self.run_as.map_or(0, |run_as| run_as.uid);
        let template = std::env::temp_dir().join(format!(
            "tinyurl-pg-template-{}-{uid}-v1",
            self.major_version()
        ));
        let complete_marker = template.join("harness-template-complete");
        let lock_path = template.with_extension("lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        lock.lock().context("cannot lock the Postgres template")?;
        if complete_marker.exists() {
            return Ok(template);
        }
        let _ = std::fs::remove_dir_all(&template);
        std::fs::create_dir_all(&template)?;
        if let Some(run_as) = self.run_as {
            std::os::unix::fs::chown(&template, Some(run_as.uid), Some(run_as.gid))?;
        }
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&template)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .context("cannot run initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Settings a test changes at run time (apply delay) live in a file
        // that every copy, replicas included, reads.
        let config = template.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str("\ninclude_if_exists = 'harness.conf'\n");
        std::fs::write(&config, text)?;
        std::fs::write(&complete_marker, b"")?;
        Ok(template)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// One Postgres server process and its data directory.
#[derive(Debug)]
pub struct PgServer {
    binaries: Arc<PgBinaries>,
    role: Role,
    datadir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    child: Option<Child>,
    /// TLS-only over TCP (`hostssl`), when set; the harness itself then
    /// connects over the Unix socket.
    tls: Option<PgTls>,
}

/// The certificate files and client rules of a TLS-only server.
#[derive(Debug, Clone)]
struct PgTls {
    cert: PathBuf,
    key: PathBuf,
    hba: PathBuf,
}

impl PgServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id (`None` while stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// `postgres://` URL of database `dbname` on this server (with
    /// `sslmode=require` when it speaks only TLS).
    pub fn url(&self, dbname: &str) -> String {
        let ssl = if self.tls.is_some() {
            "?sslmode=require"
        } else {
            ""
        };
        format!("postgres://postgres@127.0.0.1:{}/{dbname}{ssl}", self.port)
    }

    /// The URL the harness itself uses: the TCP one, or the Unix socket for
    /// a TLS-only server.
    fn admin_url(&self, dbname: &str) -> String {
        if self.tls.is_some() {
            format!(
                "postgres:///{dbname}?user=postgres&host={}&port={}",
                self.socket_dir.display(),
                self.port
            )
        } else {
            self.url(dbname)
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Starts the server and waits until it accepts queries.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open {}", self.log_path.display()))?;
        let mut command = self.binaries.command("postgres");
        command
            .arg("-D")
            .arg(&self.datadir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ));
        for setting in [
            "listen_addresses=127.0.0.1",
            // Tests never survive an OS crash, only process crashes, which
            // these settings do not weaken.
            "fsync=off",
            "full_page_writes=off",
            "wal_level=replica",
            "max_wal_senders=10",
            "wal_keep_size=512MB",
            "hot_standby=on",
            "hot_standby_feedback=on",
            "wal_retrieve_retry_interval=200ms",
            "max_connections=300",
            "shared_buffers=64MB",
            "shared_preload_libraries=pg_stat_statements",
            "log_min_messages=warning",
            "logging_collector=off",
        ] {
            command.arg("-c").arg(setting);
        }
        if let Some(tls) = &self.tls {
            command
                .args(["-c", "ssl=on", "-c"])
                .arg(format!("ssl_cert_file={}", tls.cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", tls.key.display()))
                .arg("-c")
                .arg(format!("hba_file={}", tls.hba.display()));
        }
        // Its own process group, so a Ctrl-C meant for the tests does not
        // reach it before the harness can shut it down.
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command.spawn().context("cannot start postgres")?;
        self.child = Some(child);

        let url = self.admin_url("postgres");
        let log_path = self.log_path.clone();
        let waited = wait_until("postgres to accept connections", START_TIMEOUT, || {
            let url = url.clone();
            async move { Ok(try_query(&url).await.is_ok()) }
        })
        .await;
        if let Err(error) = waited {
            bail!(
                "{error:#}\n--- postgres log ---\n{}",
                log_tail(&log_path, 30)
            );
        }
        Ok(())
    }

    /// Fast shutdown (SIGINT): aborts sessions, checkpoints, exits cleanly.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            signal(&child, Signal::SIGINT)?;
            wait_or_kill(&mut child, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// SIGKILL to the postmaster and every backend: a crash. The next start
    /// runs crash recovery.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // Unfreeze first: a stopped process only dies once continued.
            let _ = signal_tree(&child, Signal::SIGCONT);
            signal_tree(&child, Signal::SIGKILL)?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGSTOP to every process of the server: it keeps its sockets open but
    /// answers nothing, like a host behind a network partition.
    pub fn freeze(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("server is not running")?;
        signal_tree(child, Signal::SIGSTOP)
    }

    pub fn thaw(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("server is not running")?;
        signal_tree(child, Signal::SIGCONT)
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start().await
    }

    /// Promotes a replica to primary (`pg_promote`), ending recovery on a new
    /// timeline, and waits until it accepts writes.
    pub async fn promote(&mut self) -> anyhow::Result<()> {
        if self.role != Role::Replica {
            bail!("only a replica can be promoted");
        }
        let client = self.connect("postgres").await?;
        let promoted: bool = client
            .query_one("SELECT pg_promote(true, 60)", &[])
            .await
            .context("pg_promote failed")?
            .get(0);
        if !promoted {
            bail!("pg_promote did not finish within 60 s");
        }
        self.role = Role::Primary;
        Ok(())
    }

    /// A connected client on database `dbname`.
    pub async fn connect(&self, dbname: &str) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.admin_url(dbname)).await
    }

    /// Sets `recovery_min_apply_delay` on a replica and waits until it is in
    /// force. `Duration::ZERO` removes the delay.
    pub async fn set_apply_delay(&self, delay: Duration) -> anyhow::Result<()> {
        if self.role != Role::Replica {
            bail!("apply delay only applies to a replica");
        }
        let millis = delay.as_millis();
        std::fs::write(
            self.datadir.join("harness.conf"),
            format!("recovery_min_apply_delay = '{millis}ms'\n"),
        )?;
        let child = self.child.as_ref().context("replica is not running")?;
        signal(child, Signal::SIGHUP)?;
        let url = self.url("postgres");
        wait_until("the apply delay to take effect", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let client = connect(&url).await?;
                let row = client
                    .query_one(
                        "SELECT setting::bigint FROM pg_settings WHERE name = 'recovery_min_apply_delay'",
                        &[],
                    )
                    .await?;
                let current: i64 = row.get(0);
                Ok(u128::try_from(current).ok() == Some(millis))
            }
        })
        .await
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: fast, and it releases shared memory, which a
            // plain SIGKILL would leak across many test runs.
            let _ = signal(&child, Signal::SIGQUIT);
            if wait_or_kill(&mut child, Duration::from_secs(10)).is_err() {
                let _ = signal_tree(&child, Signal::SIGKILL);
            }
        }
    }
}

/// A primary and its streaming replicas, in one scratch directory.
#[derive(Debug)]
pub struct PgCluster {
    pub primary: PgServer,
    pub replicas: Vec<PgServer>,
    // Declared last: dropped after the servers have stopped.
    _scratch: ScratchDir,
}

impl PgCluster {
    /// A primary and one streaming replica.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_replicas(1).await
    }

    pub async fn start_with_replicas(replica_count: usize) -> anyhow::Result<Self> {
        Self::start_configured(replica_count, None).await
    }

    /// A primary (no replica) that accepts TCP clients over TLS only, with
    /// certificate `leaf`; its URLs carry `sslmode=require`.
    pub async fn start_tls(leaf: &crate::tls::Leaf) -> anyhow::Result<Self> {
        Self::start_configured(0, Some(leaf)).await
    }

    async fn start_configured(
        replica_count: usize,
        tls_leaf: Option<&crate::tls::Leaf>,
    ) -> anyhow::Result<Self> {
        let binaries = Arc::new(PgBinaries::locate()?);
        let template = binaries.template()?;
        let scratch = ScratchDir::new("pg", binaries.run_as)?;

        let primary_dir = scratch.path().join("primary");
        let copy = binaries
            .command_as_owner("cp")
            .arg("-a")
            .arg(&template)
            .arg(&primary_dir)
            .status()
            .context("cannot copy the Postgres template")?;
        if !copy.success() {
            bail!("copying the Postgres template failed: {copy}");
        }
        let mut primary = new_server(
            &binaries,
            Role::Primary,
            primary_dir,
            scratch.path(),
            "primary",
        )?;
        if let Some(leaf) = tls_leaf {
            primary.tls = Some(tls_files(&binaries, scratch.path(), leaf)?);
        }
        start_on_free_port(&mut primary).await?;
        // Before any replica is made: they copy the roles.
        let admin = primary.connect("postgres").await?;
        for role in roles::ALL {
            admin
                .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
                .await
                .with_context(|| format!("cannot create the role {role}"))?;
        }
        drop(admin);

        let mut replicas = Vec::with_capacity(replica_count);
        for index in 0..replica_count {
            let name = format!("replica{index}");
            let datadir = scratch.path().join(&name);
            let output = binaries
                .command("pg_basebackup")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-R",
                    "--no-sync",
                ])
                .arg("-p")
                .arg(primary.port.to_string())
                .arg("-D")
                .arg(&datadir)
                .output()
                .context("cannot run pg_basebackup")?;
            if !output.status.success() {
                bail!(
                    "pg_basebackup failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let mut replica = new_server(&binaries, Role::Replica, datadir, scratch.path(), &name)?;
            start_on_free_port(&mut replica).await?;
            replicas.push(replica);
        }
        Ok(Self {
            primary,
            replicas,
            _scratch: scratch,
        })
    }

    pub fn replica(&self) -> &PgServer {
        &self.replicas[0]
    }

    pub fn replica_mut(&mut self) -> &mut PgServer {
        &mut self.replicas[0]
    }

    /// Creates a database with a unique name on the primary and waits until
    /// every running replica has replayed it.
    pub async fn create_database(&mut self) -> anyhow::Result<TestDatabase> {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let admin = self.primary.connect("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {}", roles::MIGRATOR))
            .await
            .context("cannot create the test database")?;
        for replica in &mut self.replicas {
            if !replica.is_running() {
                continue;
            }
            let url = replica.url(&name);
            wait_until(
                "the replica to replay CREATE DATABASE",
                START_TIMEOUT,
                || {
                    let url = url.clone();
                    async move { Ok(try_query(&url).await.is_ok()) }
                },
            )
            .await?;
        }
        Ok(TestDatabase {
            primary_url: self.primary.url(&name),
            replica_urls: self
                .replicas
                .iter()
                .map(|replica| replica.url(&name))
                .collect(),
            name,
        })
    }
}

/// The database roles every test cluster has, as a deployment has them
/// (the writer's and idalloc's `grants.sql`): each database is owned by the
/// migrator, the harness migrates as the migrator and starts every service
/// as its own role with `TINYURL_MIGRATE=false`. A test's own connections
/// (the URLs of [`TestDatabase`]) are the superuser's.
pub mod roles {
    pub const MIGRATOR: &str = "tinyurl_migrator";
    pub const WRITER: &str = "tinyurl_writer";
    pub const REDIRECT: &str = "tinyurl_redirect";
    pub const IDALLOC: &str = "tinyurl_idalloc";
    pub const ALL: [&str; 4] = [MIGRATOR, WRITER, REDIRECT, IDALLOC];
}

/// `url` (a harness URL, which names the superuser) as `role`; any other URL
/// (SQLite, a server the harness did not start) as it is.
pub fn as_role(url: &str, role: &str) -> String {
    match url.strip_prefix("postgres://postgres@") {
        Some(rest) => format!("postgres://{role}@{rest}"),
        None => url.to_owned(),
    }
}

/// Whether `url` is one [`as_role`] changes.
pub fn is_harness_url(url: &str) -> bool {
    url.starts_with("postgres://postgres@")
}

/// The database a harness URL names (what follows the last `/`, less the
/// query).
pub fn database_name(url: &str) -> &str {
    let path = url.rsplit('/').next().unwrap_or(url);
    path.split('?').next().unwrap_or(path)
}

/// A database of its own for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub primary_url: String,
    pub replica_urls: Vec<String>,
}

impl PgBinaries {
    /// A non-Postgres tool run as the owner of the Postgres files.
    fn command_as_owner(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        if let Some(run_as) = self.run_as {
            command.uid(run_as.uid).gid(run_as.gid);
        }
        command
    }
}

fn new_server(
    binaries: &Arc<PgBinaries>,
    role: Role,
    datadir: PathBuf,
    scratch: &Path,
    name: &str,
) -> anyhow::Result<PgServer> {
    Ok(PgServer {
        binaries: Arc::clone(binaries),
        role,
        datadir,
        socket_dir: scratch.to_path_buf(),
        log_path: scratch.join(format!("{name}.log")),
        port: free_port()?,
        child: None,
        tls: None,
    })
}

/// Copies `leaf` where the Postgres user may read it (the key 0600, as
/// Postgres demands) and writes client rules that take TCP clients over TLS
/// only.
fn tls_files(
    binaries: &PgBinaries,
    scratch: &Path,
    leaf: &crate::tls::Leaf,
) -> anyhow::Result<PgTls> {
    use std::os::unix::fs::PermissionsExt as _;
    let tls = PgTls {
        cert: scratch.join("server.pem"),
        key: scratch.join("server.key"),
        hba: scratch.join("pg_hba_tls.conf"),
    };
    std::fs::copy(&leaf.cert, &tls.cert)?;
    std::fs::copy(&leaf.key, &tls.key)?;
    std::fs::write(
        &tls.hba,
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )?;
    std::fs::set_permissions(&tls.key, std::fs::Permissions::from_mode(0o600))?;
    if let Some(run_as) = binaries.run_as {
        for file in [&tls.cert, &tls.key, &tls.hba] {
            std::os::unix::fs::chown(file, Some(run_as.uid), Some(run_as.gid))?;
        }
    }
    Ok(tls)
}

/// Starts `server`, moving to another port if the chosen one was taken.
async fn start_on_free_port(server: &mut PgServer) -> anyhow::Result<()> {
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        match server.start().await {
            Ok(()) => return Ok(()),
            Err(error) => {
                let _ = server.kill();
                last_error = Some(error);
                server.port = free_port()?;
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
}

/// Connects with a short timeout and spawns the connection task.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url.parse().context("bad postgres url")?;
    config.connect_timeout(Duration::from_secs(2));
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(5),
        config.connect(tokio_postgres::NoTls),
    )
    .await
    .context("connecting to postgres timed out")??;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn try_query(url: &str) -> anyhow::Result<()> {
    let client = connect(url).await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
