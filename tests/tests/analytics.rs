//! The `analytics` schema: its views show the history, keep their comments
//! and grants through rebuilds of the projections under them, and the
//! `activity_stats` projection counts each event once, replayed or not.

use std::time::Duration;

use chorus_api::history::rebuilds;
use chorus_domain::Position;
use chorus_postgres::checkpoints;
use chorus_tests::app::{TestApp, last_committed, spawn_app};
use chorus_tests::history::{activity_stats_against_the_log, some_history};
use chorus_tests::remote::{KeyStyle, RemoteServer, deliver};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

const VIEWS: [&str; 4] = ["daily_activity", "event_totals", "follows", "top_posts"];

/// A history with local actions and a remote actor's follow and like.
async fn history(app: &TestApp) -> (String, RemoteServer) {
    let (alice, ..) = some_history(app).await;
    let remote = RemoteServer::start().await;
    let dora = remote.actor("dora", 0, KeyStyle::Fragment);
    let follow = json!({
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": format!("{}/follows/1", remote.base_url),
        "type": "Follow",
        "actor": dora.uri,
        "object": alice.uri,
    });
    let inbox = format!("{}/users/alice/inbox", app.base_url);
    let (status, body) = deliver(&app.client, &dora, &inbox, &follow).await;
    assert_eq!(status, 202, "{body}");
    app.settle().await;
    (alice.uri, remote)
}

async fn rows(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Everything about the views but their rows: their columns with their
/// comments, the views' own comments, and their grants.
async fn view_catalogue(pool: &PgPool) -> Vec<String> {
    rows(
        pool,
        "SELECT c.relname || '.' || a.attname || ': '
                || coalesce(col_description(c.oid, a.attnum), '<none>')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = 'analytics'
         UNION ALL
         SELECT c.relname || ' (view): ' || coalesce(obj_description(c.oid, 'pg_class'), '<none>')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'analytics'
         UNION ALL
         SELECT table_name || ' granted ' || privilege_type || ' to ' || grantee
         FROM information_schema.role_table_grants
         WHERE table_schema = 'analytics' AND grantee = 'chorus_analytics'
         ORDER BY 1",
    )
    .await
}

/// The views' rows, as text.
async fn view_rows(pool: &PgPool) -> Vec<String> {
    let mut all = Vec::new();
    for view in VIEWS {
        let found = rows(
            pool,
            &format!("SELECT '{view} ' || to_jsonb(v)::text FROM analytics.{view} v ORDER BY 1"),
        )
        .await;
        all.extend(found);
    }
    all
}

#[tokio::test]
async fn the_views_show_the_history_to_a_read_only_role() {
    let app = spawn_app().await;
    let (alice, remote) = history(&app).await;
    let host = &remote.base_url["http://".len()..];

    // Every event of the log is counted once, by day, type and origin.
    assert_eq!(
        activity_stats_against_the_log(&app.pool).await,
        Vec::<String>::new()
    );
    let local_creates = rows(
        &app.pool,
        "SELECT sum(events)::text FROM analytics.daily_activity
         WHERE event_type = 'PostCreated' AND activity_type = 'Create' AND local",
    )
    .await;
    assert_eq!(local_creates, ["4"]);
    // The remote follow: received, interpreted and accepted, from its host.
    let remote_follows = rows(
        &app.pool,
        &format!(
            "SELECT event_type || ' ' || activity_type || ' ' || events FROM analytics.daily_activity
             WHERE remote_host = '{host}' AND NOT local ORDER BY 1"
        ),
    )
    .await;
    assert_eq!(
        remote_follows,
        [
            "ActivityReceived Follow 1",
            "FollowAccepted Accept 1",
            "FollowRequested Follow 1",
        ]
    );

    // The follows graph: dora follows alice, carol waits for bob... (and
    // the rest of some_history).
    let follows_alice = rows(
        &app.pool,
        &format!(
            "SELECT follower || ' ' || state FROM analytics.follows
             WHERE followed = '{alice}' AND since IS NOT NULL ORDER BY 1"
        ),
    )
    .await;
    assert_eq!(follows_alice.len(), 3, "{follows_alice:?}");
    assert!(
        follows_alice
            .iter()
            .any(|f| f.starts_with(&format!("{}/", remote.base_url)) && f.ends_with(" accepted")),
        "{follows_alice:?}"
    );

    // Alice's first post: favorited by bob and carol, reblogged by bob.
    let top = rows(
        &app.pool,
        "SELECT author || ' ' || favorites || ' ' || reblogs FROM analytics.top_posts",
    )
    .await;
    assert_eq!(
        top,
        [format!("{alice} 2 1"), format!("{alice} 1 0")],
        "most favorited and reblogged first"
    );

    // Every view and every column says what it is.
    let undocumented: Vec<String> = view_catalogue(&app.pool)
        .await
        .into_iter()
        .filter(|line| line.ends_with("<none>"))
        .collect();
    assert_eq!(undocumented, Vec::<String>::new());

    // The analytics role reads the views, and nothing else.
    let mut tx = app.pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("SET LOCAL ROLE chorus_analytics")
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for view in VIEWS {
        sqlx::query(&format!("SELECT count(*) FROM analytics.{view}"))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("the analytics role cannot read {view}: {e}"));
    }
    let refused = sqlx::query("SELECT count(*) FROM public.events")
        .execute(&mut *tx)
        .await
        .err()
        .and_then(|e| {
            e.as_database_error()
                .and_then(|d| d.code().map(|c| c.into_owned()))
        });
    assert_eq!(refused.as_deref(), Some("42501"), "the log is not for it");
}

