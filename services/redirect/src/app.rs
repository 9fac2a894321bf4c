//! Wiring: listeners (port 0 works, for tests), the tiers, the background
//! tasks (invalidations, click flushing, database probes), and serving until
//! the injected shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fred::prelude::ClientLike as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tinyurl_runtime::{AdminServer, Readiness, Stopping};
use tokio::net::{TcpListener, TcpSocket};

use crate::clicks::{ClickSettings, ClickSink, Clicks, Countries, StreamBounds};
use crate::config::Config;
use crate::domains::Domains;
use crate::entry::CachePolicy;
use crate::http::{HttpMetrics, Shared};
use crate::l2::{MemorySharedCache, RedisSharedCache, SharedCache};
use crate::protected::Passwords;
use crate::resolve::{Resolver, Settings};
use crate::store::{LinkSource, PostgresLinkSource, SqliteLinkSource};
use crate::visitors::Visitors;
use secrecy::ExposeSecret as _;
use tinyurl_domain::protect::Key;
use tinyurl_runtime::memory::MemoryCache;

/// Where links are read from and which shared cache sits in front.
pub struct Backend {
    pub source: Arc<dyn LinkSource>,
    pub cache: CacheTier,
}

/// The shared tier and the invalidation feed that comes with it.
#[derive(Clone)]
pub enum CacheTier {
    /// None: L1 and the database only, no invalidations (L1 TTL bounds
    /// staleness).
    None,
    /// Redis (`TINYURL_REDIS_URL`): one connection per serving thread, a
    /// subscriber for invalidations, and the click stream.
    Redis(secrecy::SecretString),
    /// The in-process cache the writer of the same process keeps coherent.
    Memory(Arc<MemoryCache>),
}

/// The configured link source: the embedded store for a `sqlite:` database
/// URL without replicas, Postgres otherwise.
pub async fn open_source(config: &Config) -> anyhow::Result<Arc<dyn LinkSource>> {
    let sqlite_path = config.database_url.as_ref().and_then(|url| {
        tinyurl_runtime::sqlite::path_from_url(secrecy::ExposeSecret::expose_secret(url))
    });
    if let Some(path) = sqlite_path {
        anyhow::ensure!(
            config.replica_urls.is_empty(),
            "TINYURL_REPLICA_URLS cannot be combined with an embedded (sqlite:) database"
        );
        return Ok(Arc::new(
            SqliteLinkSource::open(&path, config.pool_size, config.db_timeout).await?,
        ));
    }
    Ok(Arc::new(PostgresLinkSource::connect(
        &config.replica_urls,
        config.database_url.as_ref(),
        config.pool_size,
        config.db_timeout,
    )?))
}

pub struct App {
    config: Config,
    resolver: Arc<Resolver>,
    /// `None` when clicks are not counted (turned off, or nowhere to send them).
    clicks: Option<Arc<Clicks>>,
    /// What redirect rules read of a request.
    visitors: Arc<Visitors>,
    passwords: Arc<Passwords>,
    domains: Arc<Domains>,
    store: Arc<dyn LinkSource>,
    cache: CacheTier,
    listener: std::net::TcpListener,
    admin: AdminServer,
    readiness: Readiness,
}

impl App {
    /// Opens the configured source and cache, then [`Self::build_with`].
    pub async fn build(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let source = open_source(&config).await?;
        let cache = match &config.redis_url {
            Some(url) => {
                // Validate now rather than in every serving thread.
                fred::prelude::Config::from_url(secrecy::ExposeSecret::expose_secret(url))
                    .context("invalid TINYURL_REDIS_URL")?;
                CacheTier::Redis(url.clone())
            }
            None => CacheTier::None,
        };
        Self::build_with(config, Backend { source, cache }, metrics).await
    }

