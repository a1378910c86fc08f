//! Writing runs of events about pairs (who favorites, reblogs or blocks
//! what) with a few statements per run instead of one per event.
//!
//! A run is folded in memory into the net change per pair, in log order,
//! then written as one `DELETE` of every pair a deleted post or actor took
//! along (a wipe), one `DELETE` of the pairs that ended and one `INSERT` of
//! the pairs that began, which is exactly what applying the events one by
//! one writes: a wipe or an end removes the pending insert of every pair it
//! touches, so whatever is still to insert came after the last removal of
//! its pair, and every removal can go first.

use std::collections::HashMap;

use chorus_domain::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::ProjectionError;
use crate::common::{decode, position};

/// The facts the pair tables need from any of the events they read; the
/// rest of a payload (the embedded activity) is skipped, not parsed.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Facts {
    pub actor: Option<String>,
    pub post: Option<String>,
    pub post_author: Option<String>,
    pub like_id: Option<String>,
    pub announce_id: Option<String>,
    pub published: Option<DateTime<Utc>>,
    pub uri: Option<String>,
    pub follower: Option<String>,
    pub followee: Option<String>,
    pub follow_id: Option<String>,
    pub blocker: Option<String>,
    pub blocked: Option<String>,
    pub block_id: Option<String>,
}

/// The highest schema version of the events read here that [`Facts`]
/// understands (every one of them is at version 1).
const KNOWN_VERSION: u32 = 1;

impl Facts {
    /// Reads the facts of `event`. A newer schema version is refused the way
    /// the full decoding refuses it, so the projection waits for a release
    /// that understands it.
    pub fn of(event: &RecordedEvent) -> Result<Self, ProjectionError> {
        if event.schema_version > KNOWN_VERSION {
            decode(event)?;
        }
        event
            .payload
            .decode()
            .map_err(|source| ProjectionError::payload(event, source))
    }

    /// A field an event of this type always has.
    pub fn field(
        event: &RecordedEvent,
        value: Option<String>,
        name: &str,
    ) -> Result<String, ProjectionError> {
        value.ok_or_else(|| {
            ProjectionError::payload(
                event,
                serde::de::Error::custom(format!("missing field `{name}`")),
            )
        })
    }
}

/// A table with one row per pair, removed when the pair ends: its name,
/// the two key columns and the other text columns, besides `created_at`,
/// `position_major` and `position_minor`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PairTable {
    pub table: &'static str,
    pub keys: [&'static str; 2],
    pub columns: &'static [&'static str],
}

/// The two key columns' values of a pair.
pub(crate) type PairKey = (String, String);

/// A row to insert: the key, the other text columns (in the table's order),
/// when, and the position of its event.
#[derive(Clone, Debug)]
pub(crate) struct PairRow {
    pub key: (String, String),
    pub values: Vec<String>,
    pub at: DateTime<Utc>,
    pub position: (i64, i64),
}

impl PairRow {
    pub fn new(
        event: &RecordedEvent,
        key: (String, String),
        values: Vec<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            key,
            values,
            at,
            position: position(event),
        }
    }
}

/// The net change of a run to one pair.
#[derive(Debug, Default)]
struct Net {
    /// The pair's row is deleted first.
    delete: bool,
    /// Then this row is inserted, unless the pair has one already.
    insert: Option<PairRow>,
}

/// The net changes of a run so far, in the order pairs were first touched.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    order: Vec<PairKey>,
    net: HashMap<PairKey, Net>,
    /// Rows whose value in any of these columns is one of these go.
    wipes: Vec<(&'static [&'static str], Vec<String>)>,
}

impl PairTable {
    /// The value of `column` in a row about to be inserted.
    fn value<'a>(&self, column: &str, row: &'a PairRow) -> Option<&'a str> {
        if column == self.keys[0] {
            return Some(&row.key.0);
        }
        if column == self.keys[1] {
            return Some(&row.key.1);
        }
        let i = self.columns.iter().position(|c| *c == column)?;
        row.values.get(i).map(String::as_str)
    }
}

impl Fold {
    fn entry(&mut self, key: PairKey) -> &mut Net {
        if !self.net.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.net.entry(key).or_default()
    }

