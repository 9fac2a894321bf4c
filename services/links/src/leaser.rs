//! IDs for new links, served from ranges leased from idalloc.
//!
//! Two ranges are buffered (current and next). Taking IDs is a short critical
//! section on a std mutex (never held across an await). The next range is
//! fetched in the background as soon as the IDs left would last less than the
//! configured horizon at the current create rate, so creates never wait on
//! idalloc in steady state and keep working through an idalloc outage until
//! the buffer is spent. Range sizes follow the create rate: each range is
//! sized to last about two horizons. A crash loses at most the two buffered
//! ranges.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use tinyurl_proto::v1::LeaseRangeRequest;
use tinyurl_proto::v1::id_allocator_client::IdAllocatorClient;
use tinyurl_runtime::grpc::Bearer;
use tonic::transport::Channel;

use crate::error::WriterError;

/// Namespace of link IDs in idalloc.
pub const LINK_NAMESPACE: &str = "links";
/// Smallest range leased. IDs are plentiful (tier 7 alone holds 3.5 × 10^12),
/// so a fresh writer starts with enough buffered for a burst.
const MIN_RANGE: u64 = 10_000;
const MAX_RANGE: u64 = 10_000_000;

#[derive(Debug, Clone, Copy)]
struct IdRange {
    next: u64,
    end: u64,
}

impl IdRange {
    fn remaining(&self) -> u64 {
        self.end - self.next
    }
}

#[derive(Debug)]
struct Buffer {
    current: Option<IdRange>,
    next: Option<IdRange>,
    refill_in_flight: bool,
    /// IDs taken per second, smoothed.
    rate: f64,
    window_started: Instant,
    window_taken: u64,
    last_refill_error: Option<String>,
}

impl Buffer {
    fn remaining(&self) -> u64 {
        self.current.map_or(0, |range| range.remaining())
            + self.next.map_or(0, |range| range.remaining())
    }

    fn record_taken(&mut self, count: u64) {
        self.window_taken += count;
        let elapsed = self.window_started.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let observed = self.window_taken as f64 / elapsed.as_secs_f64();
            self.rate = if self.rate == 0.0 {
                observed
            } else {
                0.5 * self.rate + 0.5 * observed
            };
            self.window_started = Instant::now();
            self.window_taken = 0;
        }
    }
}

type LeaseClient =
    IdAllocatorClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

struct Inner {
    buffer: Mutex<Buffer>,
    refilled: tokio::sync::Notify,
    client: LeaseClient,
    call_timeout: Duration,
    horizon: Duration,
    instance: String,
}

/// Hands out IDs from leased ranges; cheap to clone.
#[derive(Clone)]
pub struct IdLeaser {
    inner: Arc<Inner>,
}

