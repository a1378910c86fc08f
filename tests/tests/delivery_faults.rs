//! A remote inbox that first times out, then answers 500 for a while, then
//! recovers: its deliveries arrive after it recovers, by themselves, once
//! each; meanwhile a healthy inbox gets every delivery at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chorus_api::config::FederationSettings;
use chorus_tests::app::{TestApp, spawn_app_delivering};
use chorus_tests::outbound::{deliveries_within, follow, listen, remote_follower, trust_local};
use chorus_tests::remote::RemoteServer;
use chorus_tests::sink::Sink;
use chorus_workers::delivery::SenderOptions;
use chorus_workers::delivery::policy::RetryPolicy;
use serde_json::{Value, json};

/// How the flaky inbox behaves now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Holds every request far beyond Chorus's timeout.
    Hang,
    /// Answers 500.
    Fail,
    Healthy,
}

#[derive(Clone)]
struct Flaky {
    state: Arc<Mutex<FlakyState>>,
}

struct FlakyState {
    mode: Mode,
    /// Requests per mode.
    requests: HashMap<&'static str, usize>,
    /// Activity ids accepted (answered 202), with how often.
    accepted: HashMap<String, usize>,
}

impl Flaky {
    async fn start() -> (Self, String) {
        let flaky = Self {
            state: Arc::new(Mutex::new(FlakyState {
                mode: Mode::Healthy,
                requests: HashMap::new(),
                accepted: HashMap::new(),
            })),
        };
        let app = Router::new()
            .fallback(post(flaky_inbox))
            .with_state(flaky.clone());
        let base = listen(app).await;
        (flaky, base)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlakyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    fn requests(&self, mode: &'static str) -> usize {
        self.lock().requests.get(mode).copied().unwrap_or(0)
    }

    fn accepted(&self) -> HashMap<String, usize> {
        self.lock().accepted.clone()
    }
}

async fn flaky_inbox(State(flaky): State<Flaky>, body: Bytes) -> StatusCode {
    let mode = {
        let mut state = flaky.lock();
        let mode = state.mode;
        let name = match mode {
            Mode::Hang => "hang",
            Mode::Fail => "fail",
            Mode::Healthy => "healthy",
        };
        *state.requests.entry(name).or_default() += 1;
        if mode == Mode::Healthy {
            let activity: Value = serde_json::from_slice(&body).unwrap_or_default();
            let id = activity["id"].as_str().unwrap_or_default().to_owned();
            *state.accepted.entry(id).or_default() += 1;
        }
        mode
    };
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::ACCEPTED
        }
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Healthy => StatusCode::ACCEPTED,
    }
}

async fn until(secs: u64, what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_as(app: &TestApp, token: &str, text: &str) -> String {
    let created = app
        .ok(
            Some(token),
            "mutation($t: String!) { createPost(input: { text: $t }) { uri } }",
            json!({ "t": text }),
        )
        .await;
    format!(
        "{}/activity",
        created["createPost"]["uri"].as_str().unwrap_or_default()
    )
}

#[tokio::test]
async fn a_failing_inbox_gets_its_deliveries_once_it_recovers_and_others_meanwhile() {
    // Production timings scaled down: a 1 s timeout, retries from 200 ms,
    // circuits opening after three failures.
    let options = SenderOptions {
        retry: RetryPolicy {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
            open_after: 3,
            first_open: Duration::from_millis(500),
            max_open: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
        ..SenderOptions::default()
    };
    let app = spawn_app_delivering(
        FederationSettings {
            allow_private_addresses: true,
            request_timeout_secs: 1,
            ..FederationSettings::default()
        },
        options,
    )
    .await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let sink = Sink::start().await;
    trust_local(&app, &sink, &alice.uri).await;
    let (flaky, flaky_base) = Flaky::start().await;
    let healthy = remote_follower(&app, &remote, &sink.base_url, "healthy").await;
    let fragile = remote_follower(&app, &remote, &flaky_base, "fragile").await;
    follow(&app, &healthy, &alice.uri, 1).await;
    follow(&app, &fragile, &alice.uri, 2).await;
    until(10, "the Accept never reached the flaky inbox", || {
        flaky.accepted().len() == 1
    })
    .await;
    deliveries_within(&sink, 1, Duration::from_secs(10)).await;

    // It stops answering: the healthy inbox still gets each post at once.
    flaky.set(Mode::Hang);
    let mut posts = Vec::new();
    for n in 0..3 {
        posts.push(post_as(&app, &alice.token, &format!("while hanging {n}")).await);
        deliveries_within(&sink, 2 + n, Duration::from_secs(3)).await;
    }
    until(10, "the flaky inbox was never tried", || {
        flaky.requests("hang") >= 3
    })
    .await;

    // It answers 500: retried, still nothing accepted, others unaffected.
    flaky.set(Mode::Fail);
    for n in 0..2 {
        posts.push(post_as(&app, &alice.token, &format!("while failing {n}")).await);
        deliveries_within(&sink, 5 + n, Duration::from_secs(3)).await;
    }
    until(15, "the failing inbox was not retried", || {
        flaky.requests("fail") >= 3
    })
    .await;
    // Each failure is recorded once its answer is in.
    let host = flaky_base.trim_start_matches("http://");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (failures, last_error): (i32, Option<String>) = sqlx::query_as(
            "SELECT consecutive_failures, last_error FROM delivery_hosts WHERE host = $1",
        )
        .bind(host)
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        if failures >= 3 && last_error.as_deref().is_some_and(|e| e.contains("500")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{failures} failures recorded, the last: {last_error:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(flaky.accepted().len(), 1, "only the Accept so far");

    // It recovers: every post arrives by itself, once.
    flaky.set(Mode::Healthy);
    until(20, "the posts never reached the recovered inbox", || {
        posts.iter().all(|id| flaky.accepted().contains_key(id))
    })
    .await;
    assert!(
        flaky.accepted().values().all(|n| *n == 1),
        "{:?}",
        flaky.accepted()
    );
    // The healthy inbox got each activity once too.
    let got = sink.deliveries();
    assert_eq!(got.len(), 6, "the Accept and five posts");
    for id in &posts {
        assert_eq!(
            got.iter().filter(|d| d.body["id"] == id.as_str()).count(),
            1
        );
    }
    app.settle().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM delivery_jobs WHERE state <> 'delivered'")
                .fetch_one(&app.pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        if pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} jobs left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failures: i32 =
        sqlx::query_scalar("SELECT consecutive_failures FROM delivery_hosts WHERE host = $1")
            .bind(flaky_base.trim_start_matches("http://"))
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(failures, 0, "the host is healthy again");
}
