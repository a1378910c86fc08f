//! A real Chorus HTTP server on 127.0.0.1 with a random port and a database
//! of its own, for end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use chorus_api::app::App;
use chorus_api::config::FederationSettings;
use chorus_api::database::ReadPool;
use chorus_api::federation::Federation;
use chorus_api::federation::delivery::Delivery;
use chorus_api::federation::interpret::Interpreter;
use chorus_api::http::{AppState, router};
use chorus_postgres::PgEventStore;
use chorus_projections::Projections;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::pg::{TestDb, test_db, test_db_on};

/// A running server.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:PORT` (or `http://{name}:PORT`, see
    /// [`spawn_app_named`]), also the base of every ActivityPub id.
    pub base_url: String,
    /// Its database, for the `chorus` commands.
    pub database_url: String,
    pub pool: PgPool,
    pub store: PgEventStore,
    /// The command side, as the `chorus` commands use it.
    pub app: App,
    pub projections: Arc<Projections>,
    /// The inbox's side: keys, fetches, counters.
    pub federation: Arc<Federation>,
    /// The subscriber interpreting received activities (`None` until
    /// started, for [`spawn_app_without_interpreter`]).
    pub interpreter: Option<Interpreter>,
    /// Delivery of outbound activities: the planner and, in process, the
    /// senders.
    pub delivery: Delivery,
    /// The erasure of deleted content.
    pub erasure: chorus_workers::erasure::Erasure,
    /// The log of record and its mirror, for [`spawn_app_with_upstream`].
    pub upstream: Option<crate::upstream::Mirrored>,
    pub client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A local account created for a test.
#[derive(Debug, Clone)]
pub struct Account {
    pub handle: String,
    pub uri: String,
    pub token: String,
}

/// Starts a server on a fresh database, with federation settings fit for
/// tests (remote servers on 127.0.0.1 allowed).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(FederationSettings {
        allow_private_addresses: true,
        ..FederationSettings::default()
    })
    .await
}

/// Starts a server on a fresh database with these federation settings.
pub async fn spawn_app_with(settings: FederationSettings) -> TestApp {
    let options = chorus_api::federation::delivery::sender_options(&settings);
    spawn_app_delivering(settings, options).await
}

/// Starts a server whose delivery workers run with these options (short
/// retry timings, for fault tests).
pub async fn spawn_app_delivering(
    settings: FederationSettings,
    options: chorus_workers::delivery::SenderOptions,
) -> TestApp {
    spawn(None, settings, options).await
}

/// Starts a server known by a name of its own: its base URL is
/// `http://{host}:PORT`, still listening on 127.0.0.1 only. The name (a
/// `.localhost` one, which WebFinger asks over plain http like 127.0.0.1)
/// is added to `settings.resolve`, so that the server and its test client
/// reach it at 127.0.0.1; other servers reach it when their settings
/// resolve it too.
pub async fn spawn_app_named(host: &str, settings: FederationSettings) -> TestApp {
    let options = chorus_api::federation::delivery::sender_options(&settings);
    spawn(Some(host), settings, options).await
}

/// Two servers under names of their own, `alpha.localhost` and
/// `beta.localhost`, each reaching both names at 127.0.0.1 (the port is the
/// URL's) and nothing else: all traffic stays on this machine.
pub async fn spawn_app_pair() -> (TestApp, TestApp) {
    let loopback = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
    let settings = FederationSettings {
        allow_private_addresses: true,
        resolve: vec![
            ("alpha.localhost".to_owned(), loopback),
            ("beta.localhost".to_owned(), loopback),
        ],
        ..FederationSettings::default()
    };
    let alpha = spawn_app_named("alpha.localhost", settings.clone()).await;
    let beta = spawn_app_named("beta.localhost", settings).await;
    (alpha, beta)
}

/// Starts a server whose received activities are stored but not
/// interpreted until the test starts the interpreter
/// ([`TestApp::start_interpreter`]): e.g. to record what older code made of
/// them first.
pub async fn spawn_app_without_interpreter() -> TestApp {
    let settings = FederationSettings {
        allow_private_addresses: true,
        ..FederationSettings::default()
    };
    let options = chorus_api::federation::delivery::sender_options(&settings);
    spawn_with(None, settings, options, false).await
}

