//! Polling for what happens asynchronously (deliveries, projections,
//! another server's interpreter), with a deadline and a message that says
//! what was seen instead.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::app::TestApp;

/// Polls `probe` until it answers `Ok`, for up to `deadline`; its `Err`
/// says what it saw instead, for the failure message.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = Instant::now() + deadline;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= until => {
                panic!("{what}: still {seen} after {deadline:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Polls `check` every 50 ms until it holds, for up to `secs` seconds;
/// fails with `what` then.
pub async fn until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one nullable text `sql` answers on `app` (`None` without a row),
/// with `binds` as its text parameters.
pub async fn text(app: &TestApp, sql: &str, binds: &[&str]) -> Option<String> {
    let mut query = sqlx::query_scalar::<_, Option<String>>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    query
        .fetch_optional(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .flatten()
}

/// Waits (up to `deadline`) until `sql` answers `expected` on `app`.
pub async fn until_sql(
    app: &TestApp,
    deadline: Duration,
    expected: Option<&str>,
    sql: &str,
    binds: &[&str],
) {
    eventually(
        &format!("{} {sql} {binds:?}", app.base_url),
        deadline,
        || async {
            let got = text(app, sql, binds).await;
            if got.as_deref() == expected {
                Ok(())
            } else {
                Err(format!("{got:?}, not {expected:?}"))
            }
        },
    )
    .await;
}

/// Waits (up to `deadline`) until the GraphQL `query`, run on `app` as
/// `token`'s owner, answers data that `check` accepts; returns the data.
pub async fn until_graphql(
    app: &TestApp,
    deadline: Duration,
    token: Option<&str>,
    query: &str,
    variables: Value,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("{} {query} {variables}", app.base_url);
    eventually(&what, deadline, || async {
        let data = app.ok(token, query, variables.clone()).await;
        if check(&data) {
            Ok(data)
        } else {
            Err(data.to_string())
        }
    })
    .await
}
