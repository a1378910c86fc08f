//! What the subcommands of `chorus` do.

use chorus_workers::delivery::admin::{self, JobFilter, JobState};
use std::sync::Arc;

use anyhow::Context as _;
use chorus_postgres::{LeaseOptions, LeaseSet, PrivateCluster};
use chorus_projections::Projections;
use uuid::Uuid;

use crate::app::App;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::database::Database;
use crate::federation::Federation;
use crate::http::{AppState, router};
use crate::roles::{self, Role, Subscribers};

/// `chorus serve --role ROLE`: open (or provision) the database, migrate,
/// run what the role runs (see [`crate::roles`]) until Ctrl-C or SIGTERM,
/// then stop the private cluster if there is one.
pub async fn serve(settings: Settings, role: Role) -> anyhow::Result<()> {
    let listener = if role.serves_http() {
        Some(
            TcpListener::bind(settings.bind)
                .await
                .with_context(|| format!("cannot listen on {}", settings.bind))?,
        )
    } else {
        None
    };
    let database = Database::open(&settings).await?;
    let result = async {
        chorus_postgres::migrate::run(&database.pool)
            .await
            .context("applying migrations")?;
        let pool = database.pool.clone();
        let store = crate::events::upstream::open_store(&settings, &pool).await?;
        let base_url = settings.base_url.as_str().trim_end_matches('/').to_owned();
        let subscribers = Subscribers {
            store: store.clone(),
            base_url: base_url.clone(),
            projections: Arc::new(
                Projections::watch(pool.clone())
                    .await
                    .context("following the projections")?,
            ),
            board: roles::worker_board(pool.clone())
                .await
                .context("following the subscribers")?,
            planned: Arc::new(tokio::sync::Notify::new()),
        };
        let federation = if role.serves_http() || role.works() {
            Some(Arc::new(
                Federation::new(&settings.federation, pool.clone(), store.clone(), &base_url)
                    .await
                    .context("starting federation")?,
            ))
        } else {
            None
        };
        let mut leases = LeaseSet::default();
        roles::mirror(&mut leases, &store);
        if role.projects() {
            subscribers.projector(&mut leases);
        }
        let mut _senders = None;
        if let Some(federation) = federation.as_ref().filter(|_| role.works()) {
            subscribers.worker(&mut leases, federation.clone());
            if role == Role::Worker || settings.federation.delivery_in_process {
                _senders = Some(chorus_workers::delivery::Senders::start_counting(
                    store.clone(),
                    federation.fetcher.clone(),
                    subscribers.planned.clone(),
                    crate::federation::delivery::sender_options(&settings.federation),
                    federation.delivery_outcomes.clone(),
                ));
            }
        }
        let _leases = roles::keep(leases, &pool, role, LeaseOptions::default());
        match (listener, federation) {
            (Some(listener), Some(federation)) => {
                let state = AppState::with_projections(
                    pool.clone(),
                    store,
                    &settings.base_url,
                    subscribers.projections.clone(),
                )
                .with_reads(database.reads.clone());
                let app = router(state.with_federation(federation));
                tracing::info!(%role, bind = %settings.bind, base_url = %settings.base_url, "serving");
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("the HTTP server failed")
            }
            _ => {
                tracing::info!(%role, "running");
                shutdown_signal().await;
                Ok(())
            }
        }
    }
    .await;
    tracing::info!("shutting down");
    database.close().await;
    result
}

/// `chorus worker`: the same as `chorus serve --role worker`.
pub async fn worker(settings: Settings) -> anyhow::Result<()> {
    serve(settings, Role::Worker).await
}

/// `chorus migrate`: apply pending migrations and exit.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let database = Database::open(&settings).await?;
    let result = chorus_postgres::migrate::run(&database.pool)
        .await
        .context("applying migrations");
    if result.is_ok() {
        println!("migrations applied");
    }
    database.close().await;
    result
}

