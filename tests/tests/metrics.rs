//! `GET /metrics`: valid Prometheus text, whose numbers follow what
//! happens: events appended, subscribers behind, inbox verdicts, deliveries
//! and their queue, rebuilds.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chorus_api::history::rebuilds;
use chorus_domain::Position;
use chorus_postgres::checkpoints;
use chorus_tests::app::{TestApp, last_committed, spawn_app};
use chorus_tests::outbound::{deliveries, follow, remote_follower, trust_local};
use chorus_tests::remote::RemoteServer;
use chorus_tests::sink::Sink;
use serde_json::json;
use tokio::sync::watch;

/// Samples by name and labels (`name{a="1",b="2"}`, labels sorted).
type Samples = HashMap<String, f64>;

/// Parses the text exposition format strictly: every sample's family has
/// a `# TYPE` (of a known kind) and a `# HELP` before it, names and labels
/// are well formed, values are numbers, no sample is given twice.
fn parse(text: &str) -> Samples {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut typed = HashSet::new();
    let mut helped = HashSet::new();
    let mut samples = Samples::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad TYPE line: {line}"));
            assert!(name_ok(name), "bad metric name: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type: {line}"
            );
            assert!(typed.insert(name.to_owned()), "family typed twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(name_ok(name), "bad HELP line: {line}");
            helped.insert(name.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (name, labels_of(body, line))
            }
        };
        assert!(name_ok(name), "bad metric name: {line}");
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        assert!(helped.contains(name), "sample before its HELP: {line}");
        let mut labels = labels;
        labels.sort();
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let joined: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", joined.join(","))
        };
        assert!(
            samples.insert(key, value).is_none(),
            "sample given twice: {line}"
        );
    }
    samples
}

