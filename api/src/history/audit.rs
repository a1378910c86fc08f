//! What made a row of a read model: the events of its stream, each with the
//! chain of events that caused it, back to the request it came from (an
//! inbound activity, with its signer and remote host, or a local command,
//! with its actor).

use chorus_domain::interactions::{favorite_stream, reblog_stream};
use chorus_domain::posts::post_stream;
use chorus_domain::relationships::relationship_stream;
use chorus_domain::remote::remote_post_stream;
use chorus_domain::{EventId, EventStore, EventStoreError, RecordedEvent, StreamId};
use chorus_postgres::PgEventStore;
use uuid::Uuid;

/// A row of a read model to account for.
#[derive(Clone, Debug)]
pub enum Subject {
    /// A post, by its ActivityPub id or (local posts) its id.
    Post(String),
    Follow {
        follower: String,
        followee: String,
    },
    Favorite {
        actor: String,
        post: String,
    },
    Reblog {
        actor: String,
        post: String,
    },
    Block {
        blocker: String,
        blocked: String,
    },
}

/// One event that shaped the row, with what caused it, nearest first.
#[derive(Clone, Debug)]
pub struct Entry {
    pub event: RecordedEvent,
    pub causes: Vec<RecordedEvent>,
}

/// The longest causation chain followed (a guard against a cycle, which
/// derived ids make impossible but a hand-written event could fake).
const MAX_CHAIN: usize = 16;

/// The event types about `subject` in its stream (a relationship stream
/// holds both directions, follows and blocks alike).
fn concerns(subject: &Subject, event: &RecordedEvent) -> bool {
    let payload: serde_json::Value = event.payload.decode().unwrap_or_default();
    let is = |field: &str, value: &str| payload.get(field).and_then(|v| v.as_str()) == Some(value);
    match subject {
        Subject::Follow { follower, followee } => {
            matches!(
                event.event_type.as_str(),
                "FollowRequested"
                    | "FollowAccepted"
                    | "FollowRejected"
                    | "Unfollowed"
                    | "FollowSevered"
            ) && is("follower", follower)
                && is("followee", followee)
        }
        Subject::Block { blocker, blocked } => {
            matches!(event.event_type.as_str(), "Blocked" | "Unblocked")
                && is("blocker", blocker)
                && is("blocked", blocked)
        }
        _ => true,
    }
}

/// The stream that holds `subject`'s events.
fn stream(subject: &Subject, base_url: &str) -> StreamId {
    match subject {
        Subject::Post(post) => {
            let local = post
                .strip_prefix(&format!("{}/posts/", base_url.trim_end_matches('/')))
                .unwrap_or(post);
            match Uuid::parse_str(local) {
                Ok(id) => post_stream(id),
                Err(_) => remote_post_stream(post),
            }
        }
        Subject::Follow { follower, followee } => relationship_stream(follower, followee),
        Subject::Block { blocker, blocked } => relationship_stream(blocker, blocked),
        Subject::Favorite { actor, post } => favorite_stream(actor, post),
        Subject::Reblog { actor, post } => reblog_stream(actor, post),
    }
}

/// Every event that shaped `subject`, in log order, each with its causes.
pub async fn audit(
    store: &PgEventStore,
    base_url: &str,
    subject: &Subject,
) -> Result<Vec<Entry>, EventStoreError> {
    let stream = stream(subject, base_url);
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_stream(&stream, from, 500).await?;
        let Some(last) = page.last().map(|e| e.stream_version) else {
            break;
        };
        from = last + 1;
        events.extend(page.into_iter().filter(|e| concerns(subject, e)));
    }
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        let mut causes = Vec::new();
        let mut next = event.metadata.causation_id;
        while let Some(cause) = next.filter(|_| causes.len() < MAX_CHAIN) {
            let Some(found) = PgEventStore::read_ids(store.pool(), &[cause.0])
                .await?
                .into_iter()
                .next()
            else {
                break;
            };
            next = found
                .metadata
                .causation_id
                .filter(|c: &EventId| *c != found.id);
            causes.push(found);
        }
        entries.push(Entry { event, causes });
    }
    Ok(entries)
}