/// `chorus cluster stop`: stop a private cluster left running.
pub async fn cluster_stop(settings: Settings) -> anyhow::Result<()> {
    let stopped = PrivateCluster::stop_in(&settings.data_dir).await?;
    println!(
        "{}",
        if stopped {
            format!(
                "stopped the private cluster in {}",
                settings.data_dir.display()
            )
        } else {
            format!(
                "no private cluster is running in {}",
                settings.data_dir.display()
            )
        }
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Opens the database (migrated) and the command side, runs `f`, closes.
async fn with_app<T, F, Fut>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(App) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let database = Database::open(settings).await?;
    let result = async {
        chorus_postgres::migrate::run(&database.pool)
            .await
            .context("applying migrations")?;
        let base = settings.base_url.as_str().trim_end_matches('/').to_owned();
        let store = crate::events::upstream::open_store(settings, &database.pool).await?;
        // With an external log of record, appends wait for the mirror: run
        // it here unless a server on this database already does.
        let mut leases = LeaseSet::default();
        roles::mirror(&mut leases, &store);
        let _mirror = (!leases.is_empty()).then(|| {
            let holder = format!("chorus command pid {}", std::process::id());
            leases.keep(&database.pool, &holder, LeaseOptions::default())
        });
        f(App::new(store, &base)).await
    }
    .await;
    database.close().await;
    result
}

/// `chorus accounts create`: a local account with its key pair; prints its
/// first API token (the only time it is shown).
pub async fn create_account(
    settings: Settings,
    handle: String,
    display_name: Option<String>,
    locked: bool,
    admin: bool,
) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let account = app
            .create_account(&handle, display_name, locked, admin)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("created {} ({})", account.actor.handle, account.actor.uri);
        println!("token id: {}", account.token.token_id);
        println!("token:    {}", account.token.secret);
        Ok(())
    })
    .await
}

/// What `chorus servers create` was given.
#[derive(Debug)]
pub struct NewServer {
    pub name: String,
    /// The owner's handle.
    pub owner: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub approval: bool,
    pub open_replies: bool,
    /// `name` or `name:topic`.
    pub channels: Vec<String>,
}

/// `chorus servers create`: a server (an ActivityPub Group) owned by a
/// local account.
pub async fn create_server(settings: Settings, server: NewServer) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let owner = app
            .resolve_actor(&server.owner)
            .await
            .map_err(|e| anyhow::anyhow!("owner {}: {e}", server.owner))?;
        let input = crate::app::ServerInput {
            channels: server
                .channels
                .iter()
                .map(|c| match c.split_once(':') {
                    Some((name, topic)) => (name.to_owned(), Some(topic.to_owned())),
                    None => (c.clone(), None),
                })
                .collect(),
            membership: if server.approval {
                chorus_domain::servers::Membership::Approval
            } else {
                chorus_domain::servers::Membership::Open
            },
            name: server.name,
            display_name: server.display_name,
            description: server.description,
            open_replies: server.open_replies,
        };
        let created = app
            .create_server(&owner, input)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("created {} ({})", created.created.name, created.server.uri);
        let names: Vec<&str> = created
            .created
            .channels
            .iter()
            .map(|c| c.slug.as_str())
            .collect();
        println!("channels: {}", names.join(", "));
        Ok(())
    })
    .await
}

/// `chorus servers list`: every server, with its members and channels.
pub async fn list_servers(settings: Settings) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let rows: Vec<(String, String, String, i64, Vec<String>)> = sqlx::query_as(
            "SELECT s.name, s.uri, s.membership,
                    (SELECT count(*) FROM follows f WHERE f.followee = s.uri AND f.state = 'accepted'),
                    ARRAY(SELECT c.slug FROM server_channels c WHERE c.server = s.uri
                          ORDER BY c.position_major, c.position_minor, c.slug)
             FROM servers s ORDER BY s.name",
        )
        .fetch_all(&app.pool)
        .await?;
        if rows.is_empty() {
            println!("no servers");
        }
        for (name, uri, membership, members, channels) in rows {
            println!(
                "{name}\t{uri}\t{membership}\t{members} members\t#{}",
                channels.join(" #")
            );
        }
        Ok(())
    })
    .await
}

