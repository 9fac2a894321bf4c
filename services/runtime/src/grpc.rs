//! gRPC plumbing shared by servers and clients: W3C trace context carried in
//! request metadata in both directions, and the per-request server span.

use opentelemetry::propagation::Injector;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(key) = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()) else {
            return;
        };
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(value) {
            self.0.insert(key, value);
        }
    }
}

/// The span of one incoming gRPC call, parented on the caller's trace when the
/// request carries a `traceparent`. Use as `Server::builder().trace_fn(server_span)`.
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc_request",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %request.uri().path(),
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::join_trace(&span, request.headers());
    span
}

/// Client interceptor that writes the current span's trace context into the
/// outgoing request, so the callee's spans join the caller's trace.
#[allow(clippy::result_large_err)] // tonic's Interceptor signature is fixed
pub fn inject_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    });
    Ok(request)
}

/// Client interceptor that sends `authorization: Bearer <token>` (an API key
/// or a service token) with every call, plus the current trace context.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// `None` when `token` holds characters a header cannot carry.
    pub fn new(token: &str) -> Option<Self> {
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {token}").parse().ok()?;
        // Kept out of debug output and HTTP/2 header compression tables.
        value.set_sensitive(true);
        Some(Self(value))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        inject_trace_context(request)
    }
}

/// Wraps a gRPC service so that a request over its size limit is answered
/// `RESOURCE_EXHAUSTED`, the code the gRPC specification gives a message
/// larger than the receiver accepts, instead of tonic's `OUT_OF_RANGE`.
/// The request is still refused before it is parsed.
#[derive(Debug, Clone)]
pub struct OversizedIsResourceExhausted<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService
    for OversizedIsResourceExhausted<S>
{
    const NAME: &'static str = S::NAME;
}

type Answer<B, E> = Result<http::Response<B>, E>;

impl<S, Request, B> tower::Service<Request> for OversizedIsResourceExhausted<S>
where
    S: tower::Service<Request, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = futures::future::Map<S::Future, fn(Answer<B, S::Error>) -> Answer<B, S::Error>>;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        use futures::FutureExt as _;
        self.0.call(request).map(oversized_to_resource_exhausted)
    }
}

/// A refusal decided before the handler runs is trailers-only: its status
/// is in the headers, where it can be rewritten.
fn oversized_to_resource_exhausted<B, E>(answer: Answer<B, E>) -> Answer<B, E> {
    answer.map(|mut response| {
        let headers = response.headers_mut();
        let out_of_range = headers
            .get("grpc-status")
            .is_some_and(|status| status == "11");
        let too_large = headers
            .get("grpc-message")
            .and_then(|message| message.to_str().ok())
            .is_some_and(|message| {
                message.contains("too%20large") || message.contains("too large")
            });
        if out_of_range && too_large {
            headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        }
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    #[test]
    fn traceparent_round_trips_through_metadata() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static(traceparent));
        let context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&crate::telemetry::HeaderExtractor(&headers))
        });
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        let mut metadata = tonic::metadata::MetadataMap::new();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut MetadataInjector(&mut metadata));
        });
        assert_eq!(
            metadata
                .get("traceparent")
                .and_then(|value| value.to_str().ok()),
            Some(traceparent)
        );
    }
}
