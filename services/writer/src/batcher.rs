//! Group commit for single creates. Concurrent `CreateLink` calls are queued
//! and a few workers each take whatever is waiting (up to a batch) and create
//! it with one INSERT and one Redis pipeline, so under load many creates share
//! a round trip and a commit. Nothing waits for a batch to fill: a worker that
//! finds one request takes just that one, so an idle writer answers as fast as
//! without batching.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::auth::OwnerId;
use crate::error::WriterError;
use crate::service::{State, ValidCreate};
use crate::store::StoredLink;

type Reply = oneshot::Sender<Result<StoredLink, WriterError>>;

struct Job {
    owner: OwnerId,
    item: ValidCreate,
    reply: Reply,
    /// The request's span, linked from the batch span so traces connect.
    span: tracing::Span,
}

/// Handle to the create workers; cheap to clone.
#[derive(Clone)]
pub struct CreateBatcher {
    sender: mpsc::Sender<Job>,
}

impl CreateBatcher {
    /// Starts `workers` workers taking up to `max_batch` creates at a time.
    pub fn start(state: Arc<State>, workers: usize, max_batch: usize) -> Self {
        let (sender, receiver) = mpsc::channel(workers.max(1) * max_batch.max(1) * 4);
        // A tokio mutex: a worker holds it while it waits for the next job,
        // so the queue is drained by one worker at a time.
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(
                Arc::clone(&state),
                Arc::clone(&receiver),
                max_batch.max(1),
            ));
        }
        Self { sender }
    }

    pub async fn create(
        &self,
        owner: OwnerId,
        item: ValidCreate,
    ) -> Result<StoredLink, WriterError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job {
                owner,
                item,
                reply,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| WriterError::Unavailable("the writer is shutting down".to_owned()))?;
        answer
            .await
            .map_err(|_| WriterError::Unexpected(anyhow::anyhow!("the create worker stopped")))?
    }
}

async fn work(state: Arc<State>, receiver: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            jobs.push(first);
            while jobs.len() < max_batch {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        metrics::histogram!("writer_group_commit_size").record(jobs.len() as f64);
        let mut by_owner: HashMap<OwnerId, Vec<Job>> = HashMap::new();
        for job in jobs {
            by_owner.entry(job.owner).or_default().push(job);
        }
        for (owner, jobs) in by_owner {
            let batch_span = tracing::info_span!("group_commit", size = jobs.len());
            for job in &jobs {
                batch_span.follows_from(job.span.id());
            }
            let (items, replies): (Vec<_>, Vec<_>) = jobs
                .into_iter()
                .map(|job| (Ok(job.item), job.reply))
                .unzip();
            let results =
                tracing::Instrument::instrument(state.create_many(owner, items), batch_span).await;
            for (result, reply) in results.into_iter().zip(replies) {
                // The caller may have gone away (cancelled); the link exists anyway.
                let _ = reply.send(result);
            }
        }
    }
}
