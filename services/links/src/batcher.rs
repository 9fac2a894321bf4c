//! Group commit for single creates. Each `CreateLink` queues its create; a
//! caller that finds a commit slot free takes everything queued (up to a
//! batch) and commits it with one INSERT and one scripted Redis write, while
//! callers arriving meanwhile queue behind it and are taken together by the
//! next slot. Nothing waits for a batch to fill, and an idle writer commits a
//! lone create at once from the caller's own task, so a single client pays no
//! extra hop; under load many creates share a statement and a commit.
//!
//! Batches run in spawned tasks: a caller that goes away (a cancelled RPC)
//! cannot abandon the other creates it took. A create whose caller went away
//! while it was queued is dropped when a batch takes it, so nothing is
//! created for a request nobody waits for any more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, oneshot};

use crate::auth::OwnerId;
use crate::error::WriterError;
use crate::input::ValidCreate;
use crate::store::StoredLink;

/// What commits a group: creates every valid item together, one result per
/// item, in order.
pub trait GroupCommit: Send + Sync + 'static {
    fn create_many(
        &self,
        owner: OwnerId,
        items: Vec<Result<ValidCreate, WriterError>>,
    ) -> impl std::future::Future<Output = Vec<Result<StoredLink, WriterError>>> + Send;
}

type Reply = oneshot::Sender<Result<StoredLink, WriterError>>;

struct Job {
    id: u64,
    owner: OwnerId,
    item: ValidCreate,
    reply: Reply,
    /// The request's span, linked from the batch span so traces connect.
    span: tracing::Span,
}

/// Handle to the group commit; cheap to clone.
pub struct CreateBatcher<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for CreateBatcher<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C> {
    committer: Arc<C>,
    queue: Mutex<Vec<Job>>,
    /// Commits in flight at once. Few: on a busy primary a bigger group per
    /// statement beats more statements in parallel.
    slots: Arc<Semaphore>,
    max_batch: usize,
    next_id: AtomicU64,
}

