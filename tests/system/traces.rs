//! Traces across processes, as an operator's collector receives them: every
//! process exports over OTLP/gRPC to a real receiver, and one `tinyurl
//! shorten` must arrive as one trace, from the command through the writer
//! to idalloc, each span under its true parent; a redirect's span names the
//! code and the tier that answered; log lines name their trace.

use std::collections::HashMap;
use std::process::Command;

use anyhow::Context as _;
use tinyurl_harness::Stack;
use tinyurl_harness::otlp::{OtlpReceiver, ReceivedSpan, describe};
use tinyurl_harness::services::{
    ServiceBinary, authed, http_request_with, links_client, start_redirect,
};
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest};

/// Every span of `spans` hangs under another of them, except one root.
fn single_tree(spans: &[ReceivedSpan]) -> anyhow::Result<&ReceivedSpan> {
    let ids: HashMap<&str, &ReceivedSpan> = spans
        .iter()
        .map(|span| (span.span_id.as_str(), span))
        .collect();
    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.parent_span_id.is_empty())
        .collect();
    anyhow::ensure!(roots.len() == 1, "one root span, not {}", roots.len());
    for span in spans {
        anyhow::ensure!(
            span.parent_span_id.is_empty() || ids.contains_key(span.parent_span_id.as_str()),
            "{} {}: its parent {} is not in the trace",
            span.service,
            span.name,
            span.parent_span_id
        );
    }
    Ok(roots[0])
}

/// The chain of ancestors of `span`, nearest first.
fn ancestors<'a>(spans: &'a [ReceivedSpan], span: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.as_str();
    while let Some(next) = spans.iter().find(|candidate| candidate.span_id == parent) {
        chain.push(next);
        parent = next.parent_span_id.as_str();
        if chain.len() > spans.len() {
            break;
        }
    }
    chain
}

fn find<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    matches: impl Fn(&ReceivedSpan) -> bool,
) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|span| span.service == service && matches(span))
}

