//! An external log of record (`CHORUS_EVENT_STORE` set to a KurrentDB
//! server or another Postgres database): this database's log becomes its
//! mirror (`PgEventStore::with_upstream`, `chorus_postgres::mirror`). See
//! "External log of record" in docs/ARCHITECTURE.md.

use anyhow::Context as _;
use chorus_domain::MigrationStore;
use chorus_postgres::{PgEventStore, mirror};
use indicatif::ProgressBar;
use sqlx::PgPool;

use crate::config::Settings;
use crate::config::event_store::redact;
use crate::events::migrate::{NotAPrefix, open_other, prefix_of};

/// The event store the server appends through: the database's own log, or,
/// with an external log of record, the mirror of that log (checked first,
/// see [`check`]).
pub async fn open_store(settings: &Settings, pool: &PgPool) -> anyhow::Result<PgEventStore> {
    let Some(url) = settings.event_store.upstream() else {
        return Ok(PgEventStore::new(pool.clone()));
    };
    let shown = redact(url);
    let (upstream, _) = open_other(url).await?;
    // Reached now, rather than at the first append.
    upstream
        .last_event()
        .await
        .with_context(|| format!("cannot read the log of record at {shown}"))?;
    let local = PgEventStore::new(pool.clone());
    check(&local, upstream.as_ref(), &shown).await?;
    drop(local);
    Ok(PgEventStore::with_upstream(pool.clone(), upstream))
}

/// Makes sure the mirror can follow `upstream` into `local`'s database.
/// Once the mirror has run, it carries on from where it got to. Before
/// that, the database's log must be empty or a prefix of the upstream's
/// (as `chorus events migrate --to` leaves it); the mirror then starts
/// after the upstream's copy of its last event. Anything else is refused:
/// the mirror would mix two histories.
pub async fn check(
    local: &PgEventStore,
    upstream: &dyn MigrationStore,
    shown: &str,
) -> anyhow::Result<()> {
    let pool = local.pool();
    if mirror::position(pool)
        .await
        .context("reading where the log mirror got to")?
        .is_some()
    {
        return Ok(());
    }
    let Some(last) = local
        .last_event()
        .await
        .context("reading the end of this database's log")?
    else {
        return Ok(());
    };
    match prefix_of(upstream, local, &last, &ProgressBar::hidden()).await {
        Ok((_, at)) => {
            mirror::start_at(pool, at)
                .await
                .context("recording where the log mirror starts")?;
            Ok(())
        }
        Err(error) => match error.downcast::<NotAPrefix>() {
            Ok(not_a_prefix) => anyhow::bail!(
                "CHORUS_EVENT_STORE is {shown}, but this database's event log is not a prefix of \
                 that log ({reason}), so it cannot become its mirror. Copy this database's log \
                 there first with `chorus events migrate --to {shown}` (into an empty log), then \
                 start again; or unset CHORUS_EVENT_STORE to serve from this database's log.",
                reason = not_a_prefix.0
            ),
            Err(error) => Err(error.context(format!(
                "checking this database's log against the log of record at {shown}"
            ))),
        },
    }
}
