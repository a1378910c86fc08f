//! Projection `received`: every activity other servers sent, and what the
//! interpreter made of it (for admins: what was refused, what is not
//! supported yet and could be reprocessed).

use async_trait::async_trait;
use chorus_domain::remote::NotApplied;
use chorus_domain::{DomainEvent, RecordedEvent};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::common::{decode, micros, position};
use crate::runner::runs;
use crate::{Projection, ProjectionError};

/// Keeps the `received_activities` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Received;

const EVENTS: &[&str] = &[
    "ActivityReceived",
    "ActivityNotApplied",
    "ActivityReprocessed",
];

/// What the table keeps of an `ActivityReceived` (the raw body is skipped
/// while reading, not copied).
#[derive(Deserialize)]
struct ReceivedFields {
    activity_id: String,
    activity_type: String,
    actor: String,
    object: Option<String>,
}

#[async_trait]
impl Projection for Received {
    fn name(&self) -> &'static str {
        "received"
    }

    fn handles(&self, event_type: &str) -> bool {
        EVENTS.contains(&event_type)
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENTS)
    }

    fn tables(&self) -> &'static [&'static str] {
        &["received_activities"]
    }

    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for (together, run) in runs(events, |e| e.event_type == "ActivityReceived") {
            if !together {
                for event in run {
                    self.apply(conn, event).await?;
                }
                continue;
            }
            let mut rows = Vec::with_capacity(run.len());
            for event in run {
                let fields: ReceivedFields =
                    event
                        .payload
                        .decode()
                        .map_err(|source| ProjectionError::Payload {
                            event_id: event.id,
                            event_type: event.event_type.clone(),
                            source,
                        })?;
                let (major, minor) = position(event);
                rows.push(serde_json::json!({
                    "activity_id": fields.activity_id,
                    "activity_type": fields.activity_type,
                    "actor": fields.actor,
                    "object": fields.object,
                    "remote_host": event.metadata.remote_host,
                    "received_at": micros(event.metadata.received_at.unwrap_or(event.recorded_at)),
                    "event_id": event.id.0,
                    "position_major": major,
                    "position_minor": minor,
                }));
            }
            sqlx::query(
                "INSERT INTO received_activities (activity_id, activity_type, actor, object,
                                                  remote_host, received_at, event_id,
                                                  position_major, position_minor)
                 SELECT activity_id, activity_type, actor, object, remote_host, received_at,
                        event_id, position_major, position_minor
                 FROM jsonb_to_recordset($1) AS r (activity_id text, activity_type text,
                      actor text, object text, remote_host text, received_at timestamptz,
                      event_id uuid, position_major bigint, position_minor bigint)
                 ON CONFLICT (activity_id) DO NOTHING",
            )
            .bind(sqlx::types::Json(&rows))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let (major, minor) = position(event);
        match decode(event)? {
            Some(DomainEvent::ActivityReceived(e)) => {
                sqlx::query(
                    "INSERT INTO received_activities (activity_id, activity_type, actor, object,
                                                      remote_host, received_at, event_id,
                                                      position_major, position_minor)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (activity_id) DO NOTHING",
                )
                .bind(&e.activity_id)
                .bind(&e.activity_type)
                .bind(&e.actor)
                .bind(&e.object)
                .bind(&event.metadata.remote_host)
                .bind(event.metadata.received_at.unwrap_or(event.recorded_at))
                .bind(event.id.0)
                .bind(major)
                .bind(minor)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::ActivityReprocessed(e)) => {
                let outcome = e.outcome.map(NotApplied::as_str);
                sqlx::query(
                    "UPDATE received_activities SET outcome = $2, reason = $3 WHERE activity_id = $1",
                )
                .bind(&e.activity_id)
                .bind(outcome)
                .bind(&e.reason)
                .execute(&mut *conn)
                .await?;
            }
            Some(DomainEvent::ActivityNotApplied(e)) => {
                let outcome = e.outcome.as_str();
                sqlx::query(
                    "UPDATE received_activities SET outcome = $2, reason = $3 WHERE activity_id = $1",
                )
                .bind(&e.activity_id)
                .bind(outcome)
                .bind(&e.reason)
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
