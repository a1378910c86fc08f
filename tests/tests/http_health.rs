//! Health and readiness through the real router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chorus_api::http::{AppState, router};
use chorus_postgres::PgEventStore;
use chorus_tests::pg::{empty_db, test_db};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn base() -> url::Url {
    url::Url::parse("http://127.0.0.1:8080").unwrap_or_else(|e| panic!("{e}"))
}

async fn get(app: axum::Router, path: &str) -> (StatusCode, serde_json::Value) {
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap_or_default())
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn readyz_is_ready_once_migrations_are_applied() {
    let db = test_db().await;
    let app = router(AppState::new(
        db.pool.clone(),
        PgEventStore::new(db.pool.clone()),
        &base(),
    ));
    assert_eq!(get(app.clone(), "/healthz").await.0, StatusCode::OK);
    let (status, body) = get(app, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_reports_pending_migrations() {
    let db = empty_db().await;
    let app = router(AppState::new(
        db.pool.clone(),
        PgEventStore::new(db.pool.clone()),
        &base(),
    ));
    let (status, body) = get(app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reason"], "migrations pending");
    assert!(body["pending"].as_array().is_some_and(|p| !p.is_empty()));
}

#[tokio::test]
async fn readyz_reports_an_unreachable_database() {
    let db = test_db().await;
    let app = router(AppState::new(
        db.pool.clone(),
        PgEventStore::new(db.pool.clone()),
        &base(),
    ));
    db.pool.close().await;
    let (status, body) = get(app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reason"], "database unreachable");
}
