//! Projection `blocks`: who blocks whom.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use crate::common::{decode, position};
use crate::pairs::{Facts, PairEvents, PairMemory, PairRow, PairTable};
use crate::{Projection, ProjectionError};

/// Keeps the `blocks` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Blocks;

const EVENTS: &[&str] = &["Blocked", "Unblocked", "ActorDeleted"];

#[async_trait]
impl Projection for Blocks {
    fn name(&self) -> &'static str {
        "blocks"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn unread_fields(&self) -> &'static [&'static str] {
        &["activity"]
    }

    fn memory_fold(&self) -> Option<Box<dyn crate::bulk::MemoryFold>> {
        Some(Box::new(PairMemory::new(&PAIRS)))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["blocks"]
    }

    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        PAIRS.apply_all(self, conn, events).await
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match decode(event)? {
            Some(DomainEvent::Blocked(e)) => {
                let (major, minor) = position(event);
                // The pair's row is removed on unblock, so an existing one
                // is this block applied before.
                sqlx::query(
                    "INSERT INTO blocks (blocker, blocked, block_id, created_at,
                                         position_major, position_minor)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (blocker, blocked) DO NOTHING",
                )
                .bind(&e.blocker)
                .bind(&e.blocked)
                .bind(&e.block_id)
                .bind(event.recorded_at)
                .bind(major)
                .bind(minor)
                .execute(&mut *conn)
                .await?;
            }
            // A deleted account blocks no one and is blocked by no one.
            Some(DomainEvent::ActorDeleted(e)) => {
                sqlx::query("DELETE FROM blocks WHERE blocker = $1 OR blocked = $1")
                    .bind(&e.uri)
                    .execute(&mut *conn)
                    .await?;
            }
            Some(DomainEvent::Unblocked(e)) => {
                sqlx::query("DELETE FROM blocks WHERE blocker = $1 AND blocked = $2")
                    .bind(&e.blocker)
                    .bind(&e.blocked)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Runs of blocks and unblocks, written together.
static PAIRS: PairEvents = PairEvents {
    table: PairTable {
        table: "blocks",
        keys: ["blocker", "blocked"],
        columns: &["block_id"],
    },
    begins: "Blocked",
    row: |event, f| {
        Ok(PairRow::new(
            event,
            (
                Facts::field(event, f.blocker, "blocker")?,
                Facts::field(event, f.blocked, "blocked")?,
            ),
            vec![Facts::field(event, f.block_id, "block_id")?],
            event.recorded_at,
        ))
    },
    ends: "Unblocked",
    key: |event, f| {
        Ok((
            Facts::field(event, f.blocker, "blocker")?,
            Facts::field(event, f.blocked, "blocked")?,
        ))
    },
    wipes: &[],
};
