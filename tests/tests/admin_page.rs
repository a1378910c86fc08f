//! The admin dashboard at `/admin`, driven in a real headless Chromium
//! through chromedriver (Debian's `chromium` and `chromium-driver`, which
//! `scripts/ensure-chromium` installs): signing in, the projections, a
//! rebuild followed to its end, and the refusal of a token that is not an
//! admin's.

use std::process::Stdio;
use std::time::Duration;

use chorus_tests::app::{TestApp, spawn_app};
use chorus_tests::history::admin;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

/// A chromedriver of this test's own, on a free port of 127.0.0.1; stopped
/// when dropped.
struct Driver {
    url: String,
    _process: Child,
}

fn installed(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

async fn driver() -> Driver {
    let (Some(chromedriver), Some(_)) = (installed("chromedriver"), installed("chromium")) else {
        panic!(
            "the browser tests need Debian's chromium and chromium-driver: \
             run scripts/ensure-chromium (scripts/test does) or apt-get install chromium chromium-driver"
        );
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"));
    let process = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let http = reqwest::Client::new();
    loop {
        if let Ok(response) = http.get(format!("{url}/status")).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not answer on {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver {
        url,
        _process: process,
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": [
                "--headless=new",
                // Root in a container: Chromium's sandbox cannot start there.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}"))
}

/// Waits until the element at `css` has text for which `done` holds;
/// returns that text.
async fn text_when(client: &Client, css: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        // Found afresh each time: the page replaces its rows as it refreshes.
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if done(&text) {
                return text;
            }
            last = text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never showed what was awaited; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(client: &Client, app: &TestApp, token: &str) {
    client
        .goto(&format!("{}/admin", app.base_url))
        .await
        .unwrap_or_else(|e| panic!("cannot open /admin: {e}"));
    let field = client
        .wait()
        .for_element(Locator::Id("token"))
        .await
        .unwrap_or_else(|e| panic!("no token field: {e}"));
    field
        .send_keys(token)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .find(Locator::Id("login-button"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn the_page_is_served_under_a_strict_content_security_policy() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/admin", "text/html"),
        ("/admin/admin.js", "text/javascript"),
        ("/admin/admin.css", "text/css"),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.base_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    let page = app
        .client
        .get(format!("{}/admin", app.base_url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    // The only script is the file; no inline script or handler.
    assert_eq!(page.matches("<script").count(), 1);
    assert!(page.contains("<script src=\"/admin/admin.js\" defer></script>"));
    let handlers = page.split(" on").skip(1).any(|rest| {
        let name = rest.chars().take_while(char::is_ascii_alphabetic).count();
        name > 0 && rest[name..].starts_with('=')
    });
    assert!(!handlers, "no inline event handlers");
    let script = app
        .client
        .get(format!("{}/admin/admin.js", app.base_url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(!script.contains("innerHTML"), "data is written as text");
}

#[tokio::test]
async fn an_admin_signs_in_sees_the_projections_and_rebuilds_one() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let driver = driver().await;
    let client = browser(&driver).await;
    sign_in(&client, &app, &root.token).await;

    // Every projection, with its lag.
    let row = "#projections tr[data-projection=\"instances\"]";
    text_when(&client, row, |t| t.contains("instances")).await;
    let rows = client
        .find_all(Locator::Css("#projections tr"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), chorus_projections::all().len());
    let status = format!("{row} .rebuild-status");
    assert_eq!(text_when(&client, &status, |_| true).await, "never");

    client
        .find(Locator::Css(&format!("{row} button.rebuild")))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let finished = text_when(&client, &status, |t| {
        t.starts_with("finished") || t.starts_with("failed")
    })
    .await;
    assert!(finished.starts_with("finished: swapped in"), "{finished}");
    // The server agrees.
    let state: String =
        sqlx::query_scalar("SELECT state FROM projection_rebuilds WHERE projection = 'instances'")
            .fetch_one(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state, "swapped");
    // The recent events show the rebuild, as the log has it.
    text_when(&client, "#events", |t| {
        t.contains("ProjectionRebuildFinished")
    })
    .await;
    assert_eq!(
        client
            .find(Locator::Id("events-error"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default(),
        ""
    );
    assert_eq!(
        client
            .find(Locator::Id("projections-error"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default(),
        ""
    );
    let _ = client.close().await;
}

#[tokio::test]
async fn a_token_that_is_not_an_admins_is_refused() {
    let app = spawn_app().await;
    let alice = app.account("alice", false).await;
    let driver = driver().await;
    let client = browser(&driver).await;

    sign_in(&client, &app, &alice.token).await;
    let refusal = text_when(&client, "#login-status", |t| t.contains("not an admin")).await;
    assert!(refusal.contains("not an admin"), "{refusal}");
    let dashboard = client
        .find(Locator::Id("dashboard"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !dashboard.is_displayed().await.unwrap_or(true),
        "the dashboard stays hidden"
    );

    sign_in(&client, &app, "not-a-token").await;
    text_when(&client, "#login-status", |t| {
        t.contains("invalid or revoked")
    })
    .await;
    let _ = client.close().await;
}