impl<C: GroupCommit> CreateBatcher<C> {
    /// At most `slots` group commits in flight, each of at most `max_batch`
    /// creates.
    pub fn start(committer: Arc<C>, slots: usize, max_batch: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                committer,
                queue: Mutex::new(Vec::new()),
                slots: Arc::new(Semaphore::new(slots.max(1))),
                max_batch: max_batch.max(1),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    pub async fn create(
        &self,
        owner: OwnerId,
        item: ValidCreate,
    ) -> Result<StoredLink, WriterError> {
        let inner = &self.inner;
        let (reply, mut answer) = oneshot::channel();
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        inner.lock_queue().push(Job {
            id,
            owner,
            item,
            reply,
            span: tracing::Span::current(),
        });
        loop {
            let permit = tokio::select! {
                biased;
                result = &mut answer => return answered(result),
                permit = Arc::clone(&inner.slots).acquire_owned() => permit.map_err(|_| {
                    WriterError::Unavailable("the writer is shutting down".to_owned())
                })?,
            };
            let jobs = inner.take_batch();
            // Batches take the oldest creates first, so an empty queue means
            // ours is already in one. Otherwise we commit what we took, and
            // wait for our own answer once ours was among it; until then, the
            // next free slot is ours to use again.
            let ours = jobs.is_empty() || jobs.iter().any(|job| job.id == id);
            if !jobs.is_empty() {
                let committer = Arc::clone(&inner.committer);
                tokio::spawn(async move {
                    commit(&*committer, jobs).await;
                    drop(permit);
                });
            }
            if ours {
                return answered(answer.await);
            }
        }
    }
}

fn answered(
    result: Result<Result<StoredLink, WriterError>, oneshot::error::RecvError>,
) -> Result<StoredLink, WriterError> {
    result.map_err(|_| WriterError::Unexpected(anyhow::anyhow!("the group commit stopped")))?
}

impl<C> Inner<C> {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        // The queue is a plain Vec; a panic elsewhere cannot leave it torn.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The oldest queued creates, at most a batch.
    fn take_batch(&self) -> Vec<Job> {
        let mut queue = self.lock_queue();
        let rest = if queue.len() > self.max_batch {
            queue.split_off(self.max_batch)
        } else {
            Vec::new()
        };
        std::mem::replace(&mut *queue, rest)
    }
}

async fn commit(committer: &impl GroupCommit, mut jobs: Vec<Job>) {
    // Nothing is created for a caller that went away while its create was
    // queued (a cancelled RPC). Once committing, the creates go through.
    jobs.retain(|job| !job.reply.is_closed());
    if jobs.is_empty() {
        return;
    }
    metrics::histogram!("writer_group_commit_size").record(jobs.len() as f64);
    let mut by_owner: HashMap<OwnerId, Vec<Job>> = HashMap::new();
    for job in jobs {
        by_owner.entry(job.owner).or_default().push(job);
    }
    for (owner, jobs) in by_owner {
        // A child of the oldest create's request, so that request's trace
        // holds the insert (and a lease it waits for); the other creates
        // it carries are linked.
        let batch_span = match jobs.first() {
            Some(first) => {
                tracing::info_span!(parent: &first.span, "group_commit", size = jobs.len())
            }
            None => tracing::info_span!("group_commit", size = jobs.len()),
        };
        for job in jobs.iter().skip(1) {
            batch_span.follows_from(job.span.id());
        }
        let (items, replies): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|job| (Ok(job.item), job.reply))
            .unzip();
        // How long one insert takes, apart from the queueing before it: a
        // create's latency is the two together.
        let started = std::time::Instant::now();
        let results =
            tracing::Instrument::instrument(committer.create_many(owner, items), batch_span).await;
        metrics::histogram!("writer_group_commit_seconds").record(started.elapsed().as_secs_f64());
        for (result, reply) in results.into_iter().zip(replies) {
            // The caller may have gone away (cancelled); the link exists anyway.
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tinyurl_domain::{TargetPolicy, TargetUrl};

    use super::*;

    /// Records each group it is given and holds it until the gate opens.
    struct GatedCommit {
        gate: Semaphore,
        groups: Mutex<Vec<Vec<String>>>,
    }

    impl Default for GatedCommit {
        fn default() -> Self {
            Self {
                gate: Semaphore::new(0),
                groups: Mutex::default(),
            }
        }
    }

    impl GroupCommit for GatedCommit {
        async fn create_many(
            &self,
            _owner: OwnerId,
            items: Vec<Result<ValidCreate, WriterError>>,
        ) -> Vec<Result<StoredLink, WriterError>> {
            let targets = items
                .iter()
                .flatten()
                .map(|item| item.target.as_str().to_owned())
                .collect();
            self.groups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(targets);
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
            items
                .into_iter()
                .map(|item| {
                    item.map(|item| StoredLink {
                        code: item.target.as_str().to_owned(),
                        target_url: item.target.as_str().to_owned(),
                        redirect_status: item.redirect_status,
                        forward_query: item.forward_query,
                        expires_at: item.expires_at,
                        enabled: true,
                        is_alias: false,
                        created_at: SystemTime::UNIX_EPOCH,
                        updated_at: SystemTime::UNIX_EPOCH,
                        blocked: false,
                        tags: Vec::new(),
                        options: tinyurl_domain::LinkOptions::default(),
                    })
                })
                .collect()
        }
    }

    fn item(n: usize) -> ValidCreate {
        let target = TargetUrl::parse(
            &format!("https://example.com/{n}"),
            &TargetPolicy::default(),
        )
        .expect("a valid target");
        ValidCreate {
            target,
            alias: None,
            expires_at: None,
            redirect_status: tinyurl_domain::RedirectStatus::default(),
            forward_query: false,
            idempotency_key: None,
            tags: Vec::new(),
            options: tinyurl_domain::LinkOptions::default(),
            password: None,
            domain: None,
        }
    }

    /// A create whose group commit holds the only slot until the gate opens.
    async fn holding_the_slot(
        batcher: &CreateBatcher<GatedCommit>,
        committer: &GatedCommit,
    ) -> tokio::task::JoinHandle<Result<StoredLink, WriterError>> {
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.create(OwnerId(1), item(0)).await }
        });
        while committer
            .groups
            .lock()
            .map(|groups| groups.len())
            .unwrap_or(0)
            == 0
        {
            tokio::task::yield_now().await;
        }
        first
    }

    async fn queued(batcher: &CreateBatcher<GatedCommit>, count: usize) {
        while batcher.inner.lock_queue().len() < count {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn creates_queued_behind_a_busy_slot_commit_together_in_bounded_groups() {
        let committer = Arc::new(GatedCommit::default());
        let batcher = CreateBatcher::start(Arc::clone(&committer), 1, 16);
        let first = holding_the_slot(&batcher, &committer).await;
        let mut rest = Vec::new();
        for n in 1..=20 {
            let batcher = batcher.clone();
            rest.push(tokio::spawn(async move {
                batcher.create(OwnerId(1), item(n)).await
            }));
        }
        queued(&batcher, 20).await;
        committer.gate.add_permits(100);

        let answered = first.await.expect("joined").expect("created");
        assert_eq!(answered.target_url, "https://example.com/0");
        for (n, task) in (1..=20).zip(rest) {
            let link = task.await.expect("joined").expect("created");
            assert_eq!(
                link.target_url,
                format!("https://example.com/{n}"),
                "its own answer"
            );
        }
        let sizes: Vec<usize> = committer
            .groups
            .lock()
            .map(|groups| groups.iter().map(Vec::len).collect())
            .unwrap_or_default();
        assert_eq!(sizes, [1, 16, 4], "oldest first, at most a batch each");
    }

    #[tokio::test]
    async fn a_create_whose_caller_left_while_queued_is_never_committed() {
        let committer = Arc::new(GatedCommit::default());
        let batcher = CreateBatcher::start(Arc::clone(&committer), 1, 16);
        let first = holding_the_slot(&batcher, &committer).await;
        let abandoned = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.create(OwnerId(1), item(1)).await }
        });
        queued(&batcher, 1).await;
        abandoned.abort();
        let _ = abandoned.await;
        committer.gate.add_permits(100);
        first.await.expect("joined").expect("created");
        let later = batcher.create(OwnerId(1), item(2)).await.expect("created");
        assert_eq!(later.target_url, "https://example.com/2");

        let groups = committer
            .groups
            .lock()
            .map(|groups| groups.clone())
            .unwrap_or_default();
        assert!(
            !groups.iter().flatten().any(|target| target.ends_with("/1")),
            "the abandoned create reached a commit: {groups:?}"
        );
    }
}