/// Starts a server on a fresh database on `replicated`'s primary whose
/// GraphQL queries read from its standby while the standby lags by at most
/// `max_lag` (as `DATABASE_READ_URL` and `CHORUS_READ_MAX_LAG_MS` make
/// `chorus serve` do).
pub async fn spawn_app_with_replica(
    replicated: &crate::replica::Replicated,
    max_lag: Duration,
) -> TestApp {
    let settings = FederationSettings {
        allow_private_addresses: true,
        ..FederationSettings::default()
    };
    let options = chorus_api::federation::delivery::sender_options(&settings);
    let db = test_db_on(&replicated.primary_admin_url()).await;
    let replica = ReadReplica {
        url: replicated.standby_url(&db.name),
        max_lag,
    };
    start(db, Some(replica), None, settings, options, true, false).await
}

/// Starts a server whose log of record is another Postgres database (as
/// `CHORUS_EVENT_STORE=postgres://…` makes `chorus serve` run): appends go
/// there, and the mirror copies them into the server's database, where
/// everything else reads them ([`TestApp::upstream`]).
pub async fn spawn_app_with_upstream() -> TestApp {
    let settings = FederationSettings {
        allow_private_addresses: true,
        ..FederationSettings::default()
    };
    let options = chorus_api::federation::delivery::sender_options(&settings);
    start(test_db().await, None, None, settings, options, true, true).await
}

/// Where a test server's queries read, besides its database.
struct ReadReplica {
    url: String,
    max_lag: Duration,
}

async fn spawn(
    host: Option<&str>,
    settings: FederationSettings,
    options: chorus_workers::delivery::SenderOptions,
) -> TestApp {
    spawn_with(host, settings, options, true).await
}

async fn spawn_with(
    host: Option<&str>,
    settings: FederationSettings,
    options: chorus_workers::delivery::SenderOptions,
    interpret: bool,
) -> TestApp {
    start(
        test_db().await,
        None,
        host,
        settings,
        options,
        interpret,
        false,
    )
    .await
}

