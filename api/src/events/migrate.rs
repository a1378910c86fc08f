//! `chorus events migrate`: copies the event log between this server's
//! Postgres database and another log (a KurrentDB server, or another
//! Postgres database), keeping the order, ids, streams and versions, types,
//! schema versions, payloads, metadata and recorded times.
//!
//! The copy is resumable: it starts after the source's copy of the target's
//! last event, so an interrupted run continues where it stopped, and the
//! target's idempotent appends make an event copied twice (a run stopped
//! between an append and the next read) a no-op. Before copying, the
//! target's log is checked, event by event, against the beginning of the
//! source's: a target that is neither empty nor a prefix of the source is
//! refused.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chorus_domain::{EventStoreError, ExpectedVersion, Position, RecordedEvent};
use chorus_postgres::PgEventStore;
use indicatif::ProgressBar;
use sqlx::postgres::PgPoolOptions;

use crate::config::Settings;
use crate::config::event_store::redact;
use crate::database::Database;

/// Events read per request.
const PAGE: usize = 1000;

/// How long a read may keep coming back empty before an event known to be
/// stored: a transaction running long on a Postgres source holds reads back.
const STALL: Duration = Duration::from_secs(60);

pub use chorus_domain::MigrationStore;

/// Which way `chorus events migrate` copies.
#[derive(Debug, Clone)]
pub enum Direction {
    /// From this server's Postgres log to the log at this URL.
    To(String),
    /// From the log at this URL to this server's Postgres log.
    From(String),
}

/// What a migration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Events the target already held, checked against the source.
    pub verified: u64,
    /// Events copied now.
    pub copied: u64,
    /// Events found already copied while copying (an earlier run stopped
    /// between an append and reading on).
    pub already: u64,
}

/// Why the target cannot take the source's log.
#[derive(Debug, thiserror::Error)]
#[error("the target's log is neither empty nor a prefix of the source's: {0}")]
pub struct NotAPrefix(pub String);

/// Copies `source`'s log into `target` from where `target`'s ends (see the
/// module docs), counting events on `bar`.
pub async fn migrate(
    source: &dyn MigrationStore,
    target: &dyn MigrationStore,
    bar: &ProgressBar,
) -> anyhow::Result<Summary> {
    let source_end = source
        .last_event()
        .await
        .context("reading the end of the source's log")?;
    let target_end = target
        .last_event()
        .await
        .context("reading the end of the target's log")?;
    let mut summary = Summary {
        verified: 0,
        copied: 0,
        already: 0,
    };
    let resume = match target_end {
        None => Position::START,
        Some(last) => {
            let (verified, resume) = prefix_of(source, target, &last, bar).await?;
            summary.verified = verified;
            resume
        }
    };
    let Some(source_end) = source_end else {
        return Ok(summary);
    };
    if let Some(count) = source
        .count_after(resume)
        .await
        .context("counting the events to copy")?
    {
        bar.set_length(count);
    }
    bar.set_position(0);
    let mut after = resume;
    let mut reader = Reader::new(source, "source");
    while after < source_end.position {
        let page = reader.page(after, source_end.position).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.position;
        for run in page.chunk_by(|a, b| a.stream_id == b.stream_id) {
            let (copied, already) = copy_run(target, run).await?;
            summary.copied += copied;
            summary.already += already;
            bar.inc(copied + already);
        }
    }
    Ok(summary)
}

/// Checks that `target`'s log, whose last event is `last`, is a prefix of
/// `source`'s, event by event; returns how many events matched and where
/// the source holds `last`.
pub async fn prefix_of(
    source: &dyn MigrationStore,
    target: &dyn MigrationStore,
    last: &RecordedEvent,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, Position)> {
    let theirs = source
        .read_stream(&last.stream_id, last.stream_version, 1)
        .await
        .context("looking the target's last event up in the source")?;
    let Some(ours) = theirs.into_iter().next().filter(|e| e.id == last.id) else {
        return Err(NotAPrefix(format!(
            "its last event, {} (version {} of `{}`), is not the source's",
            last.id, last.stream_version, last.stream_id
        ))
        .into());
    };
    let verified = verify(source, target, last.position, ours.position, bar).await?;
    Ok((verified, ours.position))
}

