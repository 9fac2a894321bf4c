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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_system_runs_over_tls_and_refuses_plaintext() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    // Postgres and Redis keep their own copy; the services share one
    // certificate, replaced on disk later in the test.
    let backing = ca.issue("backing")?;
    let services = ca.issue("services")?;
    let redis = RedisServer::start_tls(&ca, &backing, "test-redis-password").await?;
    let tls_env = ca.env(&services);
    let env_refs = |extra: &[(&'static str, String)]| -> Vec<(String, String)> {
        let mut env = tls_env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
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
    let (database, redis, setup) = (&stack.database, stack.redis()?, &stack.setup);
    let (writer, rest) = setup.start_with_rest(&[]).await?;
    let key = setup.create_api_key("tls")?;
    let redirect_env = env_refs(&[
        ("TINYURL_DATABASE_URL", database.primary_url.clone()),
        ("TINYURL_REDIS_URL", redis.url()),
        ("TINYURL_PUBLIC_BASE_URL", "https://sho.rt".to_owned()),
    ]);
    let redirect_env: Vec<(&str, &str)> = redirect_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let redirect = start_redirect(&redirect_env).await?;

    // Create over TLS; the redirect finds it through Redis over TLS, and an
    // unknown code is looked up in Postgres over TLS.
    let client_leaf = ca.issue("client")?;
    let identity = ca.identity(&client_leaf)?;
    let bearer = Bearer::new(&key).context("a header value")?;
    let mut links = LinksClient::with_interceptor(
        grpc_channel(vec![endpoint(&writer)?], Some(&identity))?,
        bearer.clone(),
    );
    let link = links
        .create_link(CreateLinkRequest {
            target_url: "https://example.com/over-tls".to_owned(),
            ..CreateLinkRequest::default()
        })
        .await?
        .into_inner();
    let response = http_request(redirect.listen_addr(), "GET", &format!("/{}", link.code)).await?;
    assert_eq!(response.status, 302);
    assert_eq!(
        response.header("location"),
        Some("https://example.com/over-tls")
    );
    let missing = http_request(redirect.listen_addr(), "GET", "/NoSuch12").await?;
    assert_eq!(missing.status, 404, "the database answered over TLS");
    let (_, writer_metrics) = http_get(writer.admin_addr(), "/metrics").await?;
    assert!(
        !writer_metrics.contains("writer_cache_errors_total"),
        "the write-through reached Redis over TLS:\n{writer_metrics}"
    );
    let (_, redirect_metrics) = http_get(redirect.admin_addr(), "/metrics").await?;
    assert!(
        !redirect_metrics.contains("redirect_db_errors_total{db=\"primary\"} 1"),
        "{redirect_metrics}"
    );

    // The REST API is served over the same TLS, to a client without a
    // certificate (a reverse proxy that only verifies the writer).
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca.ca_cert)? {
        roots.add(cert?)?;
    }
    let proxy_like = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let request = format!(
        "GET /api/v1/links/{} HTTP/1.0\r\nHost: writer\r\nAuthorization: Bearer {key}\r\n\r\n",
        link.code
    );
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

    // Plaintext is refused by every TLS listener: the writer's and
    // idalloc's gRPC, Postgres and Redis.
    let refused = LinksClient::with_interceptor(plaintext(&writer)?, bearer.clone())
        .create_link(CreateLinkRequest {
            target_url: "https://example.com/plain".to_owned(),
            ..CreateLinkRequest::default()
        })
        .await
        .expect_err("plaintext gRPC to the writer");
    assert_ne!(refused.code(), tonic::Code::Ok);
    let refused = idalloc_client(plaintext(&idalloc)?)?
        .lease_range(lease())
        .await
        .expect_err("plaintext gRPC to idalloc");
    assert_ne!(refused.code(), tonic::Code::Ok);
    let plain_url = database
        .primary_url
        .replace("sslmode=require", "sslmode=disable");
    assert!(
        tinyurl_harness::postgres::connect(&plain_url)
            .await
            .is_err(),
        "plaintext Postgres"
    );
    assert!(
        tinyurl_harness::redis::ping(redis.port()).await.is_err(),
        "plaintext Redis"
    );

    // idalloc: a TLS client without a certificate is UNAUTHENTICATED, even
    // with the token; one whose certificate another CA issued never gets
    // through the handshake.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca.ca_cert)? {
        roots.add(cert?)?;
    }
    let mut anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    let status = IdAllocatorClient::with_interceptor(
        grpc_channel_with(vec![endpoint(&idalloc)?], Arc::new(anonymous))?,
        Bearer::new(TEST_IDALLOC_TOKEN).context("a header value")?,
    )
    .lease_range(lease())
    .await
    .expect_err("no client certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("certificate"), "{status:?}");
    let rogue_ca = TestCa::new()?;
    let rogue_leaf = rogue_ca.issue("rogue")?;
    let rogue = InternalTls::load(&TlsFiles {
        cert: rogue_leaf.cert.clone(),
        key: rogue_leaf.key.clone(),
        ca: ca.ca_cert.clone(),
    })?;
    let status = IdAllocatorClient::with_interceptor(
        grpc_channel(vec![endpoint(&idalloc)?], Some(&rogue))?,
        Bearer::new(TEST_IDALLOC_TOKEN).context("a header value")?,
    )
    .lease_range(lease())
    .await
    .expect_err("a certificate from another CA");
    assert_ne!(status.code(), tonic::Code::Ok);
    // The writer's own identity leases (it just did, to serve the create).
    IdAllocatorClient::with_interceptor(
        grpc_channel(vec![endpoint(&idalloc)?], Some(&identity))?,
        Bearer::new(TEST_IDALLOC_TOKEN).context("a header value")?,
    )
    .lease_range(lease())
    .await?;

    // A certificate replaced on disk is served without a restart, by the
    // writer and idalloc, and everything keeps working with it.
    let renewed = ca.issue("renewed")?;
    assert_ne!(leaf_der(&renewed)?, leaf_der(&services)?);
    replace(&services, &renewed)?;
    let expected = leaf_der(&renewed)?;
    for (name, port) in [
        ("writer", writer.listen_addr().port()),
        ("idalloc", idalloc.listen_addr().port()),
    ] {
        wait_until(
            &format!("{name} to serve the new certificate"),
            Duration::from_secs(10),
            || {
                let (identity, expected) = (identity.clone(), expected.clone());
                async move { Ok(served_certificate(&identity, port).await? == expected) }
            },
        )
        .await?;
    }
    let mut fresh = LinksClient::with_interceptor(
        grpc_channel(vec![endpoint(&writer)?], Some(&identity))?,
        bearer,
    );
    fresh
        .create_link(CreateLinkRequest {
            target_url: "https://example.com/after-renewal".to_owned(),
            ..CreateLinkRequest::default()
        })
        .await?;
    let (_, writer_metrics) = http_get(writer.admin_addr(), "/metrics").await?;
    assert!(
        writer_metrics.contains("tls_certificate_reloads_total{outcome=\"loaded\"}"),
        "{writer_metrics}"
    );
    // SIGTERM drains and exits cleanly over TLS too.
    for mut process in [writer, idalloc] {
        let exit = process.terminate(Duration::from_secs(20)).await?;
        assert!(exit.success(), "a clean exit, got {exit:?}");
    }
    Ok(())
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
