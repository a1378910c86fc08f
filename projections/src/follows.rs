//! Projection `follows`: who follows whom, and pending or refused requests.

use async_trait::async_trait;
use chorus_domain::{DomainEvent, RecordedEvent};
use sqlx::PgConnection;

use std::collections::HashMap;

use crate::common::{decode, position};
use crate::pairs::Facts;
use crate::{Projection, ProjectionError};

/// Keeps the `follows` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Follows;

const EVENTS: &[&str] = &[
    "FollowRequested",
    "FollowAccepted",
    "FollowRejected",
    "Unfollowed",
    "FollowSevered",
    "RemoteActorDeleted",
    "ActorDeleted",
];

#[async_trait]
impl Projection for Follows {
    fn name(&self) -> &'static str {
        "follows"
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
        Some(Box::<FollowMemory>::default())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["follows"]
    }

    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut fold = FollowFold::default();
        for event in events {
            let state = match event.event_type.as_str() {
                "FollowRequested" => Some("requested"),
                "FollowAccepted" => Some("accepted"),
                "FollowRejected" => Some("rejected"),
                "Unfollowed" | "FollowSevered" => None,
                "RemoteActorDeleted" | "ActorDeleted" => {
                    fold.wipe(Facts::field(event, Facts::of(event)?.uri, "uri")?);
                    continue;
                }
                _ => {
                    fold.write(conn).await?;
                    self.apply(conn, event).await?;
                    continue;
                }
            };
            let f = Facts::of(event)?;
            let key = (
                Facts::field(event, f.follower, "follower")?,
                Facts::field(event, f.followee, "followee")?,
            );
            let change = match state {
                None => Change::Ended,
                Some(state) => {
                    let row =
                        Row::new(event, state, Facts::field(event, f.follow_id, "follow_id")?);
                    if state == "requested" {
                        Change::Requested(row)
                    } else {
                        Change::Answered(row)
                    }
                }
            };
            fold.change(key, change);
        }
        fold.write(conn).await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match decode(event)? {
            Some(DomainEvent::FollowRequested(e)) => {
                requested(conn, event, &e.follower, &e.followee, &e.follow_id).await
            }
            Some(DomainEvent::FollowAccepted(e)) => {
                answered(
                    conn,
                    event,
                    "accepted",
                    &e.follower,
                    &e.followee,
                    &e.follow_id,
                )
                .await
            }
            Some(DomainEvent::FollowRejected(e)) => {
                answered(
                    conn,
                    event,
                    "rejected",
                    &e.follower,
                    &e.followee,
                    &e.follow_id,
                )
                .await
            }
            Some(DomainEvent::Unfollowed(e)) => ended(conn, &e.follower, &e.followee).await,
            Some(DomainEvent::FollowSevered(e)) => ended(conn, &e.follower, &e.followee).await,
            // A deleted actor follows no one and is followed by no one.
            Some(DomainEvent::RemoteActorDeleted(e)) => actor_deleted(conn, &e.uri).await,
            Some(DomainEvent::ActorDeleted(e)) => actor_deleted(conn, &e.uri).await,
            _ => Ok(()),
        }
    }
}

