//! `chorus events export`: a range of the log written as NDJSON, read in
//! large pages a page ahead of the writer.

use std::io::Write;

use chorus_domain::{EventStoreError, Position, RecordedEvent};
use chorus_postgres::{Narrowed, PgEventStore};
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::{Bound, SelectionError, just_before, ndjson_line};

/// Events read per query.
const PAGE: usize = 10_000;

/// What to export.
#[derive(Clone, Debug, Default)]
pub struct Range {
    /// The first event: at or after this position, or recorded at or after
    /// this time (from the start of the log when `None`).
    pub from: Option<Bound>,
    /// The last event: at or before this position, or recorded before this
    /// time (up to the last event readable when the export begins when
    /// `None`).
    pub to: Option<Bound>,
    /// Only these types (every type when `None`).
    pub types: Option<Vec<String>>,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Range(#[from] SelectionError),
    #[error("reading the log: {0}")]
    Read(#[from] EventStoreError),
    #[error("writing: {0}")]
    Write(#[from] std::io::Error),
}

/// The first and the last position of `range` and what it narrows the read
/// to; the last is the last readable event now, unless `range` ends
/// earlier.
async fn plan(pool: &PgPool, range: &Range) -> Result<(Position, Narrowed), ExportError> {
    let selection = super::Selection {
        types: range.types.clone(),
        from: match range.from {
            Some(Bound::Time(t)) => Some(t),
            _ => None,
        },
        to: match range.to {
            Some(Bound::Time(t)) => Some(t),
            _ => None,
        },
        ..super::Selection::default()
    };
    let mut narrowed = selection.narrowed()?;
    let head = PgEventStore::read_before(pool, Position::END, &Narrowed::default(), 1)
        .await?
        .first()
        .map_or(Position::START, |e| e.position);
    narrowed.until = Some(match range.to {
        Some(Bound::Position(to)) => to.min(head),
        _ => head,
    });
    let after = match range.from {
        Some(Bound::Position(from)) => {
            if let Some(Bound::Position(to)) = range.to
                && to < from
            {
                return Err(SelectionError(format!("`--from {from}` is after `--to {to}`")).into());
            }
            just_before(from)
        }
        _ => Position::START,
    };
    Ok((after, narrowed))
}

/// Writes `range` to `out` as NDJSON, one event a line in log order, and
/// returns how many were written. `progress` learns the total first, then
/// each page written.
pub async fn export<W: Write + Send + 'static>(
    pool: &PgPool,
    range: &Range,
    out: W,
    progress: &indicatif::ProgressBar,
) -> Result<u64, ExportError> {
    let (after, narrowed) = plan(pool, range).await?;
    // Counting reads the whole range once more: only for a bar one sees.
    if !progress.is_hidden() {
        progress.set_length(PgEventStore::count_after(pool, after, &narrowed).await?);
    }

    // The writer formats and writes on a thread of its own while the next
    // page is read.
    let (pages, mut to_write) = mpsc::channel::<Vec<RecordedEvent>>(2);
    let bar = progress.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut out = out;
        let mut lines = Vec::with_capacity(1 << 22);
        let mut written = 0u64;
        while let Some(page) = to_write.blocking_recv() {
            for event in &page {
                ndjson_line(event, &mut lines);
                if lines.len() >= 1 << 20 {
                    out.write_all(&lines)?;
                    lines.clear();
                }
            }
            out.write_all(&lines)?;
            lines.clear();
            written += page.len() as u64;
            bar.inc(page.len() as u64);
        }
        out.flush()?;
        Ok(written)
    });

    let mut after = after;
    let read = async {
        loop {
            let page = PgEventStore::read_after(pool, after, &narrowed, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok::<_, ExportError>(());
            };
            after = last.position;
            let full = page.len() == PAGE;
            if pages.send(page).await.is_err() {
                // The writer stopped: its error says why.
                return Ok(());
            }
            if !full {
                return Ok(());
            }
        }
    }
    .await;
    drop(pages);
    let written = writer
        .await
        .map_err(|e| ExportError::Write(std::io::Error::other(e)))??;
    read?;
    Ok(written)
}
