//! Logging and tracing. Logs go to stdout as JSON or pretty text; spans are
//! exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The W3C
//! trace-context propagator is always installed so that trace ids flow through
//! a service even when that service itself does not export.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{CommonConfig, LogFormat};

/// Flushes and shuts down the span exporter when dropped; keep it alive in `main`.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("cannot flush traces on shutdown: {error}");
        }
    }
}

/// Installs the global subscriber. Must be called inside a Tokio runtime when
/// OTLP export is configured (the exporter's gRPC client needs one).
pub fn init(config: &CommonConfig) -> anyhow::Result<TelemetryGuard> {
    init_with(config, LogOutput::Stdout)
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// The services' default (12-factor: the platform collects stdout).
    Stdout,
    /// For interactive commands whose standard output is for the user.
    Stderr,
}

/// [`init`] with the log lines sent to `output`.
pub fn init_with(config: &CommonConfig, output: LogOutput) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("invalid RUST_LOG {:?}", config.log_filter))?;
    let writer = || match output {
        LogOutput::Stdout => BoxMakeWriter::new(std::io::stdout),
        LogOutput::Stderr => BoxMakeWriter::new(std::io::stderr),
    };
    let log_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer())
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer())
            .boxed(),
    }
    .with_filter(filter);

    let (otel_layer, tracer_provider) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
                .with_context(|| format!("cannot build the OTLP exporter for {endpoint}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name(config.service_name.clone())
                        .build(),
                )
                .build();
            let tracer = provider.tracer(config.service_name.clone());
            opentelemetry::global::set_tracer_provider(provider.clone());
            // Spans are exported whatever RUST_LOG says about log lines:
            // turning logs down to warnings must not lose the traces.
            (
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
                ),
                Some(provider),
            )
        }
    };

    tracing_subscriber::registry()
        .with(log_layer)
        .with(otel_layer)
        .try_init()
        .context("a global tracing subscriber is already installed")?;

    Ok(TelemetryGuard { tracer_provider })
}

pub(crate) struct HeaderExtractor<'a>(pub(crate) &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` (a request's root span in this process) a child of the
/// caller's span when `headers` carry a W3C `traceparent`, then records
/// the trace id in its `trace_id` field, so every log line of the request
/// names its trace.
pub fn join_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    // Fails only when no OpenTelemetry layer is installed; then there is no
    // trace to join and the span is still useful for logs.
    let _ = span.set_parent(parent);
    record_trace_id(span);
}

/// Records the OpenTelemetry trace id of `span` in its `trace_id` field
/// (declared `tracing::field::Empty`); nothing when no trace is exported.
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let trace_id = context.span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}