async fn actor_deleted(conn: &mut PgConnection, actor: &str) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM follows WHERE follower = $1 OR followee = $1")
        .bind(actor)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn requested(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    follower: &str,
    followee: &str,
    follow_id: &str,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    // A pair can meet again after a refused request (whose row stays, as
    // `rejected`); the newer request replaces it. The position guard makes
    // a request that was already applied, or an older one, change nothing.
    sqlx::query(
        "INSERT INTO follows (follower, followee, state, follow_id, created_at, updated_at,
                              position_major, position_minor)
         VALUES ($1, $2, 'requested', $3, $4, $4, $5, $6)
         ON CONFLICT (follower, followee) DO UPDATE
         SET state = 'requested', follow_id = excluded.follow_id,
             created_at = excluded.created_at, updated_at = excluded.updated_at,
             position_major = excluded.position_major, position_minor = excluded.position_minor
         WHERE (follows.position_major, follows.position_minor)
             < (excluded.position_major, excluded.position_minor)",
    )
    .bind(follower)
    .bind(followee)
    .bind(follow_id)
    .bind(event.recorded_at)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn answered(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    state: &str,
    follower: &str,
    followee: &str,
    follow_id: &str,
) -> Result<(), ProjectionError> {
    let (major, minor) = position(event);
    // The row keeps the time and position of its request, which order a
    // followers list by when people asked. An answer to a request this
    // projection never saw still records the answer, dated by itself.
    sqlx::query(
        "INSERT INTO follows (follower, followee, state, follow_id, created_at, updated_at,
                              position_major, position_minor)
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7)
         ON CONFLICT (follower, followee) DO UPDATE
         SET state = excluded.state, follow_id = excluded.follow_id,
             updated_at = excluded.updated_at",
    )
    .bind(follower)
    .bind(followee)
    .bind(state)
    .bind(follow_id)
    .bind(event.recorded_at)
    .bind(major)
    .bind(minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn ended(
    conn: &mut PgConnection,
    follower: &str,
    followee: &str,
) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM follows WHERE follower = $1 AND followee = $2")
        .bind(follower)
        .bind(followee)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a follow event does to its pair's row.
enum Change {
    /// A request: the row is (re)written whole, unless it already stands
    /// for this request or a later one.
    Requested(Row),
    /// An answer: the row takes its state (and is made if it was missing,
    /// dated by the answer).
    Answered(Row),
    /// The follow ended: the row goes.
    Ended,
}

#[derive(Clone, Debug)]
struct Row {
    state: &'static str,
    follow_id: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    position: (i64, i64),
}

impl Row {
    fn new(event: &RecordedEvent, state: &'static str, follow_id: String) -> Self {
        Self {
            state,
            follow_id,
            created_at: event.recorded_at,
            updated_at: event.recorded_at,
            position: position(event),
        }
    }

    /// Takes a later answer's state, as its update of the row does.
    fn answered(&mut self, answer: Row) {
        self.state = answer.state;
        self.follow_id = answer.follow_id;
        self.updated_at = answer.updated_at;
    }
}

/// Rows as the columns of an `unnest`.
#[derive(Default)]
struct Rows<'a> {
    follower: Vec<&'a str>,
    followee: Vec<&'a str>,
    state: Vec<&'a str>,
    follow_id: Vec<&'a str>,
    created_at: Vec<chrono::DateTime<chrono::Utc>>,
    updated_at: Vec<chrono::DateTime<chrono::Utc>>,
    major: Vec<i64>,
    minor: Vec<i64>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, key: &'a (String, String), row: &'a Row) {
        self.follower.push(&key.0);
        self.followee.push(&key.1);
        self.state.push(row.state);
        self.follow_id.push(&row.follow_id);
        self.created_at.push(row.created_at);
        self.updated_at.push(row.updated_at);
        self.major.push(row.position.0);
        self.minor.push(row.position.1);
    }

    fn is_empty(&self) -> bool {
        self.follower.is_empty()
    }

    fn bind(
        self,
        query: sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.follower)
            .bind(self.followee)
            .bind(self.state)
            .bind(self.follow_id)
            .bind(self.created_at)
            .bind(self.updated_at)
            .bind(self.major)
            .bind(self.minor)
    }
}

/// The net change of a run of events to one pair, as the three statements
/// below write it: a delete, then a request's upsert, then an answer's.
#[derive(Debug, Default)]
struct Net {
    delete: bool,
    request: Option<Row>,
    /// An answer to a request outside the run: the first answer's time and
    /// position (it made the row, if there was none), the last one's state.
    answer: Option<Row>,
}

/// Runs of follow events folded into the net change per pair, written with
/// three statements: exactly what applying them one by one writes.
#[derive(Debug, Default)]
struct FollowFold {
    order: Vec<(String, String)>,
    net: HashMap<(String, String), Net>,
    /// Deleted actors: every follow from or of them goes.
    wiped: Vec<String>,
}

impl FollowFold {
    /// A deleted actor follows no one and is followed by no one: rows
    /// already written and rows still to write.
    fn wipe(&mut self, actor: String) {
        for (key, net) in &mut self.net {
            if key.0 == actor || key.1 == actor {
                net.delete = true;
                net.request = None;
                net.answer = None;
            }
        }
        self.wiped.push(actor);
    }

    fn change(&mut self, key: (String, String), change: Change) {
        if !self.net.contains_key(&key) {
            self.order.push(key.clone());
        }
        let net = self.net.entry(key).or_default();
        match change {
            Change::Requested(row) => {
                net.request = Some(row);
                net.answer = None;
            }
            Change::Answered(row) => match (&mut net.request, &mut net.answer) {
                (Some(request), _) => request.answered(row),
                (None, Some(answer)) => answer.answered(row),
                (None, None) => net.answer = Some(row),
            },
            Change::Ended => {
                net.delete = true;
                net.request = None;
                net.answer = None;
            }
        }
    }

