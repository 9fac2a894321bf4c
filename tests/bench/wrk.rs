//! wrk, run and read: what the HTTP benchmarks share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

#[derive(Debug, Clone, Default)]
pub struct WrkRun {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_3xx: u64,
}

pub struct Wrk {
    pub binary: PathBuf,
    pub threads: usize,
    pub duration: Duration,
    /// Sent with every request.
    pub headers: Vec<&'static str>,
}

impl Wrk {
    pub fn run(
        &self,
        addr: SocketAddr,
        path: &str,
        script: Option<&Path>,
        connections: usize,
        duration: Duration,
    ) -> anyhow::Result<WrkRun> {
        let mut command = Command::new(&self.binary);
        command
            .arg(format!("-t{}", self.threads.min(connections)))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{}s", duration.as_secs()))
            .arg("--latency")
            .arg("--timeout")
            .arg("5s");
        for header in &self.headers {
            command.arg("-H").arg(header);
        }
        if let Some(script) = script {
            command.arg("-s").arg(script);
        }
        let output = command
            .arg(format!("http://{addr}{path}"))
            .stdin(Stdio::null())
            .output()
            .context("cannot run wrk")?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk failed: {}{}",
                text,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        parse_wrk(&text)
    }
}

fn parse_wrk(text: &str) -> anyhow::Result<WrkRun> {
    let mut run = WrkRun::default();
    for line in text.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            run.requests_per_second = rate.trim().parse()?;
        } else if let Some(value) = line.strip_prefix("50%") {
            run.p50_ms = millis(value.trim())?;
        } else if let Some(value) = line.strip_prefix("99%") {
            run.p99_ms = millis(value.trim())?;
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.non_3xx = count.trim().parse()?;
        }
    }
    anyhow::ensure!(
        run.requests_per_second > 0.0,
        "no rate in wrk output:\n{text}"
    );
    Ok(run)
}

fn millis(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|character: char| character.is_ascii_alphabetic())
        .context("latency without a unit")?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse()?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        other => bail!("unknown wrk latency unit {other:?}"),
    })
}
