//! Redelivery on an admin's request, recorded in the log.

use chorus_domain::DomainEvent;
use chorus_domain::admin::RedeliveryRequested;
use chorus_postgres::PgEventStore;
use chorus_workers::delivery::admin::{self, AdminError, Redelivered};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What to deliver again.
#[derive(Clone, Debug)]
pub enum Redelivery {
    /// One activity, by its ActivityPub id.
    Activity(String),
    /// Every activity of an actor recorded in `[from, to)`.
    Actor {
        actor: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    },
}

/// Why a redelivery was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RedeliveryError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("the redelivery could not be recorded")]
    Store(#[from] chorus_domain::EventStoreError),
}

/// Queues `what` again, to every inbox it was planned for or to `inboxes`,
/// and records the request.
pub async fn redeliver(
    store: &PgEventStore,
    what: Redelivery,
    inboxes: &[String],
    requested_by: &str,
) -> Result<Redelivered, RedeliveryError> {
    let pool = store.pool();
    let (done, request) = match what {
        Redelivery::Activity(activity_id) => {
            let mut deliveries = 0;
            if inboxes.is_empty() {
                deliveries = admin::redeliver(pool, &activity_id, None).await?;
            }
            for inbox in inboxes {
                deliveries += admin::redeliver(pool, &activity_id, Some(inbox)).await?;
            }
            (
                Redelivered {
                    activities: 1,
                    deliveries,
                },
                (Some(activity_id), None, None, None),
            )
        }
        Redelivery::Actor { actor, from, to } => (
            admin::redeliver_actor(pool, &actor, from, to, inboxes).await?,
            (None, Some(actor), from, to),
        ),
    };
    let (activity_id, actor, from, to) = request;
    let event = DomainEvent::RedeliveryRequested(RedeliveryRequested {
        requested_by: requested_by.to_owned(),
        activity_id,
        actor,
        from,
        to,
        inboxes: inboxes.to_vec(),
        activities: done.activities,
        deliveries: done.deliveries,
        requested_at: Utc::now(),
    });
    super::record(store, Uuid::now_v7(), requested_by, &[event]).await?;
    Ok(done)
}
