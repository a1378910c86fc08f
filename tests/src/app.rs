//! A real Chorus HTTP server on 127.0.0.1 with a random port and a database
//! of its own, for end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use chorus_api::app::App;
use chorus_api::http::{AppState, router};
use chorus_postgres::PgEventStore;
use chorus_projections::Projections;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::pg::test_db;

/// A running server.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:PORT`, also the base of every ActivityPub id.
    pub base_url: String,
    pub pool: PgPool,
    pub store: PgEventStore,
    /// The command side, as the `chorus` commands use it.
    pub app: App,
    pub projections: Arc<Projections>,
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

/// Starts a server on a fresh database.
pub async fn spawn_app() -> TestApp {
    let db = test_db().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let base_url = format!("http://127.0.0.1:{port}");
    let store = PgEventStore::new(db.pool.clone());
    let projections = Arc::new(
        Projections::start(store.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot start projections: {e}")),
    );
    let url = url::Url::parse(&base_url).unwrap_or_else(|e| panic!("{e}"));
    let state =
        AppState::with_projections(db.pool.clone(), store.clone(), &url, projections.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    TestApp {
        app: App::new(store.clone(), &base_url),
        base_url,
        pool: db.pool,
        store,
        projections,
        client: reqwest::Client::new(),
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

    /// Waits until every projection has processed the whole log.
    pub async fn settle(&self) {
        let mut last = chorus_domain::Position::START;
        loop {
            let page = chorus_domain::EventStore::read_all(&self.store, last, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            match page.last() {
                Some(e) => last = e.position,
                None => break,
            }
        }
        assert!(
            self.projections
                .wait_for(last, Duration::from_secs(10))
                .await,
            "projections did not catch up"
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