    /// Builds the tiers and binds both listeners. Nothing here waits on the
    /// database or Redis: redirect serves what it can reach, and connects to
    /// the rest as it comes up.
    pub async fn build_with(
        config: Config,
        backend: Backend,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let Backend {
            source: store,
            cache,
        } = backend;
        let resolver = Arc::new(Resolver::new(
            &Settings {
                l1_capacity: config.l1_capacity,
                l1_ttl: config.l1_ttl,
                l1_negative_ttl: config.l1_negative_ttl,
                policy: CachePolicy {
                    permanent_max_age: config.permanent_max_age,
                },
            },
            Arc::clone(&store),
        ));
        let listener = reuseport_listener(config.common.listen)
            .with_context(|| format!("cannot bind the HTTP listener on {}", config.common.listen))?
            .into_std()?;
        let readiness = Readiness::default();
        let admin =
            AdminServer::bind(config.common.admin_listen, metrics, readiness.clone()).await?;
        let counts_clicks = config.clicks_enabled
            && (!matches!(cache, CacheTier::None) || config.clicks_redis_url.is_some());
        // Read by the click counter and by redirect rules alike.
        let countries = config
            .geoip_db
            .as_deref()
            .map(Countries::open)
            .transpose()?
            .map(Arc::new);
        let clicks = if counts_clicks {
            Some(Arc::new(Clicks::new(ClickSettings {
                max_keys: config.clicks_max_codes,
                trusted_proxies: config.trusted_proxies.clone(),
                countries: countries.clone(),
                privacy: config.clicks_privacy,
            })))
        } else {
            None
        };
        let visitors = Arc::new(Visitors {
            countries,
            trusted_proxies: config.trusted_proxies.clone(),
            bots: isbot::Bots::default(),
        });
        let cookie_secret = match &config.cookie_secret {
            Some(secret) => Key::from_secret(
                "tinyurl cookie secret v1",
                secret.expose_secret().as_bytes(),
            ),
            None => {
                if matches!(cache, CacheTier::Redis(_)) {
                    tracing::warn!(
                        "TINYURL_COOKIE_SECRET is not set: the cookie a password earns opens \
                         its link only on this redirect process"
                    );
                }
                Key::from_bytes(rand::random())
            }
        };
        let passwords = Arc::new(Passwords::new(
            cookie_secret,
            config.password_attempts_per_address,
            config.password_attempts_per_link,
            config.public_base_url.starts_with("https://"),
        ));
        let domains = Arc::new(Domains::new(&config.public_base_url, config.unknown_hosts));
        Ok(Self {
            clicks,
            visitors,
            passwords,
            domains,
            config,
            resolver,
            store,
            cache,
            listener,
            admin,
            readiness,
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves; then not-ready, drain in-flight
    /// requests (bounded by the drain timeout), flush clicks, exit.
    ///
    /// HTTP is served thread-per-core, like nginx's workers: each serving
    /// thread runs its own single-threaded runtime with its own
    /// `SO_REUSEPORT` listener and its own Redis connection, so a request
    /// never wakes another thread. The L1 cache, the database pools and the
    /// click counters are shared. Background work (invalidations, click
    /// flushing, database probes, the admin listener) runs on the caller's
    /// runtime.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopping = Stopping::watch(shutdown, self.readiness.clone());
        let admin = tokio::spawn(self.admin.run(stopping.clone().wait()));
        let probes = tokio::spawn(Arc::clone(&self.store).probe_unhealthy(stopping.clone()));
        let invalidations = match &self.cache {
            CacheTier::Redis(url) => {
                let subscriber = crate::invalidation::subscriber(url, self.config.redis_timeout)?;
                Some(tokio::spawn(crate::invalidation::follow(
                    subscriber,
                    Arc::clone(&self.resolver),
                    stopping.clone().wait(),
                )))
            }
            CacheTier::Memory(cache) => Some(tokio::spawn(crate::invalidation::follow_memory(
                cache.subscribe(),
                Arc::clone(&self.resolver),
                stopping.clone().wait(),
            ))),
            CacheTier::None => None,
        };
        // Clicks flush once more after the last request has drained, so a
        // click counted during the drain is sent, not lost.
        let (drained, clicks_stopped) = tokio::sync::oneshot::channel::<()>();
        let clicks = match (&self.clicks, click_sink(&self.config, &self.cache)?) {
            (Some(clicks), Some(sink)) => Some(tokio::spawn(Arc::clone(clicks).run(
                sink,
                self.config.clicks_flush,
                async move {
                    let _ = clicks_stopped.await;
                },
            ))),
            _ => None,
        };
        let gauges = tokio::spawn(report_gauges(Arc::clone(&self.resolver), stopping.clone()));
        // The domains are read before the first request is served.
        if let Ok(domains) = self.store.domains().await {
            self.domains.set(domains);
        }
        tokio::spawn(Arc::clone(&self.domains).refresh(Arc::clone(&self.store), stopping.clone()));
        // New Postgres and Redis connections present the current certificate.
        if let Some(tls) = tinyurl_runtime::tls::installed() {
            tokio::spawn(tls.watch(stopping.clone()));
        }

        let address = self.listener.local_addr()?;
        let threads = self.config.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        });
        // One count for all serving threads of this process.
        let scanners = (self.config.scanner_404_per_minute > 0).then(|| {
            Arc::new(crate::scanners::Scanners::new(
                self.config.scanner_404_per_minute,
                self.config.trusted_proxies.clone(),
            ))
        });
        let context = ThreadContext {
            resolver: Arc::clone(&self.resolver),
            scanners,
            clicks: self.clicks.clone(),
            visitors: Arc::clone(&self.visitors),
            passwords: Arc::clone(&self.passwords),
            domains: Arc::clone(&self.domains),
            config: self.config.clone(),
            cache: self.cache.clone(),
            stopping: stopping.clone(),
        };
        let finished = context.spawn(self.listener, address, threads)?;
        self.readiness.set_ready(true);

        let drain = self.config.common.drain_timeout;
        let served = tokio::select! {
            served = all_finished(finished) => served,
            () = stopping.clone().drain_deadline(drain) => {
                tracing::warn!(?drain, "drain timeout reached; closing remaining connections");
                Ok(())
            }
        };
        // Flush the last clicks (bounded: every Redis command has a timeout).
        let _ = drained.send(());
        if let Some(clicks) = clicks {
            let _ = tokio::time::timeout(Duration::from_secs(3), clicks).await;
        }
        gauges.abort();
        probes.abort();
        if let Some(invalidations) = invalidations {
            let _ = tokio::time::timeout(Duration::from_secs(1), invalidations).await;
        }
        if let Ok(Err(error)) = admin.await {
            tracing::warn!(%error, "admin server failed");
        }
        tracing::info!("stopped");
        served
    }
}