    /// The pair began: its row is inserted, unless it already has one (an
    /// event applied before, or a pair that began twice without ending).
    pub fn insert(&mut self, row: PairRow) {
        let net = self.entry(row.key.clone());
        if net.insert.is_none() {
            net.insert = Some(row);
        }
    }

    /// The pair ended.
    pub fn remove(&mut self, key: PairKey) {
        let net = self.entry(key);
        net.delete = true;
        net.insert = None;
    }

    /// Every row whose value in one of `columns` is `value` goes (a deleted
    /// post or actor), those already written and those still to insert.
    pub fn wipe(&mut self, table: PairTable, columns: &'static [&'static str], value: String) {
        for net in self.net.values_mut() {
            let hit = net.insert.as_ref().is_some_and(|row| {
                columns
                    .iter()
                    .any(|c| table.value(c, row) == Some(value.as_str()))
            });
            if hit {
                net.delete = true;
                net.insert = None;
            }
        }
        match self.wipes.iter_mut().find(|(c, _)| *c == columns) {
            Some((_, values)) => values.push(value),
            None => self.wipes.push((columns, vec![value])),
        }
    }

    /// Writes the net changes with a few statements, and starts afresh.
    pub async fn write(
        &mut self,
        conn: &mut PgConnection,
        table: PairTable,
    ) -> Result<(), sqlx::Error> {
        for (columns, values) in &self.wipes {
            let matches: Vec<String> = columns.iter().map(|c| format!("{c} = ANY($1)")).collect();
            sqlx::query(&format!(
                "DELETE FROM {} WHERE {}",
                table.table,
                matches.join(" OR ")
            ))
            .bind(values)
            .execute(&mut *conn)
            .await?;
        }
        let mut deleted: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
        let mut inserted: Vec<&PairRow> = Vec::new();
        for key in &self.order {
            let Some(net) = self.net.get(key) else {
                continue;
            };
            if net.delete {
                deleted[0].push(&key.0);
                deleted[1].push(&key.1);
            }
            if let Some(row) = &net.insert {
                inserted.push(row);
            }
        }
        let [a, b] = table.keys;
        if !deleted[0].is_empty() {
            sqlx::query(&format!(
                "DELETE FROM {table} t USING unnest($1::text[], $2::text[]) AS k (a, b)
                 WHERE t.{a} = k.a AND t.{b} = k.b",
                table = table.table
            ))
            .bind(&deleted[0])
            .bind(&deleted[1])
            .execute(&mut *conn)
            .await?;
        }
        if !inserted.is_empty() {
            let n = table.columns.len();
            let columns = table.columns.join(", ");
            let arrays: String = (0..n).map(|i| format!("${}::text[], ", i + 3)).collect();
            let sql = format!(
                "INSERT INTO {t} ({a}, {b}, {columns}, created_at, position_major, position_minor)
                 SELECT * FROM unnest($1::text[], $2::text[], {arrays}${}::timestamptz[], ${}::int8[], ${}::int8[])
                 ON CONFLICT ({a}, {b}) DO NOTHING",
                n + 3,
                n + 4,
                n + 5,
                t = table.table,
            );
            let mut query = sqlx::query(&sql)
                .bind(
                    inserted
                        .iter()
                        .map(|r| r.key.0.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    inserted
                        .iter()
                        .map(|r| r.key.1.as_str())
                        .collect::<Vec<_>>(),
                );
            for i in 0..n {
                query = query.bind(
                    inserted
                        .iter()
                        .map(|r| r.values.get(i).map_or("", String::as_str))
                        .collect::<Vec<_>>(),
                );
            }
            query
                .bind(inserted.iter().map(|r| r.at).collect::<Vec<_>>())
                .bind(inserted.iter().map(|r| r.position.0).collect::<Vec<_>>())
                .bind(inserted.iter().map(|r| r.position.1).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        self.order.clear();
        self.net.clear();
        self.wipes.clear();
        Ok(())
    }
}

/// How a projection over a [`PairTable`] reads its events: the type that
/// begins a pair and the row it inserts, the type that ends one and its key,
/// and the types that wipe every pair whose value in some columns is the
/// event's `uri` (a deleted post or actor). Any other event it handles is
/// applied on its own, in order.
pub(crate) struct PairEvents {
    pub table: PairTable,
    pub begins: &'static str,
    pub row: fn(&RecordedEvent, Facts) -> Result<PairRow, ProjectionError>,
    pub ends: &'static str,
    pub key: fn(&RecordedEvent, Facts) -> Result<PairKey, ProjectionError>,
    pub wipes: &'static [(&'static str, &'static [&'static str])],
}