/// `chorus accounts delete`: deletes a local account (its tokens revoked at
/// once); `chorus serve` then sends its Delete{Person} and erases its
/// content.
pub async fn delete_account(settings: Settings, handle: String) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let (uri, _) = app
            .delete_account(None, &handle)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("deleted {uri}");
        Ok(())
    })
    .await
}

/// `chorus tokens create`: another API token for an account.
pub async fn create_token(
    settings: Settings,
    handle: String,
    label: Option<String>,
) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let actor = app
            .resolve_actor(&handle)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let token =
            crate::tokens::create(&app.pool, actor.actor_id, &actor.uri, label.as_deref()).await?;
        println!("token id: {}", token.token_id);
        println!("token:    {}", token.secret);
        Ok(())
    })
    .await
}

/// `chorus tokens create-analytics`: a token that reads the event log and
/// nothing else.
pub async fn create_analytics_token(
    settings: Settings,
    label: Option<String>,
) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let token = crate::tokens::create_analytics(&app.pool, label.as_deref()).await?;
        println!("token id: {}", token.token_id);
        println!("token:    {}", token.secret);
        Ok(())
    })
    .await
}

/// `chorus events export`: a range of the log as NDJSON, to `output` or
/// stdout, with a progress bar on stderr (shown when it is a terminal).
pub async fn export_events(
    settings: Settings,
    range: crate::events::export::Range,
    output: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let started = std::time::Instant::now();
        let written = match &output {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                crate::events::export::export(&app.pool, &range, file, &bar).await
            }
            None => crate::events::export::export(&app.pool, &range, std::io::stdout(), &bar).await,
        };
        bar.finish_and_clear();
        let written = written?;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "exported {written} event(s) to {} in {secs:.1} s ({:.0} events/s)",
            output
                .as_ref()
                .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string()),
            written as f64 / secs.max(1e-9)
        );
        Ok(())
    })
    .await
}

/// `chorus tokens revoke`: revokes a token by id.
pub async fn revoke_token(settings: Settings, token_id: Uuid) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        if crate::tokens::revoke(&app.pool, token_id).await? {
            println!("revoked {token_id}");
            Ok(())
        } else {
            anyhow::bail!("no live token with id {token_id}")
        }
    })
    .await
}

/// `chorus schema`: prints the GraphQL schema (SDL).
pub fn print_schema() {
    print!("{}", crate::graphql::sdl());
}

/// `chorus instances block`: refuse a domain's inbox requests and hide its content.
pub async fn block_instance(
    settings: Settings,
    domain: String,
    reason: Option<String>,
) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let (domain, _) = app
            .block_instance(None, &domain, reason)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("blocked {domain}");
        Ok(())
    })
    .await
}

/// `chorus instances unblock`: lift a domain's block.
pub async fn unblock_instance(settings: Settings, domain: String) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let (domain, _) = app
            .unblock_instance(None, &domain)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("unblocked {domain}");
        Ok(())
    })
    .await
}

/// `chorus instances list`: the blocked domains, read from the log itself
/// (the read model may lag, or not run at all while the server is down).
pub async fn list_instances(settings: Settings) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let rows: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
            "SELECT DISTINCT ON (stream_id) stream_id, event_type, payload
             FROM events
             WHERE event_type IN ('InstanceBlocked', 'InstanceUnblocked')
             ORDER BY stream_id, stream_version DESC",
        )
        .fetch_all(&app.pool)
        .await?;
        let blocked: Vec<_> = rows
            .iter()
            .filter(|(_, event_type, _)| event_type == "InstanceBlocked")
            .collect();
        if blocked.is_empty() {
            println!("no instance is blocked");
        }
        for (_, _, payload) in blocked {
            let domain = payload["domain"].as_str().unwrap_or_default();
            match payload["reason"].as_str() {
                Some(reason) => println!("{domain}\t{reason}"),
                None => println!("{domain}"),
            }
        }
        Ok(())
    })
    .await
}

