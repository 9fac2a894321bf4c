//! What the link crate's tests share: an idalloc in this process, on its
//! own SQLite file, as `tinyurl up` runs one.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use secrecy::SecretString;

/// The service token the tests' idalloc accepts.
pub fn token() -> SecretString {
    SecretString::from("a-service-token-of-the-rules-tests-0123456789".to_owned())
}

/// idalloc on its own SQLite file in `dir`, serving until the sender is
/// used or dropped; it then closes its connections at once.
pub async fn idalloc(dir: &std::path::Path) -> anyhow::Result<(std::net::SocketAddr, Idalloc)> {
    let mut config = tinyurl_idalloc::Config::with(
        SecretString::from(format!("sqlite:{}", dir.join("ids.db").display())),
        vec![token()],
        &tinyurl_runtime::Env::default(),
    )?;
    config.common.listen = ([127, 0, 0, 1], 0).into();
    config.common.admin_listen = ([127, 0, 0, 1], 0).into();
    config.common.drain_timeout = std::time::Duration::ZERO;
    let app = tinyurl_idalloc::App::build(config, None).await?;
    let address = app.grpc_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    Ok((address, Idalloc { stop, served }))
}

/// A running idalloc; dropped, it stops.
pub struct Idalloc {
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Idalloc {
    /// Stops it and waits until it has.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.served.await?
    }
}

/// A directory of its own under the system's temporary one, removed when
/// dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tinyurl-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
