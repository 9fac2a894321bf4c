//! The split system with internal TLS on, against real TLS-only Postgres and
//! Redis and a test CA: every hop encrypted and verified, plaintext clients
//! refused by each TLS listener, idalloc refusing callers without a
//! certificate from the CA, and a certificate replaced on disk served
//! without a restart.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tinyurl_harness::services::{
    TEST_IDALLOC_TOKEN, http_get, http_request, idalloc_client, start_redirect,
};
use tinyurl_harness::tls::{Leaf, TestCa};
use tinyurl_harness::{PgCluster, RedisServer, ServiceProcess, Stack, wait_until};
use tinyurl_proto::v1::id_allocator_client::IdAllocatorClient;
use tinyurl_proto::v1::links_client::LinksClient;
use tinyurl_proto::v1::{CreateLinkRequest, LeaseRangeRequest};
use tinyurl_runtime::grpc::Bearer;
use tinyurl_runtime::tls::{InternalTls, TlsFiles, grpc_channel, grpc_channel_with};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

fn endpoint(process: &ServiceProcess) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(process.endpoint())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10)))
}

fn plaintext(process: &ServiceProcess) -> anyhow::Result<Channel> {
    Ok(endpoint(process)?.connect_lazy())
}

fn lease() -> LeaseRangeRequest {
    LeaseRangeRequest {
        namespace: "links".to_owned(),
        count: 10,
        request_id: String::new(),
    }
}

/// The certificate a TLS server on `port` presents now, to a client of `ca`.
async fn served_certificate(identity: &InternalTls, port: u16) -> anyhow::Result<Vec<u8>> {
    let connector = tokio_rustls::TlsConnector::from(identity.client_config(true)?);
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let connection =
        tokio::time::timeout(Duration::from_secs(5), connector.connect(name, stream)).await??;
    let chain = connection
        .get_ref()
        .1
        .peer_certificates()
        .context("no server certificate")?;
    Ok(chain.first().context("an empty chain")?.to_vec())
}

fn leaf_der(leaf: &Leaf) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_file(&leaf.cert)?.to_vec())
}

/// Replaces `target`'s files with `source`'s the way a certificate manager
/// does: each new file written beside the old one, then renamed over it.
fn replace(target: &Leaf, source: &Leaf) -> anyhow::Result<()> {
    for (from, to) in [(&source.key, &target.key), (&source.cert, &target.cert)] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged)?;
        std::fs::rename(&staged, to)?;
    }
    Ok(())
}

/// The split system with internal TLS on every hop: TLS-only Postgres and
/// Redis, idalloc, a writer with its REST listener and a redirect, all with
/// certificates from one test CA.
struct TlsSystem {
    /// A client identity from the CA, the one the services' clients use.
    identity: InternalTls,
    key: String,
    writer: ServiceProcess,
    rest: std::net::SocketAddr,
    idalloc: ServiceProcess,
    redirect: ServiceProcess,
    // The services stop before the databases they use, and the CA's files
    // outlive them all.
    stack: Stack,
    /// The certificate every service loads, replaced on disk by one scenario.
    services: Leaf,
    ca: TestCa,
}

impl TlsSystem {
    async fn start() -> anyhow::Result<Self> {
        let ca = TestCa::new()?;
        // Postgres and Redis keep their own copy; the services share one
        // certificate.
        let backing = ca.issue("backing")?;
        let services = ca.issue("services")?;
        let redis = RedisServer::start_tls(&ca, &backing, "test-redis-password").await?;
        let tls_env = ca.env(&services);
        let service_env: Vec<(&str, &str)> = tls_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut stack = Stack::builder()
            .on_postgres(PgCluster::start_tls(&backing).await?)
            .on_redis(redis)
            .idalloc_env(&service_env)
            .writer_env(&service_env)
            .start()
            .await?;
        let idalloc = stack.idallocs.remove(0);
        let (writer, rest) = stack.setup.start_with_rest(&[]).await?;
        let key = stack.setup.create_api_key("tls")?;
        let mut redirect_env = tls_env.clone();
        redirect_env.extend([
            (
                "TINYURL_DATABASE_URL".to_owned(),
                stack.database.primary_url.clone(),
            ),
            ("TINYURL_REDIS_URL".to_owned(), stack.redis()?.url()),
            (
                "TINYURL_PUBLIC_BASE_URL".to_owned(),
                "https://sho.rt".to_owned(),
            ),
        ]);
        let redirect_env: Vec<(&str, &str)> = redirect_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let redirect = start_redirect(&redirect_env).await?;
        let identity = ca.identity(&ca.issue("client")?)?;
        Ok(Self {
            ca,
            services,
            identity,
            key,
            writer,
            rest,
            idalloc,
            redirect,
            stack,
        })
    }

    fn bearer(&self) -> anyhow::Result<Bearer> {
        Bearer::new(&self.key).context("a header value")
    }

