//! Federation: the inbox, remote keys and fetches, the instance actor, and
//! the interpreter that turns received activities into read-model changes.

pub use chorus_workers::fetch;
pub mod delivery;
pub mod directory;
pub mod inbox;
pub mod instance;
pub mod interpret;
pub mod metrics;
pub mod remote_keys;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chorus_postgres::{GroupAppender, GroupOptions, PgEventStore};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sqlx::PgPool;

use crate::config::FederationSettings;
use crate::http::AppState;
use fetch::{FetchPolicy, Fetcher};
use instance::InstanceActor;
use metrics::InboxMetrics;
use remote_keys::KeyResolver;

/// Everything federation needs at run time, shared by the handlers.
#[derive(Debug)]
pub struct Federation {
    pub settings: FederationSettings,
    pub fetcher: Fetcher,
    pub keys: KeyResolver,
    pub metrics: InboxMetrics,
    /// What became of this process's delivery attempts, by host class.
    pub delivery_outcomes: Arc<chorus_workers::delivery::Outcomes>,
    pub limits: RateLimits,
    pub instance: Arc<InstanceActor>,
    /// Appends received activities, many requests to a statement and a
    /// commit (group commit): the inbox's write path.
    pub received: GroupAppender,
    blocked: BlockedDomains,
}

/// The blocked domains, read at most once a second: the inbox consults them
/// on every request, and a block may take a second to apply.
#[derive(Debug, Default)]
struct BlockedDomains {
    cached: std::sync::RwLock<Option<(std::time::Instant, Arc<std::collections::HashSet<String>>)>>,
}

/// How long the inbox trusts its copy of the blocked domains.
const BLOCKED_TTL: Duration = Duration::from_secs(1);

impl Federation {
    /// Loads (or makes) the instance actor's key and builds the clients.
    pub async fn new(
        settings: &FederationSettings,
        pool: PgPool,
        store: PgEventStore,
        base_url: &str,
    ) -> anyhow::Result<Self> {
        let instance = Arc::new(InstanceActor::load_or_create(&pool, base_url).await?);
        let fetcher = Fetcher::new(
            FetchPolicy {
                allow_private_addresses: settings.allow_private_addresses,
                timeout: Duration::from_secs(settings.request_timeout_secs.max(1)),
                resolve: settings.resolve.clone(),
                ..FetchPolicy::default()
            },
            Some(instance.clone()),
        )?;
        Ok(Self {
            settings: settings.clone(),
            received: GroupAppender::start(store.clone(), GroupOptions::default()),
            keys: KeyResolver::new(pool, store, fetcher.clone()),
            fetcher,
            metrics: InboxMetrics::default(),
            delivery_outcomes: Arc::default(),
            limits: RateLimits::new(settings),
            instance,
            blocked: BlockedDomains::default(),
        })
    }

    /// How far a signature's date may be from our clock.
    pub fn signature_window(&self) -> chrono::Duration {
        chrono::Duration::seconds(
            i64::try_from(self.settings.signature_window_secs).unwrap_or(i64::MAX / 1000),
        )
    }

    /// Whether any of `domains` is blocked.
    pub async fn blocked(&self, pool: &PgPool, domains: &[&str]) -> Result<bool, sqlx::Error> {
        let fresh = self.blocked.cached.read().ok().and_then(|c| {
            c.as_ref()
                .filter(|(at, _)| at.elapsed() < BLOCKED_TTL)
                .map(|(_, set)| set.clone())
        });
        let set = match fresh {
            Some(set) => set,
            None => {
                let rows: Vec<String> = sqlx::query_scalar("SELECT domain FROM blocked_instances")
                    .fetch_all(pool)
                    .await?;
                let set = Arc::new(rows.into_iter().collect());
                if let Ok(mut cached) = self.blocked.cached.write() {
                    *cached = Some((std::time::Instant::now(), Arc::clone(&set)));
                }
                set
            }
        };
        Ok(domains.iter().any(|d| set.contains(*d)))
    }
}

/// Per-instance and per-address request rates for the inbox.
#[derive(Debug)]
pub struct RateLimits {
    per_instance: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl RateLimits {
    fn new(settings: &FederationSettings) -> Self {
        let quota = |rate: u32| {
            let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
            let burst = rate.saturating_mul(NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN));
            Quota::per_second(rate).allow_burst(burst)
        };
        Self {
            per_instance: DefaultKeyedRateLimiter::keyed(quota(settings.inbox_rate_per_instance)),
            per_ip: DefaultKeyedRateLimiter::keyed(quota(settings.inbox_rate_per_ip)),
        }
    }

    /// `Err(wait)` when `ip` is over its rate.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        self.per_ip
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// `Err(wait)` when `domain` is over its rate.
    pub fn check_instance(&self, domain: &str) -> Result<(), Duration> {
        self.per_instance
            .check_key(&domain.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the state of keys that are back to a full burst, so the maps
    /// do not grow with every address ever seen.
    pub fn shrink(&self) {
        self.per_instance.retain_recent();
        self.per_ip.retain_recent();
        self.per_instance.shrink_to_fit();
        self.per_ip.shrink_to_fit();
    }
}

/// The routes of federation.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/inbox", post(inbox::shared_inbox))
        .route("/users/{handle}/inbox", post(inbox::actor_inbox))
        .route("/servers/{name}/inbox", post(inbox::server_inbox))
        .route("/actor", get(instance::actor_document))
        .route("/metrics", get(metrics_text))
}

/// `GET /metrics`: the inbox and delivery counters and what the database
/// says, in the Prometheus text format. Should the database fail, the
/// counters are still served, with `chorus_metrics_database_up 0`.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut body = state
        .federation
        .as_ref()
        .map(|f| f.metrics.render() + &metrics::render_outcomes(&f.delivery_outcomes))
        .unwrap_or_default();
    body.push_str(&metrics::render_reads(&state.reads));
    let up = match metrics::render_state(&state.pool).await {
        Ok(text) => {
            body.push_str(&text);
            1
        }
        Err(error) => {
            tracing::error!(%error, "metrics: the database could not be read");
            0
        }
    };
    body.push_str(&format!(
        "# HELP chorus_metrics_database_up Whether this scrape could read the database.\n\
         # TYPE chorus_metrics_database_up gauge\n\
         chorus_metrics_database_up {up}\n"
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
