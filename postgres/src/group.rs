//! Group commit for appends that start new streams.
//!
//! Many callers each appending one event to a stream of its own (the inbox:
//! one stream per received activity) would otherwise each pay for a
//! statement, a transaction and a flush of the write-ahead log. A
//! [`GroupAppender`] gathers what arrives while its writers are busy and
//! appends it with one statement and one commit per group; every caller
//! gets its own answer once its group is durable, exactly as if it had
//! appended alone.

use std::collections::HashMap;
use std::sync::Arc;

use chorus_domain::{EventId, EventStoreError, NewEvent, StreamId};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{NewStream, PgEventStore, validate};

/// How a [`GroupAppender`] groups appends.
#[derive(Debug, Clone, Copy)]
pub struct GroupOptions {
    /// The most events one statement carries.
    pub max_group: usize,
    /// How many groups may be in flight at once: while one commits, the
    /// next fills.
    pub writers: usize,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            max_group: 256,
            writers: 4,
        }
    }
}

type Reply = oneshot::Sender<Result<NewStream, EventStoreError>>;
type Queue = Arc<Mutex<mpsc::Receiver<(StreamId, NewEvent, Reply)>>>;

/// Appends the first event of new streams for many concurrent callers,
/// a group at a time (see the module documentation).
#[derive(Debug, Clone)]
pub struct GroupAppender {
    requests: mpsc::Sender<(StreamId, NewEvent, Reply)>,
}

impl GroupAppender {
    /// Starts the writers; they stop once every clone of the appender is
    /// dropped and the queue is empty.
    pub fn start(store: PgEventStore, options: GroupOptions) -> Self {
        let max_group = options.max_group.max(1);
        let (requests, queue) = mpsc::channel(max_group * options.writers.max(1) * 4);
        let queue: Queue = Arc::new(Mutex::new(queue));
        for _ in 0..options.writers.max(1) {
            tokio::spawn(write_groups(store.clone(), queue.clone(), max_group));
        }
        Self { requests }
    }

    /// Appends `event` as the first event of `stream`, with the semantics of
    /// [`PgEventStore::append_new_streams`]. Returns once the event is
    /// durable (or known to be in the log already).
    pub async fn append_new_stream(
        &self,
        stream: StreamId,
        event: NewEvent,
    ) -> Result<NewStream, EventStoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((stream, event, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> EventStoreError {
    EventStoreError::Backend("the group appender has stopped".into())
}

/// One writer: takes whatever is queued (waiting for the first request),
/// appends it as one group, answers every caller, and again.
async fn write_groups(store: PgEventStore, queue: Queue, max_group: usize) {
    let mut group = Group::default();
    loop {
        {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            group.push(first);
            while group.len() < max_group {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        group.write(&store).await;
    }
}

/// The requests of one group: the events to append, and the callers to
/// answer.
#[derive(Debug, Default)]
struct Group {
    items: Vec<(StreamId, NewEvent)>,
    replies: Vec<Reply>,
    /// Callers who sent an event already in the group (the same activity
    /// delivered twice at once), with the index of its first copy: one
    /// statement cannot carry an id twice.
    copies: Vec<(usize, Reply)>,
    first: HashMap<EventId, usize>,
}

impl Group {
    fn len(&self) -> usize {
        self.items.len() + self.copies.len()
    }

    fn push(&mut self, (stream, event, reply): (StreamId, NewEvent, Reply)) {
        // An invalid event is answered at once and never reaches the group.
        if let Err(error) = validate(std::slice::from_ref(&event)) {
            let _ = reply.send(Err(error));
            return;
        }
        if let Some(&first) = self.first.get(&event.id) {
            self.copies.push((first, reply));
            return;
        }
        self.first.insert(event.id, self.items.len());
        self.items.push((stream, event));
        self.replies.push(reply);
    }

    /// Appends the group and answers every caller; empties the group.
    async fn write(&mut self, store: &PgEventStore) {
        let outcomes: Vec<Result<NewStream, EventStoreError>> =
            match store.append_new_streams(&self.items).await {
                Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                // A failure of the group must not fail what could be
                // written alone: each is tried alone and gets its own answer.
                Err(_) if self.items.len() > 1 => {
                    let mut outcomes = Vec::with_capacity(self.items.len());
                    for item in &self.items {
                        outcomes.push(
                            store
                                .append_new_streams(std::slice::from_ref(item))
                                .await
                                .map(|mut alone| alone.pop().unwrap_or(NewStream::Taken)),
                        );
                    }
                    outcomes
                }
                Err(error) => vec![Err(error)],
            };
        let settled: Vec<Option<NewStream>> =
            outcomes.iter().map(|o| o.as_ref().ok().copied()).collect();
        for (reply, outcome) in self.replies.drain(..).zip(outcomes) {
            let _ = reply.send(outcome);
        }
        for (first, reply) in self.copies.drain(..) {
            // A copy is in the log exactly when its first is.
            let _ = reply.send(match settled.get(first).copied().flatten() {
                Some(NewStream::Appended | NewStream::Repeated) => Ok(NewStream::Repeated),
                Some(NewStream::Taken) => Ok(NewStream::Taken),
                None => Err(EventStoreError::Backend(
                    "the same event, sent at the same time, could not be appended".into(),
                )),
            });
        }
        self.items.clear();
        self.first.clear();
    }
}