    fn links(&self) -> anyhow::Result<LinksClient<InterceptedService<Channel, Bearer>>> {
        Ok(LinksClient::with_interceptor(
            grpc_channel(vec![endpoint(&self.writer)?], Some(&self.identity))?,
            self.bearer()?,
        ))
    }

    /// Lease from idalloc over `channel` with the services' token.
    async fn lease_over(&self, channel: Channel) -> Result<(), tonic::Status> {
        let token = Bearer::new(TEST_IDALLOC_TOKEN)
            .ok_or_else(|| tonic::Status::internal("the token is not a header value"))?;
        IdAllocatorClient::with_interceptor(channel, token)
            .lease_range(lease())
            .await
            .map(drop)
    }

    /// A root store with the test CA only: a client that verifies the
    /// server but has no certificate of its own.
    fn without_client_certificate(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca.ca_cert)? {
            roots.add(cert?)?;
        }
        Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
    }

    /// Create over TLS; the redirect finds the link through Redis over TLS,
    /// and an unknown code is looked up in Postgres over TLS. Answers the
    /// code created.
    async fn every_hop_of_a_create_and_a_redirect_is_encrypted(&self) -> anyhow::Result<String> {
        let link = self
            .links()?
            .create_link(CreateLinkRequest {
                target_url: "https://example.com/over-tls".to_owned(),
                ..CreateLinkRequest::default()
            })
            .await?
            .into_inner();
        let redirect = self.redirect.listen_addr();
        let response = http_request(redirect, "GET", &format!("/{}", link.code)).await?;
        assert_eq!(response.status, 302);
        assert_eq!(
            response.header("location"),
            Some("https://example.com/over-tls")
        );
        let missing = http_request(redirect, "GET", "/NoSuch12").await?;
        assert_eq!(missing.status, 404, "the database answered over TLS");
        let (_, writer_metrics) = http_get(self.writer.admin_addr(), "/metrics").await?;
        assert!(
            !writer_metrics.contains("writer_cache_errors_total"),
            "the write-through reached Redis over TLS:\n{writer_metrics}"
        );
        let (_, redirect_metrics) = http_get(self.redirect.admin_addr(), "/metrics").await?;
        assert!(
            !redirect_metrics.contains("redirect_db_errors_total{db=\"primary\"} 1"),
            "{redirect_metrics}"
        );
        Ok(link.code)
    }

    /// The REST API is served over the same TLS, to a client without a
    /// certificate (a reverse proxy that only verifies the writer), and not
    /// over plaintext.
    async fn rest_is_served_to_a_client_without_a_certificate(
        &self,
        code: &str,
    ) -> anyhow::Result<()> {
        let proxy_like = self.without_client_certificate()?;
        let request = format!(
            "GET /api/v1/links/{code} HTTP/1.0\r\nHost: writer\r\nAuthorization: Bearer {}\r\n\r\n",
            self.key
        );
        let rest = self.rest;
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let stream = tokio::net::TcpStream::connect(rest).await?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(proxy_like))
                .connect(name, stream)
                .await?;
            tokio::io::AsyncWriteExt::write_all(&mut tls, request.as_bytes()).await?;
            let mut answer = Vec::new();
            // The server closes after an HTTP/1.0 answer, sometimes without a
            // TLS close_notify: what was read is the answer either way.
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut answer).await;
            anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
        })
        .await??;
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(answer.contains("https://example.com/over-tls"), "{answer}");
        let plain_rest = http_request(rest, "GET", "/api/v1/openapi.json").await;
        assert!(
            plain_rest.is_err() || plain_rest.is_ok_and(|response| response.status != 200),
            "plaintext HTTP to the REST listener"
        );
        Ok(())
    }

    /// Plaintext is refused by every TLS listener: the writer's and
    /// idalloc's gRPC, Postgres and Redis.
    async fn plaintext_is_refused_by_every_listener(&self) -> anyhow::Result<()> {
        let refused = LinksClient::with_interceptor(plaintext(&self.writer)?, self.bearer()?)
            .create_link(CreateLinkRequest {
                target_url: "https://example.com/plain".to_owned(),
                ..CreateLinkRequest::default()
            })
            .await
            .expect_err("plaintext gRPC to the writer");
        assert_ne!(refused.code(), tonic::Code::Ok);
        let refused = idalloc_client(plaintext(&self.idalloc)?)?
            .lease_range(lease())
            .await
            .expect_err("plaintext gRPC to idalloc");
        assert_ne!(refused.code(), tonic::Code::Ok);
        let plain_url = self
            .stack
            .database
            .primary_url
            .replace("sslmode=require", "sslmode=disable");
        assert!(
            tinyurl_harness::postgres::connect(&plain_url)
                .await
                .is_err(),
            "plaintext Postgres"
        );
        assert!(
            tinyurl_harness::redis::ping(self.stack.redis()?.port())
                .await
                .is_err(),
            "plaintext Redis"
        );
        Ok(())
    }

    /// idalloc: a TLS client without a certificate is UNAUTHENTICATED, even
    /// with the token; one whose certificate another CA issued never gets
    /// through the handshake; the services' own identity leases.
    async fn idalloc_leases_only_to_the_cas_certificates(&self) -> anyhow::Result<()> {
        let mut anonymous = self.without_client_certificate()?;
        anonymous.alpn_protocols = vec![b"h2".to_vec()];
        let status = self
            .lease_over(grpc_channel_with(
                vec![endpoint(&self.idalloc)?],
                Arc::new(anonymous),
            )?)
            .await
            .expect_err("no client certificate");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("certificate"), "{status:?}");
        let rogue_ca = TestCa::new()?;
        let rogue_leaf = rogue_ca.issue("rogue")?;
        let rogue = InternalTls::load(&TlsFiles {
            cert: rogue_leaf.cert.clone(),
            key: rogue_leaf.key.clone(),
            ca: self.ca.ca_cert.clone(),
        })?;
        let status = self
            .lease_over(grpc_channel(vec![endpoint(&self.idalloc)?], Some(&rogue))?)
            .await
            .expect_err("a certificate from another CA");
        assert_ne!(status.code(), tonic::Code::Ok);
        self.lease_over(grpc_channel(
            vec![endpoint(&self.idalloc)?],
            Some(&self.identity),
        )?)
        .await?;
        Ok(())
    }

    /// A certificate replaced on disk is served without a restart, by the
    /// writer and idalloc, and everything keeps working with it.
    async fn a_certificate_replaced_on_disk_is_served_without_a_restart(
        &self,
    ) -> anyhow::Result<()> {
        let renewed = self.ca.issue("renewed")?;
        assert_ne!(leaf_der(&renewed)?, leaf_der(&self.services)?);
        replace(&self.services, &renewed)?;
        let expected = leaf_der(&renewed)?;
        for (name, port) in [
            ("writer", self.writer.listen_addr().port()),
            ("idalloc", self.idalloc.listen_addr().port()),
        ] {
            wait_until(
                &format!("{name} to serve the new certificate"),
                Duration::from_secs(10),
                || {
                    let (identity, expected) = (self.identity.clone(), expected.clone());
                    async move { Ok(served_certificate(&identity, port).await? == expected) }
                },
            )
            .await?;
        }
        self.links()?
            .create_link(CreateLinkRequest {
                target_url: "https://example.com/after-renewal".to_owned(),
                ..CreateLinkRequest::default()
            })
            .await?;
        let (_, writer_metrics) = http_get(self.writer.admin_addr(), "/metrics").await?;
        assert!(
            writer_metrics.contains("tls_certificate_reloads_total{outcome=\"loaded\"}"),
            "{writer_metrics}"
        );
        Ok(())
    }

    /// SIGTERM drains and exits cleanly over TLS too.
    async fn the_services_exit_cleanly_on_sigterm(self) -> anyhow::Result<()> {
        // The CA's files, left in `self`, go when it does, after the rest.
        let Self {
            writer,
            idalloc,
            redirect,
            stack,
            ..
        } = self;
        for mut process in [writer, idalloc] {
            let exit = process.terminate(Duration::from_secs(20)).await?;
            assert!(exit.success(), "a clean exit, got {exit:?}");
        }
        drop(redirect);
        drop(stack);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_system_runs_over_tls_and_refuses_plaintext() -> anyhow::Result<()> {
    let system = TlsSystem::start().await?;
    let code = system
        .every_hop_of_a_create_and_a_redirect_is_encrypted()
        .await?;
    system
        .rest_is_served_to_a_client_without_a_certificate(&code)
        .await?;
    system.plaintext_is_refused_by_every_listener().await?;
    system.idalloc_leases_only_to_the_cas_certificates().await?;
    // Last but one: it replaces the certificate the other scenarios use.
    system
        .a_certificate_replaced_on_disk_is_served_without_a_restart()
        .await?;
    system.the_services_exit_cleanly_on_sigterm().await
}

/// The compose stack's CA script makes a certificate every service loads,
/// and a second run renews them under the same CA.
#[test]
fn the_compose_ca_script_makes_loadable_certificates() -> anyhow::Result<()> {
    let dir = tinyurl_harness::process::ScratchDir::new("compose-ca", None)?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../infra/tls/make-internal-ca")
        .canonicalize()?;
    let out = dir.path().join("internal");
    let mut first = Vec::new();
    for run in 0..2 {
        let made = std::process::Command::new("bash")
            .arg(&script)
            .arg(&out)
            .output()?;
        anyhow::ensure!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        for service in ["idalloc", "writer", "redirect", "postgres", "redis"] {
            let files = TlsFiles {
                cert: out.join(format!("{service}.pem")),
                key: out.join(format!("{service}.key")),
                ca: out.join("ca.pem"),
            };
            InternalTls::load(&files)?.server_config(true)?;
            let der = CertificateDer::from_pem_file(&files.cert)?.to_vec();
            if run == 0 {
                first.push(der);
            } else {
                assert!(!first.contains(&der), "{service} was renewed");
            }
        }
    }
    Ok(())
}
