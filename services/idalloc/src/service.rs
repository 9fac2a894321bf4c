//! The `tinyurl.v1.IdAllocator` gRPC service.

use std::time::Instant;

use tinyurl_proto::v1::id_allocator_server::IdAllocator;
use tinyurl_proto::v1::{LeaseRangeRequest, LeaseRangeResponse};

use crate::auth::CallerPolicy;
use crate::lease::LeaseRequest;
use crate::store::LeaseStore;

pub struct IdAllocatorService {
    store: std::sync::Arc<dyn LeaseStore>,
    max_lease: u64,
    policy: CallerPolicy,
}

impl IdAllocatorService {
    pub fn new(
        store: std::sync::Arc<dyn LeaseStore>,
        max_lease: u64,
        policy: CallerPolicy,
    ) -> Self {
        Self {
            store,
            max_lease,
            policy,
        }
    }
}

#[tonic::async_trait]
impl IdAllocator for IdAllocatorService {
    #[tracing::instrument(skip_all, fields(namespace = %request.get_ref().namespace, count = request.get_ref().count))]
    async fn lease_range(
        &self,
        request: tonic::Request<LeaseRangeRequest>,
    ) -> Result<tonic::Response<LeaseRangeResponse>, tonic::Status> {
        let started = Instant::now();
        let authenticated = self.policy.authenticate_request(&request);
        let message = request.into_inner();
        let parsed = authenticated.and_then(|()| {
            let parsed = LeaseRequest::parse(
                &message.namespace,
                message.count,
                &message.request_id,
                self.max_lease,
            )?;
            self.policy.allow(&parsed.namespace)?;
            Ok(parsed)
        });
        let result = match parsed {
            Ok(parsed) => self.store.lease(&parsed).await.map(|lease| (parsed, lease)),
            Err(error) => Err(error),
        };

        let outcome = match &result {
            Ok((_, lease)) if lease.replayed => "replayed",
            Ok(_) => "leased",
            Err(error) => error.kind().label(),
        };
        metrics::counter!("idalloc_leases_total", "outcome" => outcome).increment(1);
        metrics::histogram!("idalloc_lease_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());

        let (parsed, lease) = result.map_err(crate::error::LeaseError::into_status)?;
        if !lease.replayed {
            // The range was validated positive and below i64::MAX on the way in.
            metrics::counter!("idalloc_ids_leased_total").increment(parsed.count.unsigned_abs());
        }
        tracing::debug!(
            start = lease.start,
            end = lease.end,
            replayed = lease.replayed,
            "leased range"
        );
        Ok(tonic::Response::new(LeaseRangeResponse {
            namespace: parsed.namespace.as_str().to_owned(),
            start: lease.start.unsigned_abs(),
            end: lease.end.unsigned_abs(),
            replayed: lease.replayed,
        }))
    }
}