/// Checks the target's log, up to `through`, against the source's, up to
/// `source_through` (where the source holds the target's last event),
/// event by event; returns how many events matched.
async fn verify(
    source: &dyn MigrationStore,
    target: &dyn MigrationStore,
    through: Position,
    source_through: Position,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    bar.set_message("checking the target's log against the source");
    let mut theirs = Reader::new(target, "target");
    let mut ours = Reader::new(source, "source");
    let mut buffered: VecDeque<RecordedEvent> = VecDeque::new();
    let (mut target_after, mut source_after) = (Position::START, Position::START);
    let mut matched = 0u64;
    while target_after < through {
        for event in theirs.page(target_after, through).await? {
            target_after = event.position;
            if buffered.is_empty() {
                let page = ours.page(source_after, source_through).await?;
                if let Some(last) = page.last() {
                    source_after = last.position;
                }
                buffered.extend(page);
            }
            let Some(expected) = buffered.pop_front() else {
                return Err(NotAPrefix(format!(
                    "it holds more events than the source (the source ends after {matched})"
                ))
                .into());
            };
            if !same(&expected, &event) {
                return Err(NotAPrefix(format!(
                    "its event {n} is {} (`{}` version {}, {}), the source's {} (`{}` version {}, {})",
                    event.id,
                    event.stream_id,
                    event.stream_version,
                    event.event_type,
                    expected.id,
                    expected.stream_id,
                    expected.stream_version,
                    expected.event_type,
                    n = matched + 1,
                ))
                .into());
            }
            matched += 1;
            bar.set_position(matched);
        }
    }
    bar.set_message("");
    Ok(matched)
}

fn same(a: &RecordedEvent, b: &RecordedEvent) -> bool {
    a.id == b.id
        && a.stream_id == b.stream_id
        && a.stream_version == b.stream_version
        && a.event_type == b.event_type
}

/// Copies one run of consecutive events of one stream; returns how many
/// were copied now and how many the target already held.
async fn copy_run(
    target: &dyn MigrationStore,
    run: &[RecordedEvent],
) -> anyhow::Result<(u64, u64)> {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return Ok((0, 0));
    };
    let stream = &first.stream_id;
    let count = run.len() as u64;
    let refused = |e: EventStoreError| {
        anyhow::Error::new(e).context(format!(
            "copying version {} of `{stream}`",
            first.stream_version
        ))
    };
    match target
        .import(
            stream,
            ExpectedVersion::Exact(first.stream_version - 1),
            run,
        )
        .await
    {
        Ok(outcome) if outcome.deduplicated => return Ok((0, count)),
        Ok(_) => return Ok((count, 0)),
        Err(
            EventStoreError::WrongExpectedVersion { .. } | EventStoreError::PartialDuplicate { .. },
        ) => {}
        Err(error) => return Err(refused(error)),
    }
    // The target has some of the run already (an earlier run stopped
    // midway), or the stream is not where the source's log puts it.
    let have = target
        .stream_version(stream)
        .await
        .map_err(refused)?
        .unwrap_or(0);
    if have < first.stream_version - 1 {
        return Err(NotAPrefix(format!(
            "`{stream}` is at version {have} in the target, but the source's next event there is version {}",
            first.stream_version
        ))
        .into());
    }
    let overlap = (have.min(last.stream_version) + 1 - first.stream_version) as usize;
    let held = target
        .read_stream(stream, first.stream_version, overlap)
        .await
        .map_err(refused)?;
    if held.len() != overlap || held.iter().zip(run).any(|(h, r)| !same(r, h)) {
        return Err(NotAPrefix(format!(
            "versions {}..={} of `{stream}` in the target are not the source's",
            first.stream_version,
            first.stream_version + overlap as u64 - 1
        ))
        .into());
    }
    if overlap == run.len() {
        return Ok((0, count));
    }
    let rest = &run[overlap..];
    let outcome = target
        .import(stream, ExpectedVersion::Exact(have), rest)
        .await
        .map_err(refused)?;
    let rest_count = rest.len() as u64;
    Ok(if outcome.deduplicated {
        (0, count)
    } else {
        (rest_count, count - rest_count)
    })
}

/// Reads pages of a log up to a position known to be stored, waiting out
/// reads that come back empty before it (a Postgres log withholds events
/// behind a transaction still running).
struct Reader<'a> {
    store: &'a dyn MigrationStore,
    side: &'static str,
}

