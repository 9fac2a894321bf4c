//! The whole split system for tests and benchmarks: a [`Stack`] (Postgres
//! primary and a streaming replica, Redis, one idalloc) with one writer and
//! an API key, and any number of redirect processes, all real processes on
//! free ports.

use std::time::Duration;

use anyhow::Context as _;

use tinyurl_proto::v1::links_client::LinksClient;
use tonic::transport::Channel;

use crate::services::{WriterSetup, start_redirect};
use crate::stack::Stack;
use crate::{PgCluster, RedisServer, ServiceProcess, TestDatabase};

pub struct System {
    pub cluster: PgCluster,
    pub database: TestDatabase,
    pub redis: RedisServer,
    pub idalloc: ServiceProcess,
    pub writer: ServiceProcess,
    pub setup: WriterSetup,
    pub api_key: String,
}

/// The public base URL every process of a test system uses.
pub const PUBLIC_BASE_URL: &str = "https://sho.rt";

impl System {
    /// Starts everything but the redirect processes; `writer_env` is added to
    /// the writer's environment.
    pub async fn start(writer_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_on(RedisServer::start().await?, writer_env).await
    }

    /// [`Self::start`] on `redis`.
    pub async fn start_on(redis: RedisServer, writer_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let Stack {
            cluster,
            database,
            redis,
            mut idallocs,
            setup,
        } = Stack::builder().on_redis(redis).start().await?;
        let redis = redis.context("a system has Redis")?;
        let idalloc = idallocs.pop().context("a system has an idalloc")?;
        let writer = setup.start(writer_env).await?;
        let api_key = setup.create_api_key("system")?;
        Ok(Self {
            cluster,
            database,
            redis,
            idalloc,
            writer,
            setup,
            api_key,
        })
    }

    /// The redirect environment: the replica, the primary, Redis.
    pub fn redirect_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "TINYURL_REPLICA_URLS".to_owned(),
                self.database.replica_urls.join(","),
            ),
            (
                "TINYURL_DATABASE_URL".to_owned(),
                self.database.primary_url.clone(),
            ),
            ("TINYURL_REDIS_URL".to_owned(), self.redis.url()),
            (
                "TINYURL_PUBLIC_BASE_URL".to_owned(),
                PUBLIC_BASE_URL.to_owned(),
            ),
        ]
    }

    /// A redirect process with `extra` on top of [`Self::redirect_env`].
    pub async fn start_redirect(&self, extra: &[(&str, &str)]) -> anyhow::Result<ServiceProcess> {
        let mut env = self.redirect_env();
        env.extend(
            extra
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        let pairs: Vec<(&str, &str)> = env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        start_redirect(&pairs).await
    }

    /// Waits until the replica has replayed the link `code`.
    pub async fn wait_replicated(&self, code: &str) -> anyhow::Result<()> {
        let replica_url = self
            .database
            .replica_urls
            .first()
            .context("the system has no replica")?
            .clone();
        crate::wait_until(
            "the replica to have the link",
            Duration::from_secs(10),
            || {
                let replica_url = replica_url.clone();
                async move {
                    let db = crate::postgres::connect(&replica_url).await?;
                    Ok(db
                        .query_opt("SELECT 1 FROM links WHERE code = $1", &[&code])
                        .await?
                        .is_some())
                }
            },
        )
        .await
    }

    /// A gRPC client of the writer.
    pub fn links(&self) -> anyhow::Result<LinksClient<Channel>> {
        let channel = Channel::from_shared(self.writer.endpoint())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(20))
            .connect_lazy();
        Ok(LinksClient::new(channel))
    }

    /// `message` with this system's API key attached.
    pub fn authed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = format!("Bearer {}", self.api_key).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}
