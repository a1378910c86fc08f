//! Projection `activity_stats`: how many events the log holds, per UTC day,
//! event type, activity type and remote host, and per type in all.
//!
//! It counts every event, whatever its type (other subsystems' too), so the
//! analytics views (`analytics.daily_activity`, `analytics.event_totals`)
//! and `/metrics` read a few rows instead of counting the log.
//!
//! Counting is made idempotent by position: each row remembers the last
//! event it counted, and an event at or before it is not counted again (a
//! replay that moves the checkpoint back applies events a second time).
//! Events reach a row in log order, so that is exact.

use async_trait::async_trait;
use chorus_domain::RecordedEvent;
use serde::Deserialize;
use sqlx::PgConnection;

use crate::common::position;
use crate::{Projection, ProjectionError};

/// Keeps `activity_stats` and `activity_stats_totals`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActivityStats;

/// The two payload fields read: the `activity_type` of received activities
/// and what became of them, and the `activity` local events carry.
#[derive(Deserialize, Default)]
struct Fields {
    activity_type: Option<String>,
    activity: Option<Activity>,
}

#[derive(Deserialize)]
struct Activity {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
}

impl Fields {
    /// The ActivityStreams type, '' when the event carries none. An
    /// activity with several types counts under the first.
    fn activity_type(self) -> String {
        if let Some(kind) = self.activity_type {
            return kind;
        }
        match self.activity.and_then(|a| a.kind) {
            Some(serde_json::Value::String(kind)) => kind,
            Some(serde_json::Value::Array(kinds)) => kinds
                .into_iter()
                .find_map(|k| k.as_str().map(str::to_owned))
                .unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// The statement that counts a batch: one row per event, those a row has
/// already counted left out, then added up per row and per type.
const COUNT: &str = "
WITH batch AS (
    SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[])
        AS b (day, event_type, activity_type, remote_host, major, minor)
), daily_fresh AS (
    SELECT b.* FROM batch b
    LEFT JOIN activity_stats s USING (day, event_type, activity_type, remote_host)
    WHERE s.day IS NULL OR (b.major, b.minor) > (s.position_major, s.position_minor)
), totals_fresh AS (
    SELECT b.* FROM batch b
    LEFT JOIN activity_stats_totals t USING (event_type)
    WHERE t.event_type IS NULL OR (b.major, b.minor) > (t.position_major, t.position_minor)
), daily AS (
    INSERT INTO activity_stats AS s
        (day, event_type, activity_type, remote_host, events, position_major, position_minor)
    SELECT DISTINCT ON (day, event_type, activity_type, remote_host)
           day, event_type, activity_type, remote_host,
           count(*) OVER (PARTITION BY day, event_type, activity_type, remote_host), major, minor
    FROM daily_fresh
    ORDER BY day, event_type, activity_type, remote_host, major DESC, minor DESC
    ON CONFLICT (day, event_type, activity_type, remote_host) DO UPDATE
    SET events = s.events + excluded.events,
        position_major = excluded.position_major,
        position_minor = excluded.position_minor
)
INSERT INTO activity_stats_totals AS t (event_type, events, position_major, position_minor)
SELECT DISTINCT ON (event_type)
       event_type, count(*) OVER (PARTITION BY event_type), major, minor
FROM totals_fresh
ORDER BY event_type, major DESC, minor DESC
ON CONFLICT (event_type) DO UPDATE
SET events = t.events + excluded.events,
    position_major = excluded.position_major,
    position_minor = excluded.position_minor";

#[async_trait]
impl Projection for ActivityStats {
    fn name(&self) -> &'static str {
        "activity_stats"
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    fn unread_fields(&self) -> &'static [&'static str] {
        // Everything big but the activity, whose type is read.
        &["raw", "content", "source", "summary", "public_key_pem"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["activity_stats", "activity_stats_totals"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, &[event]).await
    }

    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let n = events.len();
        let (mut days, mut types, mut activities, mut hosts, mut majors, mut minors) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for event in events {
            // A payload of another shape (another subsystem's event, a
            // field of another type) still counts, without an activity
            // type: a counter that stopped at it would count nothing more.
            let fields: Fields = event.payload.decode().unwrap_or_default();
            let (major, minor) = position(event);
            days.push(event.recorded_at.date_naive());
            types.push(event.event_type.as_str());
            activities.push(fields.activity_type());
            hosts.push(event.metadata.remote_host.clone().unwrap_or_default());
            majors.push(major);
            minors.push(minor);
        }
        sqlx::query(COUNT)
            .bind(&days)
            .bind(&types)
            .bind(&activities)
            .bind(&hosts)
            .bind(&majors)
            .bind(&minors)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
