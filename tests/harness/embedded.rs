//! The embedded system as a user runs it: the real `tinyurl` binary, `up` in
//! a directory of its own (the database file lands there), and the same
//! binary as the client.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::free_port;
use crate::process::{PORT_ATTEMPTS, log_tail, lost_port_race, wait_or_kill};
use crate::services::ServiceBinary;

/// The database file `up` makes in its directory (SQLite adds `-wal` and
/// `-shm` beside it).
/// The data file under the test's directory, in a directory `up` creates.
const DATA_DIR: &str = "data";
const DATA_FILE: &str = "data/tinyurl.db";

pub struct Embedded {
    binary: ServiceBinary,
    dir: PathBuf,
    child: Option<Child>,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The writer's REST API.
    pub rest: SocketAddr,
    /// The redirect service's admin listener (`/metrics`).
    pub redirect_admin: SocketAddr,
    /// The key printed on first start; `None` after a restart on the same data.
    pub printed_key: Option<String>,
    stdout: Vec<String>,
    /// Variables for `up` beyond the harness's own.
    env: Vec<(String, String)>,
}

impl Embedded {
    /// The `tinyurl up` process's id (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `tinyurl up` in `dir` on free ports and waits until it says it
    /// is ready.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = || -> anyhow::Result<SocketAddr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
        };
        let binary = ServiceBinary::locate("tinyurl")?;
        let first_start = !dir.join(DATA_FILE).exists();
        let mut attempt = 1;
        loop {
            let mut embedded = Self {
                binary: binary.clone(),
                dir: dir.to_path_buf(),
                child: None,
                http: port()?,
                grpc: port()?,
                rest: port()?,
                redirect_admin: port()?,
                printed_key: None,
                stdout: Vec::new(),
                env: Vec::new(),
            };
            match embedded.start_again().await {
                Ok(()) => return Ok(embedded),
                Err(error) if first_start && attempt < PORT_ATTEMPTS && lost_port_race(&error) => {
                    attempt += 1;
                    drop(embedded);
                    // The next try must be a first start again (it prints
                    // the first API key), so the data this one made goes.
                    let data = dir.join(DATA_DIR);
                    if data.exists() {
                        std::fs::remove_dir_all(data)?;
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Starts `up` again on the same ports and data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        // The inner services' ports, none of the fixed ones: right after a
        // stop those are free, and the next free port is often one of them
        // (then `up` cannot bind it twice).
        let fixed = [self.http, self.grpc, self.rest, self.redirect_admin].map(|addr| addr.port());
        let port = || -> anyhow::Result<String> {
            loop {
                let port = free_port()?;
                if !fixed.contains(&port) {
                    return Ok(format!("127.0.0.1:{port}"));
                }
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut child = Command::new(self.binary.path())
            .current_dir(&self.dir)
            .args([
                "up",
                "--data",
                DATA_FILE,
                "--http",
                &self.http.to_string(),
                "--grpc",
                &self.grpc.to_string(),
                "--rest",
                &self.rest.to_string(),
            ])
            .args(["--idalloc", &port()?])
            .args([
                "--admin",
                &format!("{},{},{}", port()?, port()?, self.redirect_admin),
            ])
            .env("RUST_LOG", "warn")
            .env_remove("TINYURL_PUBLIC_BASE_URL")
            .env_remove("TINYURL_DATA")
            .env_remove("TINYURL_CODE_SECRET")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot run tinyurl up")?;
        let stdout = child.stdout.take().context("no stdout")?;
        self.child = Some(child);
        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.stdout.clear();
        self.printed_key = None;
        let ready = async {
            while let Some(line) = lines_rx.recv().await {
                // Standard output here is a pipe, so the first key is in a
                // file whose path is printed.
                if let Some(rest) = line.strip_prefix("API key").map(str::trim)
                    && let Some(path) = rest
                        .strip_prefix("written to ")
                        .and_then(|rest| rest.split(" (").next())
                {
                    let key = std::fs::read_to_string(self.dir.join(path)).unwrap_or_default();
                    self.printed_key =
                        Some(key.trim().to_owned()).filter(|key| key.starts_with("tu_"));
                }
                let done = line.starts_with("ready");
                self.stdout.push(line);
                if done {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(Duration::from_secs(30), ready).await {
            Ok(true) => Ok(()),
            _ => bail!(
                "tinyurl up did not become ready; stdout:\n{}\nlog:\n{}",
                self.stdout.join("\n"),
                log_tail(&self.log_path(), 40)
            ),
        }
    }

    /// Sets `name` for the next [`Self::start_again`].
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// What `up` printed before it was ready.
    pub fn banner(&self) -> String {
        self.stdout.join("\n")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("up.log")
    }

    pub fn data_path(&self) -> PathBuf {
        self.dir.join(DATA_FILE)
    }

    /// Runs the `tinyurl` client against this system with `api_key`.
    pub fn cli(&self, api_key: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.cli_command(api_key, args)
            .output()
            .context("cannot run the tinyurl client")
    }

    /// The client command, for callers that manage the process themselves.
    pub fn cli_command(&self, api_key: &str, args: &[&str]) -> Command {
        let mut command = Command::new(self.binary.path());
        command
            .current_dir(&self.dir)
            .args(args)
            .env("TINYURL_SERVER", format!("http://{}", self.grpc))
            .env("TINYURL_API_KEY", api_key)
            .stdin(Stdio::null());
        command
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after the grace period).
    /// SIGKILL: no chance to flush or fold anything.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        crate::process::signal(&child, nix::sys::signal::Signal::SIGTERM)?;
        wait_or_kill(&mut child, Duration::from_secs(15))
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