fn is_call(span: &ReceivedSpan, method: &str) -> bool {
    span.name == "grpc_request"
        && span
            .attribute("rpc.method")
            .is_some_and(|path| path.ends_with(method))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shorten_is_one_trace_across_client_writer_and_idalloc() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let endpoint = receiver.endpoint();
    let exporting = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("TINYURL_LOG_FORMAT", "json"),
    ];
    let mut idalloc_env = exporting.to_vec();
    idalloc_env.push(("RUST_LOG", "info,tinyurl_idalloc=debug"));
    let stack = Stack::builder().idalloc_env(&idalloc_env).start().await?;
    let (database, redis, idalloc, setup) = (
        &stack.database,
        stack.redis()?,
        &stack.idallocs[0],
        &stack.setup,
    );
    let writer = setup.start(&exporting).await?;
    let key = setup.create_api_key("traces")?;

    // The writer starts with two leased ranges of 10,000 IDs. Spending the
    // first makes the next create take the second and lease a third: the
    // shorten below is the create that leases.
    let mut links = links_client(&writer)?;
    for batch in 0..10 {
        let request = BatchCreateLinksRequest {
            links: (0..1000)
                .map(|index| CreateLinkRequest {
                    target_url: format!("https://example.com/filler/{batch}/{index}"),
                    ..CreateLinkRequest::default()
                })
                .collect(),
        };
        links.batch_create_links(authed(request, &key)).await?;
    }

    let cli = ServiceBinary::locate("tinyurl")?;
    let output = Command::new(cli.path())
        .args(["--json", "shorten", "https://example.com/traced"])
        .env_clear()
        .env("TINYURL_SERVER", writer.endpoint())
        .env("TINYURL_API_KEY", &key)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .output()
        .context("cannot run tinyurl shorten")?;
    anyhow::ensure!(
        output.status.success(),
        "tinyurl shorten failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let code = created["code"].as_str().context("no code in the output")?;

    // The command flushes its spans before it exits.
    let command = receiver
        .spans()
        .into_iter()
        .find(|span| span.service == "tinyurl-cli" && span.attribute("command") == Some("shorten"))
        .with_context(|| {
            format!(
                "no span from the command (its log: {})",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    anyhow::ensure!(
        command.parent_span_id.is_empty(),
        "the command's span is the root"
    );
    let spans = receiver
        .wait_for_trace(
            &command.trace_id,
            "the writer's and idalloc's spans of the shorten",
            |spans| {
                find(spans, "tinyurl-idalloc", |span| is_call(span, "LeaseRange")).is_some()
                    && find(spans, "tinyurl-writer", |span| span.name == "group_commit").is_some()
            },
        )
        .await?;
    let trace = describe(&spans);
    let root = single_tree(&spans).with_context(|| trace.clone())?;
    assert_eq!(root.span_id, command.span_id, "{trace}");

    let create = find(&spans, "tinyurl-writer", |span| is_call(span, "CreateLink"))
        .with_context(|| format!("no CreateLink span:\n{trace}"))?;
    assert_eq!(create.parent_span_id, command.span_id, "{trace}");
    let commit = find(&spans, "tinyurl-writer", |span| span.name == "group_commit")
        .with_context(|| trace.clone())?;
    assert!(
        ancestors(&spans, commit)
            .iter()
            .any(|span| span.span_id == create.span_id),
        "the group commit is inside the CreateLink call:\n{trace}"
    );
    let lease = find(&spans, "tinyurl-idalloc", |span| {
        is_call(span, "LeaseRange")
    })
    .with_context(|| trace.clone())?;
    let lease_chain = ancestors(&spans, lease);
    let caller = lease_chain.first().with_context(|| trace.clone())?;
    assert_eq!(
        (caller.service.as_str(), caller.name.as_str()),
        ("tinyurl-writer", "lease_refill"),
        "idalloc's call is a child of the writer's refill:\n{trace}"
    );
    assert!(
        lease_chain
            .iter()
            .any(|span| span.span_id == commit.span_id),
        "the refill is part of the create that took the last ID:\n{trace}"
    );
    // idalloc's own work, down to the store, under its call.
    let stored = find(&spans, "tinyurl-idalloc", |span| span.name == "lease")
        .with_context(|| format!("no span of idalloc's store:\n{trace}"))?;
    assert!(
        ancestors(&spans, stored)
            .iter()
            .any(|span| span.span_id == lease.span_id),
        "{trace}"
    );

    // Log lines carry the trace id: idalloc's line about the range it
    // leased for this create names the command's trace.
    tinyurl_harness::wait_until(
        "idalloc's log line of the lease",
        std::time::Duration::from_secs(10),
        || {
            let log = idalloc.log();
            let trace_id = command.trace_id.clone();
            async move {
                Ok(log
                    .lines()
                    .any(|line| line.contains("leased range") && line.contains(&trace_id)))
            }
        },
    )
    .await
    .with_context(|| idalloc.log())?;

    // A redirect joins the caller's trace, and its span says what answered.
    let mut redirect_env = exporting.to_vec();
    let replicas = database.replica_urls.join(",");
    let redis_url = redis.url();
    redirect_env.extend([
        ("TINYURL_REPLICA_URLS", replicas.as_str()),
        ("TINYURL_DATABASE_URL", database.primary_url.as_str()),
        ("TINYURL_REDIS_URL", redis_url.as_str()),
        ("TINYURL_PUBLIC_BASE_URL", "https://sho.rt"),
    ]);
    let redirect = start_redirect(&redirect_env).await?;
    // The process empties its L1 when its invalidation subscription first
    // connects (messages from before may be missed): before that, the first
    // request's entry could be flushed before the second asks for it.
    let admin = redirect.admin_addr();
    tinyurl_harness::wait_until(
        "the invalidation subscription and its first flush",
        std::time::Duration::from_secs(10),
        || async move {
            Ok(
                tinyurl_harness::services::metric(admin, "redirect_invalidations_subscribed", &[])
                    .await?
                    == 1.0
                    && tinyurl_harness::services::metric(admin, "redirect_l1_flushes_total", &[])
                        .await?
                        >= 1.0,
            )
        },
    )
    .await?;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{caller_trace}-{caller_span}-01");
    for _ in 0..2 {
        let response = http_request_with(
            redirect.listen_addr(),
            "GET",
            &format!("/{code}"),
            &[("traceparent", traceparent.as_str())],
        )
        .await?;
        assert_eq!(response.status, 302);
    }
    let redirects = receiver
        .wait_for_trace(caller_trace, "the redirect's two spans", |spans| {
            spans
                .iter()
                .filter(|span| span.service == "tinyurl-redirect" && span.name == "redirect")
                .count()
                == 2
        })
        .await?;
    let mut tiers = Vec::new();
    for span in &redirects {
        assert_eq!(span.parent_span_id, caller_span, "{}", describe(&redirects));
        assert_eq!(span.attribute("code"), Some(code));
        assert_eq!(span.attribute("http.response.status_code"), Some("302"));
        tiers.push(span.attribute("tier").unwrap_or_default().to_owned());
    }
    tiers.sort();
    // The second request found the link in the process's own cache; the
    // first was answered by Redis (the create writes through) or, when that
    // write had not landed yet, by a database.
    assert_eq!(tiers[0], "l1", "{}", describe(&redirects));
    assert!(
        ["redis", "replica", "primary"].contains(&tiers[1].as_str()),
        "{}",
        describe(&redirects)
    );
    Ok(())
}