/// What `chorus deliveries` does.
#[derive(Debug)]
pub enum DeliveriesCommand {
    /// Jobs by state.
    Summary,
    /// Jobs matching the filter, most recently changed first.
    List { filter: JobFilter, json: bool },
    /// Failing hosts, or with `trusted` the trusted ones.
    Hosts { trusted: bool, json: bool },
    /// Queue an activity again, for every inbox or one.
    Redeliver {
        activity_id: String,
        inbox: Option<String>,
    },
    /// Make a host's pending jobs due now and close its circuit.
    RetryHost { host: String },
    /// Serve a host first, or stop doing so.
    Trust { host: String, trusted: bool },
    /// Remove jobs in a state.
    Purge {
        state: JobState,
        host: Option<String>,
    },
}

/// `chorus deliveries …`: look at and act on the delivery queue.
pub async fn deliveries(settings: Settings, command: DeliveriesCommand) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let pool = &app.pool;
        match command {
            DeliveriesCommand::Summary => {
                let s = admin::summary(pool).await?;
                println!(
                    "pending {} (due now {})\ndelivered {}\ndead {}",
                    s.pending, s.due, s.delivered, s.dead
                );
            }
            DeliveriesCommand::List { filter, json } => {
                let jobs = admin::jobs(pool, &filter).await?;
                if json {
                    print_json_lines(&jobs)?;
                } else if jobs.is_empty() {
                    println!("no job matches");
                }
                for j in jobs.iter().filter(|_| !json) {
                    let status = j.last_status.map_or("-".to_owned(), |s| s.to_string());
                    println!(
                        "{}\t{}\t{} attempt(s)\tstatus {status}\t{} {}\t{}\t{}",
                        j.job_id,
                        j.state,
                        j.attempts,
                        j.activity_type,
                        j.activity_id,
                        j.inbox,
                        j.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            DeliveriesCommand::Hosts { trusted, json } => {
                let hosts = if trusted {
                    admin::trusted_hosts(pool).await?
                } else {
                    admin::failing_hosts(pool).await?
                };
                if json {
                    print_json_lines(&hosts)?;
                } else if hosts.is_empty() {
                    println!(
                        "{}",
                        if trusted {
                            "no trusted host"
                        } else {
                            "no failing host"
                        }
                    );
                }
                for h in hosts.iter().filter(|_| !json) {
                    let open = h
                        .open_until
                        .map_or(String::new(), |t| format!("circuit open until {t}"));
                    println!(
                        "{}\t{} failure(s)\t{} pending\t{open}{}\t{}",
                        h.host,
                        h.consecutive_failures,
                        h.pending,
                        if h.unavailable_since.is_some() {
                            " (unavailable)"
                        } else {
                            ""
                        },
                        h.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            DeliveriesCommand::Redeliver { activity_id, inbox } => {
                let queued = admin::redeliver(pool, &activity_id, inbox.as_deref()).await?;
                println!("queued {queued} job(s) for {activity_id}");
            }
            DeliveriesCommand::RetryHost { host } => {
                let due = admin::retry_host(pool, &host).await?;
                println!("{due} job(s) for {host} are due now");
            }
            DeliveriesCommand::Trust { host, trusted } => {
                let h = admin::set_trusted(pool, &host, trusted).await?;
                println!(
                    "{} is {}",
                    h.host,
                    if h.trusted { "trusted" } else { "not trusted" }
                );
            }
            DeliveriesCommand::Purge { state, host } => {
                let purged = admin::purge(pool, state, host.as_deref()).await?;
                println!("purged {purged} {} job(s)", state.as_str());
            }
        }
        Ok(())
    })
    .await
}

/// One JSON object per line, for scripts.
fn print_json_lines<T: serde::Serialize>(items: &[T]) -> anyhow::Result<()> {
    for item in items {
        println!("{}", serde_json::to_string(item)?);
    }
    Ok(())
}

/// `chorus projections list`: every read model with its position and lag.
pub async fn list_projections(settings: Settings) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let statuses = crate::history::rebuilds::statuses(&app.pool).await?;
        let leases: Vec<String> = statuses
            .iter()
            .map(|p| roles::projection_lease(p.name))
            .collect();
        let holders = chorus_postgres::leases::holders(&app.pool, &leases).await?;
        for p in statuses {
            let lease = roles::projection_lease(p.name);
            let holder = holders
                .iter()
                .find(|(l, _)| *l == lease)
                .and_then(|(_, holder)| holder.clone());
            let rebuild = p.last_rebuild.map_or("never rebuilt".to_owned(), |r| {
                format!("last rebuild {:?} {}", r.state, r.started_at.to_rfc3339())
            });
            let running = holder.map_or("not running".to_owned(), |(holder, _)| {
                format!("run by {holder}")
            });
            println!(
                "{}\tposition {}\tlag {} event(s), {:.1} s\t{running}\t{rebuild}",
                p.name,
                p.position.map_or("-".to_owned(), |p| p.to_string()),
                p.lag_events,
                p.lag_seconds,
            );
        }
        Ok(())
    })
    .await
}

