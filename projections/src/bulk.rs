//! Rebuilding a read model in memory: a whole log folded into the final
//! rows, which are then loaded with `COPY` into the (empty) copies of the
//! tables. This is much faster than writing batch after batch, for read
//! models small enough to hold in memory while they are rebuilt (about two
//! hundred bytes a row).

use async_trait::async_trait;
use chorus_domain::RecordedEvent;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::ProjectionError;

/// A whole rebuild folded in memory: events in log order, then the rows.
#[async_trait]
pub trait MemoryFold: Send + Sync {
    /// Applies one event (of a type the projection handles), in log order.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError>;

    /// Writes the rows into the projection's empty tables (through `conn`,
    /// whose `search_path` names the copies).
    async fn load(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError>;
}

/// Rows in `COPY … FROM STDIN` text format, sent a chunk at a time.
#[derive(Debug)]
pub(crate) struct CopyRows {
    statement: String,
    buffer: Vec<u8>,
}

/// How much is sent to the server at a time.
const CHUNK: usize = 1 << 20;

impl CopyRows {
    /// `COPY table (columns) FROM STDIN`.
    pub fn new(table: &str, columns: &[&str]) -> Self {
        Self {
            statement: format!("COPY {table} ({}) FROM STDIN", columns.join(", ")),
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    /// One text field (escaped as COPY's text format wants).
    pub fn text(&mut self, value: &str) {
        for byte in value.bytes() {
            match byte {
                b'\\' => self.buffer.extend_from_slice(b"\\\\"),
                b'\t' => self.buffer.extend_from_slice(b"\\t"),
                b'\n' => self.buffer.extend_from_slice(b"\\n"),
                b'\r' => self.buffer.extend_from_slice(b"\\r"),
                other => self.buffer.push(other),
            }
        }
        self.buffer.push(b'\t');
    }

    /// One timestamp field, to the microsecond (as a bound value is).
    pub fn time(&mut self, value: DateTime<Utc>) {
        let text = crate::common::micros(value);
        self.text(&text);
    }

    /// One integer field.
    pub fn int(&mut self, value: i64) {
        self.text(&value.to_string());
    }

    /// Ends the row.
    pub fn end_row(&mut self) {
        if self.buffer.last() == Some(&b'\t') {
            self.buffer.pop();
        }
        self.buffer.push(b'\n');
    }

    /// Whether a chunk is ready to send.
    pub fn full(&self) -> bool {
        self.buffer.len() >= CHUNK
    }

    /// Sends the rows, with `rows` filling the buffer a chunk at a time:
    /// it is called until it returns false (nothing more to add).
    pub async fn send(
        mut self,
        conn: &mut PgConnection,
        mut rows: impl FnMut(&mut Self) -> bool,
    ) -> Result<u64, sqlx::Error> {
        let statement = std::mem::take(&mut self.statement);
        let mut copy = conn.copy_in_raw(&statement).await?;
        loop {
            let more = rows(&mut self);
            if !self.buffer.is_empty() {
                copy.send(std::mem::take(&mut self.buffer)).await?;
                self.buffer.reserve(CHUNK);
            }
            if !more {
                break;
            }
        }
        copy.finish().await
    }
}