impl<'a> Reader<'a> {
    fn new(store: &'a dyn MigrationStore, side: &'static str) -> Self {
        Self { store, side }
    }

    /// The next page after `after`, cut at `through`; empty only at `through`
    /// or, for `Position::END`, at the end of the log.
    async fn page(
        &mut self,
        after: Position,
        through: Position,
    ) -> anyhow::Result<Vec<RecordedEvent>> {
        let deadline = Instant::now() + STALL;
        loop {
            let mut page = self
                .store
                .read_all(after, PAGE)
                .await
                .with_context(|| format!("reading the {}'s log after {after}", self.side))?;
            page.retain(|e| e.position <= through);
            if !page.is_empty() || through == Position::END || after >= through {
                return Ok(page);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the {}'s log stays unreadable after {after} for {}s, though it holds events up to {through}: a long transaction may be running there; try again later",
                    self.side,
                    STALL.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The other end of a migration, from its URL.
pub async fn open_other(
    url: &str,
) -> anyhow::Result<(Arc<dyn MigrationStore>, Option<sqlx::PgPool>)> {
    let shown = redact(url);
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "postgres" | "postgresql" => {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .with_context(|| format!("cannot connect to the database at {shown}"))?;
            chorus_postgres::migrate::run(&pool)
                .await
                .with_context(|| format!("applying Chorus' migrations to {shown}"))?;
            Ok((Arc::new(PgEventStore::new(pool.clone())), Some(pool)))
        }
        "kurrentdb" | "kurrent" | "esdb" | "kurrentdb+discover" | "kurrent+discover"
        | "esdb+discover" => open_kurrent(url, &shown),
        _ => anyhow::bail!(
            "`{shown}` is neither a Postgres URL (postgres://…) nor a KurrentDB connection string (kurrentdb://… or esdb://…)"
        ),
    }
}

#[cfg(feature = "kurrentdb")]
fn open_kurrent(
    url: &str,
    _shown: &str,
) -> anyhow::Result<(Arc<dyn MigrationStore>, Option<sqlx::PgPool>)> {
    let store = chorus_kurrent::KurrentEventStore::connect(url)?;
    Ok((Arc::new(store), None))
}

#[cfg(not(feature = "kurrentdb"))]
fn open_kurrent(
    _url: &str,
    shown: &str,
) -> anyhow::Result<(Arc<dyn MigrationStore>, Option<sqlx::PgPool>)> {
    anyhow::bail!(
        "cannot reach {shown}: this chorus was built without the `kurrentdb` feature (build it with `cargo build -p chorus-api --features kurrentdb`)"
    )
}

/// `chorus events migrate --to URL` or `--from URL`: the whole command,
/// with a progress bar and a summary on stderr.
pub async fn run(settings: Settings, direction: Direction) -> anyhow::Result<()> {
    let (url, outward) = match &direction {
        Direction::To(url) => (url.as_str(), true),
        Direction::From(url) => (url.as_str(), false),
    };
    let shown = redact(url);
    let database = Database::open(&settings).await?;
    let result = async {
        chorus_postgres::migrate::run(&database.pool)
            .await
            .context("applying migrations")?;
        let (other, other_pool) = open_other(url).await?;
        let here = PgEventStore::new(database.pool.clone());
        let (source, target): (&dyn MigrationStore, &dyn MigrationStore) = if outward {
            (&here, other.as_ref())
        } else {
            (other.as_ref(), &here)
        };
        let bar =
            ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let started = Instant::now();
        let summary = migrate(source, target, &bar).await;
        bar.finish_and_clear();
        if let Some(pool) = other_pool {
            pool.close().await;
        }
        let summary = summary?;
        let secs = started.elapsed().as_secs_f64();
        let (from, to) = if outward {
            ("this server's log", shown.as_str())
        } else {
            (shown.as_str(), "this server's log")
        };
        eprintln!(
            "copied {} event(s) from {from} to {to} in {secs:.1} s ({:.0} events/s); {} already there",
            summary.copied,
            summary.copied as f64 / secs.max(1e-9),
            summary.verified + summary.already,
        );
        anyhow::Ok(())
    }
    .await;
    database.close().await;
    result
}
