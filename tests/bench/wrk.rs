//! wrk, run and read: what the HTTP benchmarks share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

#[derive(Debug, Clone, Default)]
pub struct WrkRun {
    /// Requests completed in the run.
    pub requests: u64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// From the run's whole latency histogram (wrk's `done` hook): its
    /// printed distribution stops at 99%.
    pub p999_ms: f64,
    pub non_3xx: u64,
}

/// Appended to every run's script: prints the 99.9th percentile, which wrk
/// keeps but does not print.
const P999_LUA: &str = "
done = function(summary, latency, requests)
  io.write(string.format(\"p99.9-us %d\\n\", latency:percentile(99.9)))
end
";

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
        // wrk takes one script: the run's own (if any) with the p99.9 hook.
        let mut lua = match script {
            Some(script) => std::fs::read_to_string(script)
                .with_context(|| format!("cannot read {}", script.display()))?,
            None => String::new(),
        };
        lua.push_str(P999_LUA);
        let combined = std::env::temp_dir().join(format!("wrk-{}.lua", std::process::id()));
        std::fs::write(&combined, lua)
            .with_context(|| format!("cannot write {}", combined.display()))?;
        command.arg("-s").arg(&combined);
        let output = command
            .arg(format!("http://{addr}{path}"))
            .stdin(Stdio::null())
            .output()
            .context("cannot run wrk")?;
        let _ = std::fs::remove_file(&combined);
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
        if let Some((count, _)) = line.split_once(" requests in ")
            && let Ok(count) = count.trim().parse()
        {
            run.requests = count;
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            run.requests_per_second = rate.trim().parse()?;
        } else if let Some(value) = line.strip_prefix("50%") {
            run.p50_ms = millis(value.trim())?;
        } else if let Some(value) = line.strip_prefix("99%") {
            run.p99_ms = millis(value.trim())?;
        } else if let Some(micros) = line.strip_prefix("p99.9-us") {
            run.p999_ms = micros.trim().parse::<f64>()? / 1000.0;
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