/// `a="1",b="x\"y"` as pairs, unescaped.
fn labels_of(body: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label: {line}"));
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name: {line}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => panic!("bad escape: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

async fn scrape(app: &TestApp) -> Samples {
    let response = app
        .client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap_or_default();
    parse(&text)
}

fn get(samples: &Samples, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or_else(|| {
        let mut known: Vec<&String> = samples.keys().collect();
        known.sort();
        panic!("no sample {key}; have {known:?}")
    })
}

#[test]
fn the_parser_refuses_what_is_not_prometheus_text() {
    for bad in [
        "chorus_x 1",                          // no TYPE
        "# TYPE chorus_x counter\nchorus_x 1", // no HELP
        "# HELP chorus_x x\n# TYPE chorus_x counter\nchorus_x one",
        "# HELP chorus_x x\n# TYPE chorus_x counter\nchorus_x{a=\"1} 1",
        "# HELP chorus_x x\n# TYPE chorus_x counter\nchorus_x 1\nchorus_x 2",
        "# HELP chorus_x x\n# TYPE chorus_x countr\nchorus_x 1",
    ] {
        let refused = std::panic::catch_unwind(|| parse(bad)).is_err();
        assert!(refused, "accepted: {bad:?}");
    }
    let good =
        parse("# HELP chorus_x x\n# TYPE chorus_x gauge\nchorus_x{b=\"2\",a=\"q\\\"\\\\\"} 1.5\n");
    assert_eq!(good.get("chorus_x{a=\"q\"\\\",b=\"2\"}"), Some(&1.5));
}

#[tokio::test]
async fn metrics_parse_and_follow_the_log_subscribers_and_rebuilds() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    // Subscribers that had nothing to do store their checkpoint once idle
    // for a second; then every one of them shows, caught up.
    let subscribers = [
        "actors",
        "activity_stats",
        "interpreter",
        "deliveries",
        "erasure",
    ];
    let lag_of = |s: &str| format!("chorus_subscriber_lag_events{{subscriber=\"{s}\"}}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let now = scrape(&app).await;
        if subscribers
            .iter()
            .all(|s| now.get(&lag_of(s)).is_some_and(|lag| *lag == 0.0))
        {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscribers missing or behind: {:?}",
            subscribers.map(|s| now.get(&lag_of(s)).copied())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for subscriber in subscribers {
        assert_eq!(
            get(&before, &lag_of(subscriber)),
            0.0,
            "{subscriber} is caught up"
        );
    }
    assert_eq!(
        get(&before, "chorus_events_total{type=\"ActorRegistered\"}"),
        1.0
    );
    assert!(!before.contains_key("chorus_events_total{type=\"PostCreated\"}"));
    assert_eq!(get(&before, "chorus_metrics_database_up"), 1.0);

    // Events appended are counted by type.
    for text in ["one", "two"] {
        app.ok(
            Some(&alice.token),
            "mutation($t: String!) { createPost(input: { text: $t }) { id } }",
            json!({ "t": text }),
        )
        .await;
    }
    app.settle().await;
    let after = scrape(&app).await;
    assert_eq!(
        get(&after, "chorus_events_total{type=\"PostCreated\"}"),
        2.0
    );

    // A subscriber behind the log shows its lag, in events and in seconds.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    checkpoints::save(&app.pool, "report_exporter", Position::START)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let behind = scrape(&app).await;
    #[allow(clippy::cast_precision_loss)]
    let all = events as f64;
    assert_eq!(
        get(
            &behind,
            "chorus_subscriber_lag_events{subscriber=\"report_exporter\"}"
        ),
        all
    );
    assert!(
        get(
            &behind,
            "chorus_subscriber_lag_seconds{subscriber=\"report_exporter\"}"
        ) > 0.0
    );
    checkpoints::save(
        &app.pool,
        "report_exporter",
        last_committed(&app.pool).await,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let caught_up = scrape(&app).await;
    assert_eq!(
        get(
            &caught_up,
            "chorus_subscriber_lag_events{subscriber=\"report_exporter\"}"
        ),
        0.0
    );
    assert_eq!(
        get(
            &caught_up,
            "chorus_subscriber_lag_seconds{subscriber=\"report_exporter\"}"
        ),
        0.0
    );

    // A rebuild shows its progress, then its end.
    assert!(!caught_up.contains_key("chorus_rebuild_running{projection=\"posts\"}"));
    let started = rebuilds::start(&app.store, &["posts".to_owned()], "cli")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let running = scrape(&app).await;
    assert_eq!(
        get(&running, "chorus_rebuild_running{projection=\"posts\"}"),
        1.0
    );
    let (progress, _) = watch::channel((0, 0));
    rebuilds::run(&app.store, started, progress)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rebuilt = scrape(&app).await;
    assert_eq!(
        get(&rebuilt, "chorus_rebuild_running{projection=\"posts\"}"),
        0.0
    );
    assert_eq!(
        get(&rebuilt, "chorus_rebuild_events_done{projection=\"posts\"}"),
        2.0
    );
    assert_eq!(
        get(
            &rebuilt,
            "chorus_rebuild_events_total{projection=\"posts\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn metrics_count_inbox_verdicts_and_deliveries_by_host_class() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let remote = RemoteServer::start().await;
    let sink = Sink::start().await;
    trust_local(&app, &sink, &alice.uri).await;

    // An unsigned request is refused, and counted.
    let before = scrape(&app).await;
    let unsigned = "chorus_inbox_refused_total{reason=\"signature\"}";
    let response = app
        .client
        .post(format!("{}/inbox", app.base_url))
        .header("content-type", "application/activity+json")
        .body(r#"{"type": "Follow"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 401);
    let refused = scrape(&app).await;
    assert_eq!(get(&refused, unsigned), get(&before, unsigned) + 1.0);

    // A remote follower: the automatic Accept is delivered (a healthy host).
    let bob = remote_follower(&app, &remote, &sink.base_url, "bob").await;
    follow(&app, &bob, &alice.uri, 1).await;
    deliveries(&sink, 1).await;
    let delivered = "chorus_delivery_attempts_total{class=\"healthy\",outcome=\"delivered\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(&scrape(&app).await, delivered) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted = scrape(&app).await;
    assert_eq!(
        get(
            &accepted,
            "chorus_delivery_queue_pending{class=\"healthy\"}"
        ),
        0.0
    );
    assert_eq!(
        get(
            &accepted,
            "chorus_delivery_queue_pending{class=\"failing\"}"
        ),
        0.0
    );

    // The host fails a post: the attempt is counted as one to retry, and
    // the job waits in the queue of a failing host.
    sink.fail(500, 1);
    app.ok(
        Some(&alice.token),
        "mutation { createPost(input: { text: \"hello\" }) { id } }",
        json!({}),
    )
    .await;
    let retry = "chorus_delivery_attempts_total{class=\"healthy\",outcome=\"retry\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(&app).await;
        // The attempt is counted, then the job and its host are written.
        if get(&now, retry) >= 1.0
            && get(&now, "chorus_delivery_queue_pending{class=\"failing\"}") >= 1.0
        {
            assert_eq!(get(&now, retry), 1.0);
            assert_eq!(
                get(&now, "chorus_delivery_queue_pending{class=\"failing\"}"),
                1.0
            );
            assert_eq!(
                get(&now, "chorus_delivery_queue_pending{class=\"healthy\"}"),
                0.0
            );
            assert_eq!(get(&now, delivered), get(&accepted, delivered));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