/// A Redis client whose connection is driven by the calling runtime.
fn connect_redis(config: &Config, url: &secrecy::SecretString) -> anyhow::Result<RedisSharedCache> {
    RedisSharedCache::connect(
        url,
        config.redis_timeout,
        config.cache_ttl,
        config.negative_ttl,
    )
}

/// Where click batches go: `TINYURL_CLICKS_REDIS_URL`, else the shared
/// Redis, else the embedded deployment's in-process stream. Flushing is
/// background work, so its commands get a longer bound than lookups.
fn click_sink(config: &Config, cache: &CacheTier) -> anyhow::Result<Option<ClickSink>> {
    let url = match (&config.clicks_redis_url, cache) {
        (Some(url), _) | (None, CacheTier::Redis(url)) => url,
        (None, CacheTier::Memory(cache)) => return Ok(Some(ClickSink::Memory(Arc::clone(cache)))),
        (None, CacheTier::None) => return Ok(None),
    };
    let timeout = config.redis_timeout.max(Duration::from_secs(1));
    let client = tinyurl_runtime::redis::builder(url, timeout)
        .context("invalid click stream Redis URL")?
        .build()?;
    client.connect();
    Ok(Some(ClickSink::Redis {
        client,
        options: tinyurl_runtime::redis::command_options(timeout),
        bounds: StreamBounds {
            max_entries: config.clicks_stream_max_entries,
            max_age: config.clicks_stream_max_age,
        },
        day_keys: crate::clicks::DayKeys::default(),
    }))
}

