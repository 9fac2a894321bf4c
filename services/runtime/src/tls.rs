//! TLS between the services, one switch: when `TINYURL_INTERNAL_TLS_CERT`,
//! `TINYURL_INTERNAL_TLS_KEY` and `TINYURL_INTERNAL_TLS_CA` are set, every
//! gRPC server and client of the process speaks TLS 1.2/1.3 (rustls, ring)
//! with that certificate, trusting only that CA, and Postgres
//! (`sslmode=require`) and Redis (`rediss://`) connections verify their
//! servers against it. The certificate and key are read again when their
//! files change (cert-manager rewrites them in place), without a restart;
//! connections made after that present the new certificate.
//!
//! The identity is the process's, so it is installed once at start
//! ([`install`]) and found by the connection builders ([`installed`]).

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};

pub use crate::config::TlsFiles;
use crate::stopping::Stopping;

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The process's TLS identity and trust, cheap to clone.
#[derive(Clone)]
pub struct InternalTls {
    inner: Arc<Identity>,
}

struct Identity {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    roots: Arc<rustls::RootCertStore>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The certificate and key files as last loaded.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Identity")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the certificate file is not PEM")?;
    anyhow::ensure!(
        !chain.is_empty(),
        "the certificate file holds no certificate"
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("the key file holds no PEM key")?;
    CertifiedKey::from_der(chain, key, provider)
        .context("the key does not fit the certificate, or is of an unsupported kind")
}

impl InternalTls {
    /// Reads the certificate, key and CA; fails on anything unusable.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&read(&files.ca)?) {
            roots
                .add(cert.context("TINYURL_INTERNAL_TLS_CA is not PEM")?)
                .context("TINYURL_INTERNAL_TLS_CA holds an unusable certificate")?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "TINYURL_INTERNAL_TLS_CA holds no certificate"
        );
        let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
        let key = certified_key(&cert_pem, &key_pem, &provider)
            .context("TINYURL_INTERNAL_TLS_CERT / TINYURL_INTERNAL_TLS_KEY")?;
        Ok(Self {
            inner: Arc::new(Identity {
                files: files.clone(),
                provider,
                roots: Arc::new(roots),
                current: RwLock::new(Arc::new(key)),
                loaded: Mutex::new((cert_pem, key_pem)),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Loads the certificate and key again if either file changed; `true`
    /// when a new pair is in use. A pair that does not load (a file caught
    /// half-written, a key that does not match) leaves the old one in use.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let (cert_pem, key_pem) = (read(&self.inner.files.cert)?, read(&self.inner.files.key)?);
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        let key = certified_key(&cert_pem, &key_pem, &self.inner.provider)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
        *loaded = (cert_pem, key_pem);
        Ok(true)
    }

    /// Checks the files every [`RELOAD_CHECK`] until stopping begins.
    pub async fn watch(self, stopping: Stopping) {
        stopping
            .every(RELOAD_CHECK, || async {
                match self.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => {
                        metrics::counter!("tls_certificate_reloads_total", "outcome" => "loaded")
                            .increment(1);
                        tracing::info!(cert = %self.inner.files.cert.display(), "loaded a new TLS certificate");
                    }
                    Err(error) => {
                        metrics::counter!("tls_certificate_reloads_total", "outcome" => "failed")
                            .increment(1);
                        tracing::warn!(error = format!("{error:#}"), "cannot load the changed TLS certificate; keeping the current one");
                    }
                }
            })
            .await;
    }

    /// A server configuration presenting the current certificate; `alpn_h2`
    /// for gRPC (HTTP/2 is negotiated, as clients expect). Clients may
    /// present a certificate; one that the CA did not issue fails the
    /// handshake, and whether one was presented reaches the service in
    /// [`TlsConnectInfo`], which decides (idalloc requires one and answers
    /// UNAUTHENTICATED without it; the writer's callers carry API keys).
    pub fn server_config(&self, alpn_h2: bool) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&self.inner.roots),
            Arc::clone(&self.inner.provider),
        )
        .allow_unauthenticated()
        .build()
        .context("cannot build the client certificate verifier")?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::clone(&self.inner.provider))
                .with_safe_default_protocol_versions()
                .context("the TLS provider supports no protocol version")?
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(Arc::new(Resolver(self.clone())));
        if alpn_h2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        Ok(Arc::new(config))
    }

    /// A client configuration trusting the CA and presenting the current
    /// certificate to servers that ask for one.
    pub fn client_config(&self, alpn_h2: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::clone(&self.inner.provider))
                .with_safe_default_protocol_versions()
                .context("the TLS provider supports no protocol version")?
                .with_root_certificates(Arc::clone(&self.inner.roots))
                .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        if alpn_h2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        Ok(Arc::new(config))
    }
}

/// Hands rustls whatever certificate is current, as server and as client.
#[derive(Clone)]
struct Resolver(InternalTls);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.inner.fmt(formatter)
    }
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

static INSTALLED: OnceLock<InternalTls> = OnceLock::new();