    async fn write(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let mut deleted: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
        let mut requests = Rows::default();
        let mut answers = Rows::default();
        for key in &self.order {
            let Some(net) = self.net.get(key) else {
                continue;
            };
            if net.delete {
                deleted[0].push(&key.0);
                deleted[1].push(&key.1);
            }
            if let Some(row) = &net.request {
                requests.push(key, row);
            }
            if let Some(row) = &net.answer {
                answers.push(key, row);
            }
        }
        if !self.wiped.is_empty() {
            sqlx::query("DELETE FROM follows WHERE follower = ANY($1) OR followee = ANY($1)")
                .bind(&self.wiped)
                .execute(&mut *conn)
                .await?;
        }
        if !deleted[0].is_empty() {
            sqlx::query(
                "DELETE FROM follows f USING unnest($1::text[], $2::text[]) AS k (follower, followee)
                 WHERE f.follower = k.follower AND f.followee = k.followee",
            )
            .bind(&deleted[0])
            .bind(&deleted[1])
            .execute(&mut *conn)
            .await?;
        }
        if !requests.is_empty() {
            requests
                .bind(sqlx::query(
                    "INSERT INTO follows (follower, followee, state, follow_id, created_at, updated_at,
                                          position_major, position_minor)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                          $5::timestamptz[], $6::timestamptz[], $7::int8[], $8::int8[])
                     ON CONFLICT (follower, followee) DO UPDATE
                     SET state = excluded.state, follow_id = excluded.follow_id,
                         created_at = excluded.created_at, updated_at = excluded.updated_at,
                         position_major = excluded.position_major, position_minor = excluded.position_minor
                     WHERE (follows.position_major, follows.position_minor)
                         < (excluded.position_major, excluded.position_minor)",
                ))
                .execute(&mut *conn)
                .await?;
        }
        if !answers.is_empty() {
            answers
                .bind(sqlx::query(
                    "INSERT INTO follows (follower, followee, state, follow_id, created_at, updated_at,
                                          position_major, position_minor)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                          $5::timestamptz[], $6::timestamptz[], $7::int8[], $8::int8[])
                     ON CONFLICT (follower, followee) DO UPDATE
                     SET state = excluded.state, follow_id = excluded.follow_id,
                         updated_at = excluded.updated_at",
                ))
                .execute(&mut *conn)
                .await?;
        }
        self.order.clear();
        self.net.clear();
        self.wiped.clear();
        Ok(())
    }
}

/// A whole rebuild of `follows` folded in memory, with the meaning of the
/// statements above, applied one event at a time.
#[derive(Debug, Default)]
struct FollowMemory {
    rows: HashMap<(String, String), Row>,
    /// Keys by actor (either side), for deleted actors: a list may hold
    /// keys whose row has gone since.
    by_actor: HashMap<String, Vec<(String, String)>>,
}

#[async_trait]
impl crate::bulk::MemoryFold for FollowMemory {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let f = Facts::of(event)?;
        let kind = event.event_type.as_str();
        if matches!(kind, "RemoteActorDeleted" | "ActorDeleted") {
            let actor = Facts::field(event, f.uri, "uri")?;
            for key in self.by_actor.remove(&actor).unwrap_or_default() {
                self.rows.remove(&key);
            }
            return Ok(());
        }
        let state = match kind {
            "FollowRequested" => Some("requested"),
            "FollowAccepted" => Some("accepted"),
            "FollowRejected" => Some("rejected"),
            "Unfollowed" | "FollowSevered" => None,
            other => {
                return Err(ProjectionError::Unfoldable {
                    event_type: other.to_owned(),
                });
            }
        };
        let key = (
            Facts::field(event, f.follower, "follower")?,
            Facts::field(event, f.followee, "followee")?,
        );
        let Some(state) = state else {
            self.rows.remove(&key);
            return Ok(());
        };
        let row = Row::new(event, state, Facts::field(event, f.follow_id, "follow_id")?);
        match self.rows.get_mut(&key) {
            // A request rewrites the row whole (it is later than the row's).
            Some(existing) if state == "requested" => *existing = row,
            Some(existing) => existing.answered(row),
            None => {
                for actor in [&key.0, &key.1] {
                    self.by_actor
                        .entry(actor.clone())
                        .or_default()
                        .push(key.clone());
                }
                self.rows.insert(key, row);
            }
        }
        Ok(())
    }

    async fn load(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let mut rows: Vec<(&(String, String), &Row)> = self.rows.iter().collect();
        rows.sort_by_key(|(_, r)| r.position);
        let mut rows = rows.into_iter();
        crate::bulk::CopyRows::new(
            "follows",
            &[
                "follower",
                "followee",
                "state",
                "follow_id",
                "created_at",
                "updated_at",
                "position_major",
                "position_minor",
            ],
        )
        .send(conn, |copy| {
            for (key, row) in rows.by_ref() {
                copy.text(&key.0);
                copy.text(&key.1);
                copy.text(row.state);
                copy.text(&row.follow_id);
                copy.time(row.created_at);
                copy.time(row.updated_at);
                copy.int(row.position.0);
                copy.int(row.position.1);
                copy.end_row();
                if copy.full() {
                    return true;
                }
            }
            false
        })
        .await?;
        self.rows.clear();
        self.by_actor.clear();
        Ok(())
    }
}
