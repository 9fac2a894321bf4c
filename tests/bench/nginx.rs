//! nginx `return 301`: the reference the HTTP benchmarks measure against.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tinyurl_harness::process::{free_port, signal};

/// nginx answering every path with `return 301`, tuned as one would for a
/// static redirect: one worker per CPU, no access log, long keep-alive.
pub struct Nginx {
    /// The master (its workers are its children).
    pub child: Child,
    pub addr: SocketAddr,
}

impl Nginx {
    pub fn start(binary: &Path, dir: &Path, workers: usize) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let prefix = dir.join("nginx");
        fs::create_dir_all(prefix.join("logs"))?;
        let config = prefix.join("nginx.conf");
        fs::write(
            &config,
            format!(
                "worker_processes {workers};\n\
                 pid {pid};\n\
                 error_log {error_log} warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n\
                   access_log off;\n\
                   keepalive_requests 10000000;\n\
                   client_body_temp_path {tmp}/body;\n\
                   proxy_temp_path {tmp}/proxy;\n\
                   fastcgi_temp_path {tmp}/fastcgi;\n\
                   uwsgi_temp_path {tmp}/uwsgi;\n\
                   scgi_temp_path {tmp}/scgi;\n\
                   server {{\n\
                     listen {addr} reuseport;\n\
                     location / {{ return 301 https://example.com/zipf/0; }}\n\
                   }}\n\
                 }}\n",
                pid = prefix.join("nginx.pid").display(),
                error_log = prefix.join("logs/error.log").display(),
                tmp = prefix.display(),
            ),
        )?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start nginx")?;
        let nginx = Self { child, addr };
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("nginx did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master: it takes its workers down with it.
        if signal(&self.child, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
