//! `chorus`: an event-sourced ActivityPub federation server.

use std::path::PathBuf;
use std::process::ExitCode;

use chorus_api::commands::{self, DeliveriesCommand};
use chorus_api::config::{LogFormat, Settings};
use chorus_workers::delivery::admin::{JobFilter, JobState};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A server allocates and frees small buffers on every request, from many
/// threads; glibc's allocator spent a tenth of the inbox's time on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "chorus",
    version,
    about = "An event-sourced ActivityPub federation server"
)]
struct Cli {
    /// A TOML configuration file; environment variables override it.
    #[arg(long, env = "CHORUS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP and run the log's subscribers; without DATABASE_URL,
    /// provision and run a private Postgres cluster.
    Serve {
        /// What this process runs: `api` (HTTP), `projector` (the
        /// projections), `worker` (deliveries, the interpreter, the
        /// erasure) or `all`. Any number of processes can share a database:
        /// each subscriber runs in one of them at a time, under a lease.
        #[arg(long, env = "CHORUS_ROLE", default_value = "all")]
        role: chorus_api::roles::Role,
    },
    /// The same as `serve --role worker`.
    Worker,
    /// Apply pending database migrations.
    Migrate,
    /// Manage the private Postgres cluster.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Manage local accounts.
    Accounts {
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Manage API tokens.
    Tokens {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Block or unblock other servers.
    Instances {
        #[command(subcommand)]
        action: InstanceAction,
    },
    /// Look at and act on the delivery queue.
    Deliveries {
        #[command(subcommand)]
        action: DeliveryAction,
    },
    /// Read models: their lag, and rebuilding them from the log.
    Projections {
        #[command(subcommand)]
        action: ProjectionAction,
    },
    /// Interpret stored inbound activities again with this code.
    Reprocess {
        #[command(subcommand)]
        action: ReprocessAction,
    },
    /// Servers: communities of channels that federate as ActivityPub Groups.
    Servers {
        #[command(subcommand)]
        action: ServerAction,
    },
    /// Read the event log.
    Events {
        #[command(subcommand)]
        action: EventAction,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
}

/// Which stored inbound activities (all when no option is given).
#[derive(Debug, clap::Args)]
struct Selection {
    /// Received strictly after this log position (`<major>.<minor>`).
    #[arg(long)]
    after: Option<chorus_domain::Position>,
    /// Received at or before this log position.
    #[arg(long)]
    until: Option<chorus_domain::Position>,
    /// Received at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// Received before this time (RFC 3339).
    #[arg(long)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Sent by this remote host.
    #[arg(long)]
    host: Option<String>,
    /// Of this ActivityStreams type (`Follow`, `Like`, ...).
    #[arg(long = "type")]
    activity_type: Option<String>,
    /// Whose last outcome was this.
    #[arg(long, value_parser = ["unsupported", "refused", "ignored", "applied"])]
    outcome: Option<String>,
}

impl From<Selection> for chorus_domain::admin::InboundSelection {
    fn from(s: Selection) -> Self {
        Self {
            after: s.after,
            until: s.until,
            from: s.from,
            to: s.to,
            host: s.host,
            activity_type: s.activity_type,
            outcome: s.outcome,
        }
    }
}

#[derive(Debug, Subcommand)]
enum ReprocessAction {
    /// How many activities the selection takes, by type (a dry run).
    Preview {
        #[command(flatten)]
        selection: Selection,
    },
    /// Interpret them again; what they would send is held until released.
    Run {
        #[command(flatten)]
        selection: Selection,
    },
    /// A run's outcome and what it holds.
    Status { run: uuid::Uuid },
    /// Send what a run holds.
    Release { run: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
enum ProjectionAction {
    /// Every read model, with its position in the log and its lag.
    List,
    /// One read model and its latest rebuild.
    Status { name: String },
    /// Rebuild read models from the log beside the live ones (which keep
    /// serving), then swap them in. Nothing is sent.
    Rebuild {
        /// The read models (see `list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every read model, reading the log once.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DeliveryAction {
    /// Jobs by state: pending (and due now), delivered, dead.
    Summary,
    /// Jobs, most recently changed first.
    List {
        /// pending, delivered or dead.
        #[arg(long)]
        state: Option<JobState>,
        /// e.g. `mastodon.example` (with a port if it has one).
        #[arg(long)]
        host: Option<String>,
        /// The ActivityPub id of the activity.
        #[arg(long)]
        activity: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Hosts with failures or an open circuit (or, with --trusted, the trusted ones).
    Hosts {
        #[arg(long)]
        trusted: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Send an outbound activity again, to every inbox it was planned for or to one.
    Redeliver {
        /// The ActivityPub id of the activity.
        activity_id: String,
        /// Only this inbox (planned before or not).
        #[arg(long)]
        inbox: Option<String>,
    },
    /// Try a host's pending jobs now and close its circuit.
    RetryHost { host: String },
    /// Serve a host's deliveries before others'.
    Trust { host: String },
    /// Stop serving a host first.
    Untrust { host: String },
    /// Remove jobs in a state (pending ones are then never sent).
    Purge {
        /// pending, delivered or dead.
        state: JobState,
        #[arg(long)]
        host: Option<String>,
    },
}

impl From<DeliveryAction> for DeliveriesCommand {
    fn from(action: DeliveryAction) -> Self {
        match action {
            DeliveryAction::Summary => Self::Summary,
            DeliveryAction::List {
                state,
                host,
                activity,
                limit,
                json,
            } => Self::List {
                filter: JobFilter {
                    state,
                    host,
                    activity_id: activity,
                    limit,
                },
                json,
            },
            DeliveryAction::Hosts { trusted, json } => Self::Hosts { trusted, json },
            DeliveryAction::Redeliver { activity_id, inbox } => {
                Self::Redeliver { activity_id, inbox }
            }
            DeliveryAction::RetryHost { host } => Self::RetryHost { host },
            DeliveryAction::Trust { host } => Self::Trust {
                host,
                trusted: true,
            },
            DeliveryAction::Untrust { host } => Self::Trust {
                host,
                trusted: false,
            },
            DeliveryAction::Purge { state, host } => Self::Purge { state, host },
        }
    }
}

#[derive(Debug, Subcommand)]
enum ServerAction {
    /// Create a server owned by a local account.
    Create {
        /// Its name: the `rust` of `!rust@example.com` (shared with account handles).
        name: String,
        /// The handle of the local account that owns it.
        #[arg(long)]
        owner: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Joining waits for a moderator's approval (else anyone may join).
        #[arg(long)]
        approval: bool,
        /// Anyone, member or not, may reply to messages (open servers only).
        #[arg(long, conflicts_with = "approval")]
        open_replies: bool,
        /// A channel, as `name` or `name:topic` (repeatable; `general` when none).
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
    /// The servers, with their members and channels.
    List,
}

#[derive(Debug, Subcommand)]
enum InstanceAction {
    /// Refuse a domain's inbox requests and hide its content.
    Block {
        /// e.g. `spam.example` (a port, if any, is part of it).
        domain: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a domain's block.
    Unblock { domain: String },
    /// The blocked domains.
    List,
}

#[derive(Debug, Subcommand)]
enum AccountAction {
    /// Create a local account; prints its first API token.
    Create {
        /// 1 to 30 letters, digits or `_`.
        handle: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Follow requests wait for approval.
        #[arg(long)]
        locked: bool,
        /// May run admin operations.
        #[arg(long)]
        admin: bool,
    },
    /// Delete a local account: its tokens stop working, its Delete is sent
    /// to every server Chorus knows and its content is erased.
    Delete { handle: String },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Issue another API token for an account.
    Create {
        handle: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// Issue an analytics token: it reads the event log (GraphQL `events`,
    /// the subscription, `/events.ndjson`) and nothing else.
    CreateAnalytics {
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke a token by its id.
    Revoke { token_id: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
enum EventAction {
    /// Write a range of the log, one event a line, in log order.
    Export {
        /// The first event: a position (`<major>.<minor>`, included) or an
        /// RFC 3339 time (recorded at or after). The start of the log when
        /// left out.
        #[arg(long)]
        from: Option<chorus_api::events::Bound>,
        /// The last event: a position (included) or an RFC 3339 time
        /// (recorded before). The last event readable when the export
        /// begins when left out.
        #[arg(long)]
        to: Option<chorus_api::events::Bound>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
        format: ExportFormat,
        /// A file to write (created or replaced) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Only events of this type (repeat for several).
        #[arg(long = "type")]
        types: Vec<String>,
    },
    /// Copy the log between this server's Postgres and another log (a
    /// KurrentDB server, or another Postgres database), resuming where an
    /// earlier copy stopped.
    Migrate {
        /// Copy this server's log to this log (`kurrentdb://…`, `esdb://…`
        /// or `postgres://…`), which must be empty or a prefix of it.
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        to: Option<String>,
        /// Copy this log into this server's, which must be empty or a
        /// prefix of it.
        #[arg(long)]
        from: Option<String>,
    },
}

/// How exported events are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// One JSON object a line.
    Ndjson,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Stop the private cluster in the data directory, if it is running.
    Stop,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("chorus: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chorus: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { role } => commands::serve(settings, role).await,
            Command::Worker => commands::worker(settings).await,
            Command::Migrate => commands::migrate(settings).await,
            Command::Cluster {
                action: ClusterAction::Stop,
            } => commands::cluster_stop(settings).await,
            Command::Accounts {
                action:
                    AccountAction::Create {
                        handle,
                        display_name,
                        locked,
                        admin,
                    },
            } => commands::create_account(settings, handle, display_name, locked, admin).await,
            Command::Accounts {
                action: AccountAction::Delete { handle },
            } => commands::delete_account(settings, handle).await,
            Command::Servers {
                action:
                    ServerAction::Create {
                        name,
                        owner,
                        display_name,
                        description,
                        approval,
                        open_replies,
                        channels,
                    },
            } => {
                let server = commands::NewServer {
                    name,
                    owner,
                    display_name,
                    description,
                    approval,
                    open_replies,
                    channels,
                };
                commands::create_server(settings, server).await
            }
            Command::Servers {
                action: ServerAction::List,
            } => commands::list_servers(settings).await,
            Command::Tokens {
                action: TokenAction::Create { handle, label },
            } => commands::create_token(settings, handle, label).await,
            Command::Tokens {
                action: TokenAction::CreateAnalytics { label },
            } => commands::create_analytics_token(settings, label).await,
            Command::Events {
                action:
                    EventAction::Export {
                        from,
                        to,
                        format: ExportFormat::Ndjson,
                        output,
                        types,
                    },
            } => {
                let range = chorus_api::events::export::Range {
                    from,
                    to,
                    types: (!types.is_empty()).then_some(types),
                };
                commands::export_events(settings, range, output).await
            }
            Command::Events {
                action: EventAction::Migrate { to, from },
            } => {
                use chorus_api::events::migrate::{self, Direction};
                match (to, from) {
                    (Some(to), _) => migrate::run(settings, Direction::To(to)).await,
                    (None, Some(from)) => migrate::run(settings, Direction::From(from)).await,
                    (None, None) => Err(anyhow::anyhow!("give --to URL or --from URL")),
                }
            }
            Command::Tokens {
                action: TokenAction::Revoke { token_id },
            } => commands::revoke_token(settings, token_id).await,
            Command::Instances { action } => match action {
                InstanceAction::Block { domain, reason } => {
                    commands::block_instance(settings, domain, reason).await
                }
                InstanceAction::Unblock { domain } => {
                    commands::unblock_instance(settings, domain).await
                }
                InstanceAction::List => commands::list_instances(settings).await,
            },
            Command::Deliveries { action } => commands::deliveries(settings, action.into()).await,
            Command::Reprocess { action } => match action {
                ReprocessAction::Preview { selection } => {
                    commands::reprocess_preview(settings, selection.into()).await
                }
                ReprocessAction::Run { selection } => {
                    commands::reprocess_run(settings, selection.into()).await
                }
                ReprocessAction::Status { run } => commands::reprocess_status(settings, run).await,
                ReprocessAction::Release { run } => {
                    commands::reprocess_release(settings, run).await
                }
            },
            Command::Projections { action } => match action {
                ProjectionAction::List => commands::list_projections(settings).await,
                ProjectionAction::Status { name } => {
                    commands::projection_status(settings, name).await
                }
                ProjectionAction::Rebuild { names, all: _ } => {
                    commands::rebuild_projections(settings, names).await
                }
            },
            Command::Schema => {
                commands::print_schema();
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chorus: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
