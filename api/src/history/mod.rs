//! Admins' control over history: rebuilding read models, reprocessing
//! stored inbound activities, replaying a subscriber, redelivering, and
//! auditing what made a row of a read model. The GraphQL admin fields and
//! the `chorus` commands both go through here.
//!
//! Every action is itself recorded in the log (`chorus_domain::admin`): who
//! asked, for what, over which range, and how it ended.

pub mod audit;
pub mod rebuilds;
pub mod redeliver;
pub mod replay;
pub mod reprocess;

use chorus_domain::admin::admin_stream;
use chorus_domain::{DomainEvent, EventStore, EventStoreError, ExpectedVersion, Metadata};
use chorus_postgres::PgEventStore;
use uuid::Uuid;

/// Who asked, as recorded: an admin's actor id, or `cli`.
pub const CLI: &str = "cli";

/// Records an admin action's events in its own stream; returns their
/// position.
pub async fn record(
    store: &PgEventStore,
    action: Uuid,
    requested_by: &str,
    events: &[DomainEvent],
) -> Result<Option<chorus_domain::Position>, EventStoreError> {
    let metadata = Metadata {
        actor: (requested_by != CLI).then(|| requested_by.to_owned()),
        correlation_id: Some(action),
        ..Metadata::default()
    };
    let new_events = events
        .iter()
        .map(|e| {
            e.to_new_event()
                .map(|n| n.with_metadata(metadata.clone()))
                .map_err(|e| EventStoreError::InvalidAppend(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = store
        .append(&admin_stream(action), ExpectedVersion::Any, new_events)
        .await?;
    Ok(outcome.last_position())
}
