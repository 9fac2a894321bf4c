//! Process plumbing shared by every managed server: scratch directories,
//! free ports, signals and polling for readiness.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A loopback port that was free a moment ago. Servers are started on it
/// straight away; the harness retries a start that loses the race.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// Tries at starting a server on ports from [`free_port`].
pub const PORT_ATTEMPTS: usize = 3;

/// Whether a failed start was a port another process took between
/// [`free_port`] and the bind (the error carries the server's output).
pub fn lost_port_race(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("Address already in use")
}

/// Polls `check` every 50 ms until it returns `Ok(true)` or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(error) => bail!("timed out after {timeout:?} waiting for {what}: {error:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The uid and gid that unprivileged servers run as, or `None` when the
/// tests already run unprivileged.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

pub fn unprivileged_user() -> anyhow::Result<Option<RunAs>> {
    let euid = std::fs::metadata("/proc/self")
        .context("cannot read /proc/self to find the effective uid")?
        .uid();
    if euid != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) =
            nix::unistd::User::from_name(name).context("cannot read the user database")?
        {
            return Ok(Some(RunAs {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }));
        }
    }
    bail!("running as root and neither a 'postgres' nor a 'nobody' user exists to run Postgres as")
}

/// A scratch directory removed on drop, owned by `owner` when given.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(prefix: &str, owner: Option<RunAs>) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "tinyurl-{prefix}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        if let Some(owner) = owner {
            std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid))
                .with_context(|| format!("cannot chown {}", path.display()))?;
        }
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Sends `signal` to one process.
pub fn signal(child: &Child, signal: Signal) -> anyhow::Result<()> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    kill(pid, signal).with_context(|| format!("cannot send {signal} to {pid}"))
}

/// Sends `signal` to `child` and then to every process it forked. Postgres
/// backends call `setsid()`, so a process-group signal would miss them; the
/// children are found through `/proc`. The parent is signalled first so that,
/// when stopping, it cannot fork new children behind our back.
pub fn signal_tree(child: &Child, signal: Signal) -> anyhow::Result<()> {
    let parent = i32::try_from(child.id()).context("pid out of range")?;
    kill(Pid::from_raw(parent), signal)
        .with_context(|| format!("cannot send {signal} to {parent}"))?;
    for pid in children_of(parent) {
        // A child may have exited since the scan; that is fine.
        let _ = kill(Pid::from_raw(pid), signal);
    }
    Ok(())
}

/// The sum of the clock-tick fields `fields` of `/proc/<process>/stat`,
/// counted from the first field after the name (the state is 0: utime is
/// 11, stime 12, cutime 13, cstime 14).
fn stat_ticks(process: &str, fields: std::ops::Range<usize>) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    let after_name: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(
        after_name
            .get(fields)?
            .iter()
            .filter_map(|field| field.parse::<u64>().ok())
            .sum(),
    )
}

/// CPU seconds of this process's children that it has waited for: a
/// command's cost, read before and after running it.
pub fn reaped_children_cpu_seconds() -> f64 {
    stat_ticks("self", 13..15).unwrap_or(0) as f64 / 100.0
}

/// CPU seconds used so far by `root` and its direct children (Postgres
/// backends are the postmaster's), the children it has already reaped
/// included. `/proc` counts in USER_HZ, 100 per second on Linux.
pub fn cpu_seconds_tree(root: u32) -> f64 {
    let Ok(parent) = i32::try_from(root) else {
        return 0.0;
    };
    let ticks: u64 = std::iter::once(parent)
        .chain(children_of(parent))
        .filter_map(|pid| stat_ticks(&pid.to_string(), 11..15))
        .sum();
    ticks as f64 / 100.0
}

/// Direct children of `parent`, read from `/proc/<pid>/stat`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // The command name (field 2) may contain spaces; fields after
                // the closing parenthesis are: state, ppid, ...
                .and_then(|stat| {
                    let after_name = stat.rsplit_once(')')?.1;
                    after_name.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Waits up to `timeout` for `child` to exit; SIGKILLs it after that.
pub fn wait_or_kill(
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return Ok(child.wait()?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

/// Finds `binary` in one of `dirs` or on PATH; the error names the package
/// that provides it.
pub fn find_binary(binary: &str, dirs: &[PathBuf], package: &str) -> anyhow::Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "`{binary}` is not installed; install it with `apt-get install {package}` \
                 (the system tests need real servers and never skip)"
            )
        })
}