#[tokio::test]
async fn the_views_keep_their_rows_comments_and_grants_through_rebuilds() {
    let app = spawn_app().await;
    history(&app).await;
    let catalogue = view_catalogue(&app.pool).await;
    assert!(
        catalogue
            .iter()
            .any(|l| l.contains("granted SELECT to chorus_analytics")),
        "{catalogue:?}"
    );
    let before = view_rows(&app.pool).await;
    // Rows not counting the admin events the rebuild itself appends.
    let without_admin = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter()
            .filter(|r| !r.contains("\"ProjectionRebuild"))
            .collect()
    };

    let names: Vec<String> = ["follows", "favorites", "reblogs", "posts", "activity_stats"]
        .map(str::to_owned)
        .to_vec();
    let started = rebuilds::start(&app.store, &names, "cli")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (progress, _) = watch::channel((0, 0));
    rebuilds::run(&app.store, started, progress)
        .await
        .unwrap_or_else(|e| panic!("the rebuild failed: {e}"));
    app.settle().await;

    assert_eq!(view_catalogue(&app.pool).await, catalogue);
    assert_eq!(
        without_admin(view_rows(&app.pool).await),
        without_admin(before)
    );
    assert_eq!(
        activity_stats_against_the_log(&app.pool).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn activity_stats_count_each_event_once_when_replayed() {
    let app = spawn_app().await;
    history(&app).await;
    let counted = rows(
        &app.pool,
        "SELECT sum(events)::text FROM analytics.event_totals",
    )
    .await;
    assert_ne!(counted, ["0"]);

    // The checkpoint moved back to the start, as an admin's replay does:
    // the runner applies the whole log again.
    let last = last_committed(&app.pool).await;
    checkpoints::save(&app.pool, "activity_stats", Position::START)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let at = checkpoints::load(&app.pool, "activity_stats")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if at.is_some_and(|p| p >= last) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "activity_stats never applied the log again (at {at:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rows(
            &app.pool,
            "SELECT sum(events)::text FROM analytics.event_totals"
        )
        .await,
        counted
    );
    assert_eq!(
        activity_stats_against_the_log(&app.pool).await,
        Vec::<String>::new()
    );
}