async fn start(
    db: TestDb,
    replica: Option<ReadReplica>,
    host: Option<&str>,
    mut settings: FederationSettings,
    options: chorus_workers::delivery::SenderOptions,
    interpret: bool,
    upstream: bool,
) -> TestApp {
    let loopback = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
    if let Some(host) = host
        && !settings.resolve.iter().any(|(name, _)| name == host)
    {
        settings.resolve.push((host.to_owned(), loopback));
    }
    let listener = tokio::net::TcpListener::bind((loopback, 0))
        .await
        .unwrap_or_else(|e| panic!("cannot bind: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let base_url = format!("http://{}:{port}", host.unwrap_or("127.0.0.1"));
    // The test client reaches the names the server reaches, at the same
    // addresses (the port comes from the URL).
    let client = settings
        .resolve
        .iter()
        .fold(reqwest::Client::builder(), |builder, (name, ip)| {
            builder.resolve(name, std::net::SocketAddr::new(*ip, 0))
        })
        .build()
        .unwrap_or_else(|e| panic!("cannot build the test client: {e}"));
    let upstream = if upstream {
        Some(crate::upstream::mirrored_on(&db).await)
    } else {
        None
    };
    let store = upstream
        .as_ref()
        .map_or_else(|| PgEventStore::new(db.pool.clone()), |m| m.store.clone());
    let projections = Arc::new(
        Projections::start(store.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot start projections: {e}")),
    );
    let url = url::Url::parse(&base_url).unwrap_or_else(|e| panic!("{e}"));
    let state =
        AppState::with_projections(db.pool.clone(), store.clone(), &url, projections.clone());
    let federation = Arc::new(
        Federation::new(&settings, db.pool.clone(), store.clone(), &base_url)
            .await
            .unwrap_or_else(|e| panic!("cannot start federation: {e}")),
    );
    let interpreter = if interpret {
        Some(
            Interpreter::start(App::new(store.clone(), &base_url), federation.clone())
                .await
                .unwrap_or_else(|e| panic!("cannot start the interpreter: {e}")),
        )
    } else {
        None
    };
    let delivery = Delivery::start_with(
        store.clone(),
        &federation,
        projections.clone(),
        &base_url,
        options,
    )
    .await
    .unwrap_or_else(|e| panic!("cannot start delivery: {e}"));
    let erasure = chorus_workers::erasure::Erasure::start(
        store.clone(),
        Arc::new(delivery.planner.clone()),
        chorus_workers::erasure::ErasureOptions {
            key_sweep_every: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("cannot start the erasure: {e}"));
    let mut state = state.with_federation(federation.clone());
    if let Some(replica) = replica {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&replica.url)
            .unwrap_or_else(|e| panic!("bad read replica URL: {e}"));
        state = state.with_reads(ReadPool::with_replica(
            db.pool.clone(),
            pool,
            replica.max_lag,
        ));
    }
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    TestApp {
        federation,
        interpreter,
        delivery,
        erasure,
        upstream,
        app: App::new(store.clone(), &base_url),
        base_url,
        database_url: db.url,
        pool: db.pool,
        store,
        projections,
        client,
        server,
    }
}

impl TestApp {
    /// Creates an account the way `chorus accounts create` does, and waits
    /// until the read models show it.
    pub async fn account(&self, handle: &str, locked: bool) -> Account {
        let created = self
            .app
            .create_account(handle, Some(format!("{handle} display")), locked, false)
            .await
            .unwrap_or_else(|e| panic!("cannot create {handle}: {e}"));
        self.settle().await;
        Account {
            handle: handle.to_owned(),
            uri: created.actor.uri,
            token: created.token.secret,
        }
    }

    /// Waits until the interpreter and every projection have processed the
    /// whole log, including what the interpreter appended.
    pub async fn settle(&self) {
        let mut settled = chorus_domain::Position::START;
        loop {
            // The last committed event, read directly: subscriptions only
            // pass it once the cluster's oldest running transaction (of any
            // test's database) has ended, and must then be waited for.
            let last = last_committed(&self.pool).await;
            if last == settled {
                return;
            }
            if let Some(interpreter) = &self.interpreter {
                assert!(
                    interpreter.reached(last, Duration::from_secs(10)).await,
                    "the interpreter did not catch up"
                );
            }
            assert!(
                self.projections
                    .wait_for(last, Duration::from_secs(10))
                    .await,
                "projections did not catch up"
            );
            assert!(
                self.delivery
                    .planner
                    .reached(last, Duration::from_secs(10))
                    .await,
                "delivery planning did not catch up"
            );
            assert!(
                self.erasure.reached(last, Duration::from_secs(10)).await,
                "the erasure did not catch up"
            );
            settled = last;
        }
    }

    /// Starts the interpreter from its checkpoint (see
    /// [`spawn_app_without_interpreter`]).
    pub async fn start_interpreter(&mut self) {
        self.interpreter = Some(
            Interpreter::start(self.app.clone(), self.federation.clone())
                .await
                .unwrap_or_else(|e| panic!("cannot start the interpreter: {e}")),
        );
    }

    /// Runs a GraphQL request, as `token`'s owner if given; returns the whole response.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.base_url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("graphql request failed: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("graphql response is not JSON: {e}"))
    }

    /// Runs a GraphQL request that must succeed; returns `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let response = self.graphql(token, query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "GraphQL errors: {response}"
        );
        response["data"].clone()
    }

    /// Runs a GraphQL request that must fail; returns the first error's code.
    pub async fn error_code(&self, token: Option<&str>, query: &str, variables: Value) -> String {
        let response = self.graphql(token, query, variables).await;
        response["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error, got {response}"))
            .to_owned()
    }

    /// GETs an ActivityPub document as JSON.
    pub async fn activitypub(&self, url: &str) -> (reqwest::StatusCode, Value) {
        let response = self
            .client
            .get(url)
            .header("Accept", "application/activity+json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// The position of the last committed event of the log, read directly (a
/// subscription passes it only once older running transactions end).
pub async fn last_committed(pool: &PgPool) -> chorus_domain::Position {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id, seq FROM events ORDER BY transaction_id DESC, seq DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    row.map_or(chorus_domain::Position::START, |(major, minor)| {
        chorus_domain::Position::new(major.unsigned_abs(), minor.unsigned_abs())
    })
}