/// `chorus projections status NAME`: one read model and its latest rebuild.
pub async fn projection_status(settings: Settings, name: String) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let statuses = crate::history::rebuilds::statuses(&app.pool).await?;
        let Some(p) = statuses.into_iter().find(|p| p.name == name) else {
            anyhow::bail!(
                "no projection is called `{name}` (there are: {})",
                crate::history::rebuilds::names().join(", ")
            );
        };
        println!("{}", p.name);
        println!(
            "  position  {}",
            p.position.map_or("never ran".to_owned(), |p| p.to_string())
        );
        println!(
            "  lag       {} event(s), oldest waiting {:.1} s",
            p.lag_events, p.lag_seconds
        );
        match p.last_rebuild {
            None => println!("  rebuild   never"),
            Some(r) => {
                println!("  rebuild   {} ({:?})", r.id, r.state);
                println!(
                    "            {} of {} events, {:.0} events/s{}",
                    r.events_done,
                    r.events_total.max(r.events_done),
                    r.events_per_second(),
                    r.eta_seconds()
                        .map_or(String::new(), |eta| format!(", about {eta:.0} s left"))
                );
                println!(
                    "            started {} by {}",
                    r.started_at.to_rfc3339(),
                    r.requested_by.as_deref().unwrap_or("-")
                );
                if let Some(finished) = r.finished_at {
                    println!("            ended {}", finished.to_rfc3339());
                }
                if let Some(error) = r.error {
                    println!("            failed: {error}");
                }
            }
        }
        Ok(())
    })
    .await
}

/// `chorus projections rebuild NAME… | --all`: rebuilds beside the live read
/// models (a running server keeps serving them), with a progress bar, then
/// swaps them in.
pub async fn rebuild_projections(settings: Settings, names: Vec<String>) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let started = crate::history::rebuilds::start(&app.store, &names, crate::history::CLI)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ids = started.rebuild.ids();
        for (name, id) in &ids {
            eprintln!("rebuilding {name} ({id})");
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let (progress, mut updates) = tokio::sync::watch::channel((0i64, 0i64));
        let watcher = {
            let bar = bar.clone();
            tokio::spawn(async move {
                while updates.changed().await.is_ok() {
                    let (done, total) = *updates.borrow_and_update();
                    bar.set_length(u64::try_from(total.max(done)).unwrap_or_default());
                    bar.set_position(u64::try_from(done).unwrap_or_default());
                }
            })
        };
        let started_at = std::time::Instant::now();
        let result = crate::history::rebuilds::run(&app.store, started, progress).await;
        let _ = watcher.await;
        bar.finish_and_clear();
        for (name, id) in ids {
            let status = chorus_projections::rebuild::status_of(&app.pool, id).await?;
            match status {
                Some(s) if s.error.is_none() => println!(
                    "{name}: rebuilt from {} event(s) and swapped in ({:.1} s)",
                    s.events_done,
                    started_at.elapsed().as_secs_f64()
                ),
                Some(s) => println!(
                    "{name}: failed, the live read model is unchanged: {}",
                    s.error.unwrap_or_default()
                ),
                None => println!("{name}: its rebuild is not recorded"),
            }
        }
        result.map_err(|e| anyhow::anyhow!("rebuild failed: {e}"))
    })
    .await
}