/// Loads `files` as this process's TLS identity (the first call wins; the
/// embedded deployment runs without one) and returns it.
pub fn install(files: Option<&TlsFiles>) -> anyhow::Result<Option<InternalTls>> {
    let Some(files) = files else {
        return Ok(installed());
    };
    if let Some(existing) = INSTALLED.get() {
        anyhow::ensure!(
            existing.inner.files == *files,
            "another internal TLS identity is already installed in this process"
        );
        return Ok(Some(existing.clone()));
    }
    let tls = InternalTls::load(files)?;
    Ok(Some(INSTALLED.get_or_init(|| tls).clone()))
}

/// The process's TLS identity, if internal TLS is on.
pub fn installed() -> Option<InternalTls> {
    INSTALLED.get().cloned()
}

/// An accepted TLS connection, as tonic's server takes it.
pub struct TlsConnection(tokio_rustls::server::TlsStream<TcpStream>);

impl TlsConnection {
    /// The client's address.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// What a TLS connection tells the service (in each request's extensions).
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The client presented a certificate, and the CA issued it.
    pub client_certified: bool,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let (tcp, session) = self.0.get_ref();
        TlsConnectInfo {
            tcp: tcp.connect_info(),
            client_certified: session
                .peer_certificates()
                .is_some_and(|chain| !chain.is_empty()),
        }
    }
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Connections accepted on `listener` that completed a TLS handshake with
/// `config`. Handshakes run on their own tasks, so a slow or silent client
/// holds up nobody; one that fails (a plaintext client, an unknown
/// certificate) or takes longer than [`HANDSHAKE_TIMEOUT`] is dropped and
/// counted (`tls_handshake_failures_total`).
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl futures::Stream<Item = std::io::Result<TlsConnection>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (sender, receiver) = tokio::sync::mpsc::channel::<TlsConnection>(64);
    tokio::spawn(async move {
        loop {
            // The listener closes with the server: once it stops taking
            // connections, this loop ends instead of holding the port.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(connection)) => {
                        let _ = sender.send(TlsConnection(connection)).await;
                    }
                    Ok(Err(error)) => {
                        metrics::counter!("tls_handshake_failures_total").increment(1);
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("tls_handshake_failures_total").increment(1);
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|connection| (Ok(connection), receiver))
    })
}

/// One gRPC channel over `endpoints`. Plaintext: calls are balanced across
/// the endpoints that are up. TLS (with `tls`): one connection at a time,
/// made to the next endpoint that accepts it, verifying the server's name
/// against the endpoint's host, so a failed endpoint is passed over on
/// reconnect (tonic's balancer only dials plaintext).
pub fn grpc_channel(
    mut endpoints: Vec<tonic::transport::Endpoint>,
    tls: Option<&InternalTls>,
) -> anyhow::Result<tonic::transport::Channel> {
    anyhow::ensure!(!endpoints.is_empty(), "no endpoint");
    let Some(tls) = tls else {
        return Ok(if endpoints.len() == 1 {
            endpoints.remove(0).connect_lazy()
        } else {
            tonic::transport::Channel::balance_list(endpoints.into_iter())
        });
    };
    grpc_channel_with(endpoints, tls.client_config(true)?)
}

/// [`grpc_channel`] over TLS with a client configuration of the caller's
/// (which must offer ALPN `h2`).
pub fn grpc_channel_with(
    mut endpoints: Vec<tonic::transport::Endpoint>,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<tonic::transport::Channel> {
    anyhow::ensure!(!endpoints.is_empty(), "no endpoint");
    let targets: Arc<Vec<(String, u16)>> = Arc::new(
        endpoints
            .iter()
            .map(|endpoint| {
                let uri = endpoint.uri();
                let host = uri
                    .host()
                    .context("an endpoint has no host")?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                Ok((host, uri.port_u16().unwrap_or(443)))
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let connector = tokio_rustls::TlsConnector::from(config);
    let connect = tower::service_fn(move |_: http::Uri| {
        let (connector, targets, next) =
            (connector.clone(), Arc::clone(&targets), Arc::clone(&next));
        async move {
            let first = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut last_error = std::io::Error::other("no endpoint");
            for attempt in 0..targets.len() {
                let (host, port) = &targets[(first + attempt) % targets.len()];
                match connect_tls(&connector, host, *port).await {
                    Ok(connection) => return Ok(hyper_util::rt::TokioIo::new(connection)),
                    Err(error) => last_error = error,
                }
            }
            Err(last_error)
        }
    });
    Ok(endpoints.remove(0).connect_with_connector_lazy(connect))
}

async fn connect_tls(
    connector: &tokio_rustls::TlsConnector,
    host: &str,
    port: u16,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    let name = ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// A fred TLS configuration trusting the internal CA, for `rediss://`.
pub fn redis_tls(tls: &InternalTls) -> anyhow::Result<fred::types::config::TlsConfig> {
    let config = Arc::unwrap_or_clone(tls.client_config(false)?);
    Ok(fred::types::config::TlsConfig::from(
        fred::types::config::TlsConnector::from(config),
    ))
}

/// A tokio-postgres TLS connector trusting the internal CA.
pub fn postgres_tls(tls: &InternalTls) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let config = Arc::unwrap_or_clone(tls.client_config(false)?);
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