/// The shared tier as the calling serving thread uses it.
fn connect_l2(
    config: &Config,
    cache: &CacheTier,
    passwords: &Passwords,
) -> anyhow::Result<Option<Arc<dyn SharedCache>>> {
    Ok(match cache {
        CacheTier::Redis(url) => Some(Arc::new(connect_redis(config, url)?)),
        CacheTier::Memory(cache) => Some(Arc::new(MemorySharedCache::new(
            Arc::clone(cache),
            config.cache_ttl,
            config.negative_ttl,
            passwords.local_attempts(),
        ))),
        CacheTier::None => None,
    })
}

/// A listener that other serving threads can bind beside.
fn reuseport_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// Waits for every serving thread; the error of one that failed.
async fn all_finished(
    finished: Vec<tokio::sync::oneshot::Receiver<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let mut outcome = Ok(());
    for finished in finished {
        match finished.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => outcome = Err(error),
            Err(_) => outcome = Err(anyhow::anyhow!("a serving thread panicked")),
        }
    }
    outcome
}

/// What a serving thread is started with.
#[derive(Clone)]
struct ThreadContext {
    resolver: Arc<Resolver>,
    scanners: Option<Arc<crate::scanners::Scanners>>,
    clicks: Option<Arc<Clicks>>,
    visitors: Arc<Visitors>,
    passwords: Arc<Passwords>,
    domains: Arc<Domains>,
    config: Config,
    cache: CacheTier,
    stopping: Stopping,
}

impl ThreadContext {
    /// Starts `threads` serving threads, the first on `listener`, the
    /// others on listeners of their own bound beside it; each says on its
    /// receiver how it ended.
    fn spawn(
        &self,
        listener: std::net::TcpListener,
        address: SocketAddr,
        threads: usize,
    ) -> anyhow::Result<Vec<tokio::sync::oneshot::Receiver<anyhow::Result<()>>>> {
        let mut first_listener = Some(listener);
        let mut finished = Vec::with_capacity(threads);
        for index in 0..threads {
            let listener = first_listener.take();
            let (done, finished_rx) = tokio::sync::oneshot::channel();
            finished.push(finished_rx);
            let context = self.clone();
            std::thread::Builder::new()
                .name(format!("http-{index}"))
                .spawn(move || {
                    let _ = done.send(context.serve(listener, address));
                })
                .context("cannot start a serving thread")?;
        }
        Ok(finished)
    }

    /// Runs one serving thread until stopping; `listener` is the first
    /// thread's (already bound), the others bind beside it.
    fn serve(
        self,
        listener: Option<std::net::TcpListener>,
        address: SocketAddr,
    ) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a serving runtime")?;
        runtime.block_on(async move {
            let listener = match listener {
                Some(listener) => TcpListener::from_std(listener)?,
                None => reuseport_listener(address)?,
            };
            let shared = Arc::new(Shared {
                resolver: self.resolver,
                l2: connect_l2(&self.config, &self.cache, &self.passwords)?,
                clicks: self.clicks,
                visitors: self.visitors,
                public_base_url: self.config.public_base_url.clone(),
                metrics: HttpMetrics::new(),
                scanners: self.scanners,
                traced: self.config.common.otlp_endpoint.is_some(),
                passwords: self.passwords,
                domains: self.domains,
            });
            crate::server::serve(listener, shared, self.stopping.wait()).await;
            Ok(())
        })
    }
}

async fn report_gauges(resolver: Arc<Resolver>, stopping: Stopping) {
    stopping
        .every(Duration::from_secs(1), || async {
            metrics::gauge!("redirect_l1_entries").set(resolver.l1_entries() as f64);
        })
        .await;
}