impl PairEvents {
    /// Applies `events` in order, folded and written together.
    pub async fn apply_all<P: crate::Projection + ?Sized>(
        &self,
        projection: &P,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut fold = Fold::default();
        for event in events {
            let kind = event.event_type.as_str();
            if kind == self.begins {
                fold.insert((self.row)(event, Facts::of(event)?)?);
            } else if kind == self.ends {
                fold.remove((self.key)(event, Facts::of(event)?)?);
            } else if let Some((_, columns)) = self.wipes.iter().find(|(t, _)| *t == kind) {
                let uri = Facts::field(event, Facts::of(event)?.uri, "uri")?;
                fold.wipe(self.table, columns, uri);
            } else {
                fold.write(conn, self.table).await?;
                projection.apply(conn, event).await?;
            }
        }
        fold.write(conn, self.table).await?;
        Ok(())
    }
}

/// A whole rebuild of a [`PairTable`] folded in memory, with the same
/// meaning as the statements above: a pair that began keeps its first row
/// until it ends, a wipe removes every row with the value in one of its
/// columns.
pub(crate) struct PairMemory {
    events: &'static PairEvents,
    rows: HashMap<PairKey, PairRow>,
    /// Keys by (column, value), for the wiped columns: a list may hold keys
    /// whose row has gone or changed since, which a wipe checks.
    by_value: HashMap<(&'static str, String), Vec<PairKey>>,
}

impl PairMemory {
    pub fn new(events: &'static PairEvents) -> Self {
        Self {
            events,
            rows: HashMap::new(),
            by_value: HashMap::new(),
        }
    }

    fn wiped_columns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.events
            .wipes
            .iter()
            .flat_map(|(_, columns)| columns.iter().copied())
    }
}

#[async_trait::async_trait]
impl crate::bulk::MemoryFold for PairMemory {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let kind = event.event_type.as_str();
        let events = self.events;
        if kind == events.begins {
            let row = (events.row)(event, Facts::of(event)?)?;
            if self.rows.contains_key(&row.key) {
                return Ok(());
            }
            let columns: Vec<&'static str> = self.wiped_columns().collect();
            for column in columns {
                if let Some(value) = events.table.value(column, &row) {
                    self.by_value
                        .entry((column, value.to_owned()))
                        .or_default()
                        .push(row.key.clone());
                }
            }
            self.rows.insert(row.key.clone(), row);
        } else if kind == events.ends {
            let key = (events.key)(event, Facts::of(event)?)?;
            self.rows.remove(&key);
        } else if let Some((_, columns)) = events.wipes.iter().find(|(t, _)| *t == kind) {
            let uri = Facts::field(event, Facts::of(event)?.uri, "uri")?;
            for column in *columns {
                let Some(keys) = self.by_value.remove(&(*column, uri.clone())) else {
                    continue;
                };
                for key in keys {
                    let still = self
                        .rows
                        .get(&key)
                        .is_some_and(|row| events.table.value(column, row) == Some(uri.as_str()));
                    if still {
                        self.rows.remove(&key);
                    }
                }
            }
        } else {
            return Err(ProjectionError::Unfoldable {
                event_type: kind.to_owned(),
            });
        }
        Ok(())
    }

    async fn load(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let table = self.events.table;
        let mut columns = vec![table.keys[0], table.keys[1]];
        columns.extend(table.columns);
        columns.extend(["created_at", "position_major", "position_minor"]);
        // In log order, as the statements would have written them.
        let mut rows: Vec<&PairRow> = self.rows.values().collect();
        rows.sort_by_key(|r| r.position);
        let mut rows = rows.into_iter();
        crate::bulk::CopyRows::new(table.table, &columns)
            .send(conn, |copy| {
                for row in rows.by_ref() {
                    copy.text(&row.key.0);
                    copy.text(&row.key.1);
                    for value in &row.values {
                        copy.text(value);
                    }
                    copy.time(row.at);
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
        self.by_value.clear();
        Ok(())
    }
}