/// `chorus reprocess preview`: how many stored activities a selection takes.
pub async fn reprocess_preview(
    settings: Settings,
    selection: chorus_domain::admin::InboundSelection,
) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let preview = crate::history::reprocess::preview(&app.pool, &selection).await?;
        println!("{} activit(ies) selected", preview.activities);
        for (kind, n) in preview.by_type {
            println!("  {kind}\t{n}");
        }
        Ok(())
    })
    .await
}

/// `chorus reprocess run`: interprets the selected stored activities again
/// with this code, with a progress bar; what they would send is held.
pub async fn reprocess_run(
    settings: Settings,
    selection: chorus_domain::admin::InboundSelection,
) -> anyhow::Result<()> {
    let federation_settings = settings.federation.clone();
    with_app(&settings, |app| async move {
        let federation = Arc::new(
            Federation::new(
                &federation_settings,
                app.pool.clone(),
                app.store.clone(),
                &app.base_url,
            )
            .await
            .context("starting federation")?,
        );
        let reinterpreter =
            crate::federation::interpret::Reinterpreter::new(app.clone(), federation);
        let run =
            crate::history::reprocess::start(&app.store, selection, crate::history::CLI).await?;
        eprintln!("reprocessing run {} ({} activities)", run.id, run.activities);
        let bar = indicatif::ProgressBar::new(u64::try_from(run.activities).unwrap_or_default());
        let (progress, mut updates) = tokio::sync::watch::channel((0i64, 0i64));
        let watcher = {
            let bar = bar.clone();
            tokio::spawn(async move {
                while updates.changed().await.is_ok() {
                    let (done, _) = *updates.borrow_and_update();
                    bar.set_position(u64::try_from(done).unwrap_or_default());
                }
            })
        };
        let report =
            crate::history::reprocess::run(&reinterpreter, &app.store, &run, progress).await?;
        let _ = watcher.await;
        bar.finish_and_clear();
        println!(
            "run {}: {} activities, {} applied now, {} unchanged, {} not applied for another reason, {} failed",
            run.id, report.activities, report.applied, report.unchanged, report.not_applied, report.failed
        );
        print_held(&app, run.id).await
    })
    .await
}

async fn print_held(app: &App, run: Uuid) -> anyhow::Result<()> {
    let held = crate::history::reprocess::effects(&app.store, &app.base_url, run).await?;
    if held.is_empty() {
        println!("nothing held");
    } else {
        println!(
            "{} activit(ies) held, sent only after `chorus reprocess release {run}`:",
            held.len()
        );
        for h in held {
            println!(
                "  {} {} by {} to {}",
                h.activity_type,
                h.activity_id,
                h.actor,
                h.recipients.join(", ")
            );
        }
    }
    Ok(())
}

/// `chorus reprocess status RUN`: a run's outcome and what it holds.
pub async fn reprocess_status(settings: Settings, run: Uuid) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let status = crate::history::reprocess::status(&app.store, run)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no reprocessing run {run}"))?;
        println!(
            "run {run}, asked by {} at {}, {} activities selected",
            status.requested.requested_by,
            status.requested.requested_at.to_rfc3339(),
            status.requested.selected
        );
        match status.finished {
            None => println!("not finished"),
            Some(f) => {
                println!(
                    "finished {}: {} applied now, {} unchanged, {} not applied, {} failed",
                    f.finished_at.to_rfc3339(),
                    f.applied,
                    f.unchanged,
                    f.not_applied,
                    f.failed
                );
                if let Some(released) = status.released {
                    println!(
                        "held effects released {}",
                        released.released_at.to_rfc3339()
                    );
                }
                print_held(&app, run).await?;
            }
        }
        Ok(())
    })
    .await
}

/// `chorus reprocess release RUN`: sends what a run held.
pub async fn reprocess_release(settings: Settings, run: Uuid) -> anyhow::Result<()> {
    with_app(&settings, |app| async move {
        let released =
            crate::history::reprocess::release(&app.store, run, crate::history::CLI).await?;
        println!("released {} held activit(ies)", released.events.len());
        Ok(())
    })
    .await
}
