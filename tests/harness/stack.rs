//! The parts of the split system a test starts, chosen with one builder:
//! Postgres (a primary and its streaming replicas, or a cluster the test
//! made, e.g. over TLS), Redis or none, any number of idalloc processes, and
//! the [`WriterSetup`] that starts writers and runs their commands on those
//! parts. [`crate::system::System`] is a stack with one writer and an API
//! key; tests that start their own writers (several, with other settings,
//! killed and restarted) take the stack.

use anyhow::Context as _;

use crate::services::{WriterSetup, start_idalloc};
use crate::{PgCluster, RedisServer, ServiceProcess, TestDatabase};

pub struct Stack {
    pub cluster: PgCluster,
    pub database: TestDatabase,
    pub redis: Option<RedisServer>,
    pub idallocs: Vec<ServiceProcess>,
    pub setup: WriterSetup,
}

enum Postgres {
    Start { replicas: usize },
    Given(Box<PgCluster>),
}

enum Redis {
    Start,
    Given(Box<RedisServer>),
    Without,
}

/// What a [`Stack`] starts with; by default a primary with one replica,
/// Redis (a Redis Cluster under `TINYURL_TEST_REDIS=cluster`) and one
/// idalloc.
#[must_use]
pub struct StackBuilder {
    postgres: Postgres,
    redis: Redis,
    idallocs: usize,
    idalloc_env: Vec<(String, String)>,
    writer_env: Vec<(String, String)>,
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

impl StackBuilder {
    /// Streaming replicas beside the primary.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.postgres = Postgres::Start { replicas };
        self
    }

    /// A cluster the test started itself (over TLS, say).
    pub fn on_postgres(mut self, cluster: PgCluster) -> Self {
        self.postgres = Postgres::Given(Box::new(cluster));
        self
    }

    pub fn without_redis(mut self) -> Self {
        self.redis = Redis::Without;
        self
    }

    /// A Redis the test started itself.
    pub fn on_redis(mut self, redis: RedisServer) -> Self {
        self.redis = Redis::Given(Box::new(redis));
        self
    }

    /// How many idalloc processes, all on the stack's database.
    pub fn idallocs(mut self, count: usize) -> Self {
        self.idallocs = count;
        self
    }

    /// More variables for every idalloc.
    pub fn idalloc_env(mut self, env: &[(&str, &str)]) -> Self {
        self.idalloc_env = owned(env);
        self
    }

    /// More variables for every writer process and command the stack's
    /// setup starts (internal TLS).
    pub fn writer_env(mut self, env: &[(&str, &str)]) -> Self {
        self.writer_env = owned(env);
        self
    }

    pub async fn start(self) -> anyhow::Result<Stack> {
        let mut cluster = match self.postgres {
            Postgres::Start { replicas } => PgCluster::start_with_replicas(replicas).await?,
            Postgres::Given(cluster) => *cluster,
        };
        let database = cluster.create_database().await?;
        let redis = match self.redis {
            Redis::Start => Some(RedisServer::start().await?),
            Redis::Given(redis) => Some(*redis),
            Redis::Without => None,
        };
        let idalloc_env: Vec<(&str, &str)> = self
            .idalloc_env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let mut idallocs = Vec::with_capacity(self.idallocs);
        for _ in 0..self.idallocs {
            idallocs.push(start_idalloc(&database.primary_url, &idalloc_env).await?);
        }
        let setup = WriterSetup {
            database_url: database.primary_url.clone(),
            idalloc_urls: idallocs.iter().map(ServiceProcess::endpoint).collect(),
            redis_url: redis.as_ref().map(RedisServer::url),
            env: self.writer_env,
        };
        Ok(Stack {
            cluster,
            database,
            redis,
            idallocs,
            setup,
        })
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            postgres: Postgres::Start { replicas: 1 },
            redis: Redis::Start,
            idallocs: 1,
            idalloc_env: Vec::new(),
            writer_env: Vec::new(),
        }
    }

    /// The stack's Redis; an error for a stack without one.
    pub fn redis(&self) -> anyhow::Result<&RedisServer> {
        self.redis.as_ref().context("this stack has no Redis")
    }

    /// Links in the links table (live ones and tombstones).
    pub async fn count_links(&self) -> anyhow::Result<i64> {
        let db = self.cluster.primary.connect(&self.database.name).await?;
        Ok(db
            .query_one("SELECT count(*) FROM links", &[])
            .await?
            .get(0))
    }
}