impl IdLeaser {
    pub fn new(
        channel: Channel,
        token: &SecretString,
        call_timeout: Duration,
        horizon: Duration,
    ) -> anyhow::Result<Self> {
        // Every lease call carries the service token idalloc requires (and
        // the caller's trace context).
        let bearer = Bearer::new(token.expose_secret())
            .ok_or_else(|| anyhow::anyhow!("the idalloc token must be printable ASCII"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                buffer: Mutex::new(Buffer {
                    current: None,
                    next: None,
                    refill_in_flight: false,
                    rate: 0.0,
                    window_started: Instant::now(),
                    window_taken: 0,
                    last_refill_error: None,
                }),
                refilled: tokio::sync::Notify::new(),
                client: IdAllocatorClient::with_interceptor(channel, bearer),
                call_timeout,
                horizon,
                instance: uuid::Uuid::new_v4().simple().to_string(),
            }),
        })
    }

    /// This process's id, the prefix of every lease request id it sends.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// IDs buffered right now (for metrics and tests).
    pub fn buffered(&self) -> u64 {
        self.lock().remaining()
    }

    /// Fills both buffers before the writer reports ready.
    pub async fn prime(&self) -> Result<(), WriterError> {
        for _ in 0..2 {
            let range = self.lease(MIN_RANGE.max(self.target_size())).await?;
            let mut buffer = self.lock();
            if buffer.current.is_none() {
                buffer.current = Some(range);
            } else {
                buffer.next = Some(range);
            }
        }
        Ok(())
    }

    /// `count` fresh IDs. Waits for a refill only when the buffer is empty;
    /// fails UNAVAILABLE when idalloc cannot refill it in time.
    #[tracing::instrument(name = "lease_ids", skip(self))]
    pub async fn take(&self, count: usize) -> Result<Vec<u64>, WriterError> {
        let mut ids = Vec::with_capacity(count);
        let deadline = Instant::now() + self.inner.call_timeout * 2;
        while ids.len() < count {
            let refill_wanted;
            {
                let mut buffer = self.lock();
                while ids.len() < count {
                    let Some(range) = buffer
                        .current
                        .as_mut()
                        .filter(|range| range.remaining() > 0)
                    else {
                        buffer.current = buffer.next.take();
                        if buffer.current.is_none() {
                            break;
                        }
                        continue;
                    };
                    let wanted = (count - ids.len()) as u64;
                    let granted = wanted.min(range.remaining());
                    ids.extend(range.next..range.next + granted);
                    range.next += granted;
                }
                buffer.record_taken(ids.len() as u64);
                refill_wanted = self.needs_refill(&buffer);
                if refill_wanted {
                    buffer.refill_in_flight = true;
                }
            }
            if refill_wanted {
                self.spawn_refill();
            }
            if ids.len() < count {
                let notified = self.inner.refilled.notified();
                // Re-check: a refill may have landed between unlock and here.
                if self.buffered() > 0 {
                    continue;
                }
                let now = Instant::now();
                if now >= deadline
                    || tokio::time::timeout(deadline - now, notified)
                        .await
                        .is_err()
                {
                    let reason = self
                        .lock()
                        .last_refill_error
                        .clone()
                        .unwrap_or_else(|| "timed out".to_owned());
                    metrics::counter!("writer_id_exhausted_total").increment(1);
                    return Err(WriterError::Unavailable(format!(
                        "no IDs left and idalloc cannot lease more ({reason}); retry later"
                    )));
                }
            }
        }
        Ok(ids)
    }

    fn needs_refill(&self, buffer: &Buffer) -> bool {
        if buffer.refill_in_flight || buffer.next.is_some() {
            return false;
        }
        let current = buffer.current.map_or(0, |range| range.remaining());
        // Before the first one-second window closes there is no rate yet;
        // the open window's count is the best estimate then. Without it, a
        // writer spending its first range within a second would not refill
        // until its last range was half gone.
        let rate = if buffer.rate > 0.0 {
            buffer.rate
        } else {
            buffer.window_taken as f64 / buffer.window_started.elapsed().as_secs_f64().max(0.001)
        };
        let lasts_for = if rate > 0.0 {
            current as f64 / rate
        } else {
            f64::INFINITY
        };
        lasts_for < self.inner.horizon.as_secs_f64() || current < MIN_RANGE / 2
    }

    fn target_size(&self) -> u64 {
        let rate = self.lock().rate;
        let wanted = (rate * 2.0 * self.inner.horizon.as_secs_f64()).ceil() as u64;
        wanted.clamp(MIN_RANGE, MAX_RANGE)
    }

    fn spawn_refill(&self) {
        let leaser = self.clone();
        // In the trace of the create that found the buffer low: when that
        // create waits for the range, its trace shows why.
        let span = tracing::info_span!("lease_refill");
        let refill = async move {
            let size = leaser.target_size();
            let result = leaser.lease(size).await;
            let mut buffer = leaser.lock();
            buffer.refill_in_flight = false;
            match result {
                Ok(range) => {
                    buffer.last_refill_error = None;
                    if buffer
                        .current
                        .is_none_or(|current| current.remaining() == 0)
                    {
                        buffer.current = Some(range);
                    } else {
                        buffer.next = Some(range);
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot lease the next ID range");
                    buffer.last_refill_error = Some(error.to_string());
                }
            }
            drop(buffer);
            leaser.inner.refilled.notify_waiters();
        };
        tokio::spawn(tracing::Instrument::instrument(refill, span));
    }

    /// One lease, retried with the same request id until the call timeout,
    /// so a retry after a lost reply burns no range.
    async fn lease(&self, count: u64) -> Result<IdRange, WriterError> {
        // The instance prefix lets operators (and tests) attribute leases to
        // the writer process that took them.
        let request_id = format!("{}:{}", self.inner.instance, uuid::Uuid::new_v4().simple());
        let started = Instant::now();
        let deadline = started + self.inner.call_timeout;
        let mut last_error;
        loop {
            let mut client = self.inner.client.clone();
            let mut request = tonic::Request::new(LeaseRangeRequest {
                namespace: LINK_NAMESPACE.to_owned(),
                count,
                request_id: request_id.clone(),
            });
            request.set_timeout(self.inner.call_timeout);
            let attempt =
                tokio::time::timeout(self.inner.call_timeout, client.lease_range(request)).await;
            match attempt {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    metrics::counter!("writer_lease_refills_total", "outcome" => "ok").increment(1);
                    metrics::histogram!("writer_lease_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::gauge!("writer_lease_range_size").set(count as f64);
                    return Ok(IdRange {
                        next: response.start,
                        end: response.end,
                    });
                }
                // Retrying cannot fix a refused request or a wrong token.
                Ok(Err(status))
                    if matches!(
                        status.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::Unauthenticated
                            | tonic::Code::PermissionDenied
                    ) =>
                {
                    metrics::counter!("writer_lease_refills_total", "outcome" => "rejected")
                        .increment(1);
                    return Err(WriterError::Unexpected(anyhow::anyhow!(
                        "idalloc rejected the lease: {}",
                        status.message()
                    )));
                }
                Ok(Err(status)) => last_error = format!("{}: {}", status.code(), status.message()),
                Err(_) => last_error = "idalloc call timed out".to_owned(),
            }
            if Instant::now() + Duration::from_millis(100) >= deadline {
                metrics::counter!("writer_lease_refills_total", "outcome" => "failed").increment(1);
                return Err(WriterError::Unavailable(format!(
                    "idalloc unavailable: {last_error}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A panic while holding this lock leaves consistent plain data behind
        // (counters and ranges), so a poisoned lock is still usable.
        self.inner
            .buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
