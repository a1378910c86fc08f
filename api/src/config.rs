//! Settings: loaded once at start-up from an optional TOML file, then
//! environment variables, and passed explicitly to whatever needs them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

pub mod event_store;
pub use event_store::EventStoreSetting;

/// A value that must never reach a log: its `Debug` and `Display` print a placeholder.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; only for handing to the component that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything Chorus can be configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The Postgres database; without it, a private cluster in `data_dir` is used.
    pub database_url: Option<Secret>,
    /// The address the HTTP server listens on.
    pub bind: SocketAddr,
    /// The public origin used in every ActivityPub id (no path).
    pub base_url: Url,
    /// Where the private Postgres cluster lives.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub federation: FederationSettings,
    /// Where the event log lives (`CHORUS_EVENT_STORE`).
    pub event_store: EventStoreSetting,
    pub read_replica: ReadReplicaSettings,
}

/// A Postgres read replica (a streaming standby of the database) for
/// GraphQL queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadReplicaSettings {
    /// The replica; without it, every read goes to the primary.
    pub url: Option<Secret>,
    /// The most the replica may lag behind the primary, in milliseconds,
    /// for queries to read from it; beyond that they read from the primary.
    pub max_lag_ms: u64,
}

impl Default for ReadReplicaSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_lag_ms: 2000,
        }
    }
}

/// How Chorus talks to other servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationSettings {
    /// Let remote fetches reach loopback and private addresses (tests, and
    /// federation between servers on one machine). Off by default: it would
    /// let any remote server make Chorus probe the local network.
    pub allow_private_addresses: bool,
    /// How far a signed request's Date (or `created`) may be from our clock.
    pub signature_window_secs: u64,
    /// The largest inbox request body accepted.
    pub inbox_body_limit: usize,
    /// Inbox requests per second allowed from one remote instance, and from
    /// one IP address (each with a burst of five times as many).
    pub inbox_rate_per_instance: u32,
    pub inbox_rate_per_ip: u32,
    /// Run delivery workers inside `chorus serve` (on by default); turn off
    /// when separate `chorus worker` processes do the sending.
    pub delivery_in_process: bool,
    /// Each remote request (a fetch, a delivery) as a whole, in seconds.
    pub request_timeout_secs: u64,
    /// Deliveries in flight at once per process, and per remote host.
    pub delivery_concurrency: usize,
    pub delivery_per_host: usize,
    /// How long a claimed delivery stays reserved to its worker; after a
    /// crash, its jobs are sent again once this runs out. At least twice
    /// the request timeout (a delivery may be tried with two signatures).
    pub delivery_lease_secs: u64,
    /// Host names remote requests reach at these addresses instead of
    /// asking DNS (the port still comes from the URL): for several servers
    /// under their own names on one machine, as tests run them. Not read
    /// from the file or the environment; empty otherwise.
    pub resolve: Vec<(String, std::net::IpAddr)>,
}

impl Default for FederationSettings {
    fn default() -> Self {
        Self {
            allow_private_addresses: false,
            signature_window_secs: 3600,
            inbox_body_limit: 1024 * 1024,
            inbox_rate_per_instance: 200,
            inbox_rate_per_ip: 200,
            delivery_in_process: true,
            request_timeout_secs: 10,
            delivery_concurrency: 128,
            delivery_per_host: 8,
            delivery_lease_secs: 120,
            resolve: Vec::new(),
        }
    }
}

/// The TOML file: every field optional, unknown ones refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<Secret>,
    bind: Option<String>,
    base_url: Option<String>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    allow_private_addresses: Option<bool>,
    signature_window_secs: Option<u64>,
    inbox_body_limit: Option<usize>,
    inbox_rate_per_instance: Option<u32>,
    inbox_rate_per_ip: Option<u32>,
    delivery_in_process: Option<bool>,
    request_timeout_secs: Option<u64>,
    delivery_concurrency: Option<usize>,
    delivery_per_host: Option<usize>,
    delivery_lease_secs: Option<u64>,
    event_store: Option<String>,
    database_read_url: Option<Secret>,
    read_max_lag_ms: Option<u64>,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{name}: `{value}` is not a listen address such as 127.0.0.1:8080")]
    Bind { name: &'static str, value: String },
    #[error("{name}: `{value}` is not a valid base URL: {reason}")]
    BaseUrl {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("{name}: `{value}` must be `text` or `json`")]
    LogFormat { name: &'static str, value: String },
    #[error("{name}: `{value}` is not an event store: {reason}")]
    EventStore {
        name: &'static str,
        /// Shown with its password replaced.
        value: String,
        reason: String,
    },
    #[error("{name}: `{value}` is not {expected}")]
    Value {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl Settings {
    /// Loads the settings: defaults, then the TOML file at `file` (if any),
    /// then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, |name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// [`Settings::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<FileSettings>(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?
            }
            None => FileSettings::default(),
        };

        let bind = match env("CHORUS_BIND") {
            Some(value) => parse_bind("CHORUS_BIND", value)?,
            None => match from_file.bind {
                Some(value) => parse_bind("bind", value)?,
                None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            },
        };
        let base_url = match env("CHORUS_BASE_URL") {
            Some(value) => parse_base_url("CHORUS_BASE_URL", value)?,
            None => match from_file.base_url {
                Some(value) => parse_base_url("base_url", value)?,
                None => parse_base_url("base_url", "http://localhost:8080".into())?,
            },
        };
        let log_format = match env("CHORUS_LOG_FORMAT") {
            Some(value) => match value.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::LogFormat {
                        name: "CHORUS_LOG_FORMAT",
                        value,
                    });
                }
            },
            None => from_file.log_format.unwrap_or_default(),
        };
        let defaults = FederationSettings::default();
        let federation = FederationSettings {
            allow_private_addresses: setting(
                &env,
                "CHORUS_ALLOW_PRIVATE_ADDRESSES",
                from_file.allow_private_addresses,
                defaults.allow_private_addresses,
                "true or false",
            )?,
            signature_window_secs: setting(
                &env,
                "CHORUS_SIGNATURE_WINDOW_SECS",
                from_file.signature_window_secs,
                defaults.signature_window_secs,
                "a number of seconds",
            )?,
            inbox_body_limit: setting(
                &env,
                "CHORUS_INBOX_BODY_LIMIT",
                from_file.inbox_body_limit,
                defaults.inbox_body_limit,
                "a number of bytes",
            )?,
            inbox_rate_per_instance: setting(
                &env,
                "CHORUS_INBOX_RATE_PER_INSTANCE",
                from_file.inbox_rate_per_instance,
                defaults.inbox_rate_per_instance,
                "a number of requests per second",
            )?,
            inbox_rate_per_ip: setting(
                &env,
                "CHORUS_INBOX_RATE_PER_IP",
                from_file.inbox_rate_per_ip,
                defaults.inbox_rate_per_ip,
                "a number of requests per second",
            )?,
            delivery_in_process: setting(
                &env,
                "CHORUS_DELIVERY_IN_PROCESS",
                from_file.delivery_in_process,
                defaults.delivery_in_process,
                "true or false",
            )?,
            request_timeout_secs: setting(
                &env,
                "CHORUS_REQUEST_TIMEOUT_SECS",
                from_file.request_timeout_secs,
                defaults.request_timeout_secs,
                "a number of seconds",
            )?,
            delivery_concurrency: setting(
                &env,
                "CHORUS_DELIVERY_CONCURRENCY",
                from_file.delivery_concurrency,
                defaults.delivery_concurrency,
                "a number of requests",
            )?,
            delivery_per_host: setting(
                &env,
                "CHORUS_DELIVERY_PER_HOST",
                from_file.delivery_per_host,
                defaults.delivery_per_host,
                "a number of requests",
            )?,
            delivery_lease_secs: setting(
                &env,
                "CHORUS_DELIVERY_LEASE_SECS",
                from_file.delivery_lease_secs,
                defaults.delivery_lease_secs,
                "a number of seconds",
            )?,
            resolve: defaults.resolve,
        };
        let event_store = match env("CHORUS_EVENT_STORE") {
            Some(value) => EventStoreSetting::parse("CHORUS_EVENT_STORE", &value)?,
            None => match from_file.event_store {
                Some(value) => EventStoreSetting::parse("event_store", &value)?,
                None => EventStoreSetting::Postgres,
            },
        };
        let read_replica = ReadReplicaSettings {
            url: env("DATABASE_READ_URL")
                .map(Secret::new)
                .or(from_file.database_read_url),
            max_lag_ms: setting(
                &env,
                "CHORUS_READ_MAX_LAG_MS",
                from_file.read_max_lag_ms,
                ReadReplicaSettings::default().max_lag_ms,
                "a number of milliseconds",
            )?,
        };
        Ok(Self {
            event_store,
            federation,
            read_replica,
            database_url: env("DATABASE_URL")
                .map(Secret::new)
                .or(from_file.database_url),
            bind,
            base_url,
            data_dir: env("CHORUS_DATA_DIR")
                .map(PathBuf::from)
                .or(from_file.data_dir)
                .unwrap_or_else(|| default_data_dir(&env)),
            log_format,
        })
    }
}

/// A setting from the environment (`name`), else the file, else the default.
fn setting<T: std::str::FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    from_file: Option<T>,
    default: T,
    expected: &'static str,
) -> Result<T, ConfigError> {
    match env(name) {
        Some(value) => value.trim().parse().map_err(|_| ConfigError::Value {
            name,
            value,
            expected,
        }),
        None => Ok(from_file.unwrap_or(default)),
    }
}

fn parse_bind(name: &'static str, value: String) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Bind { name, value })
}

fn parse_base_url(name: &'static str, value: String) -> Result<Url, ConfigError> {
    let fail = |reason: &str| ConfigError::BaseUrl {
        name,
        value: value.clone(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(&value).map_err(|e| fail(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(fail("it needs a host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(fail(
            "it must be an origin, without path, query or fragment",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail("it must not carry credentials"));
    }
    Ok(url)
}

/// Root's private cluster must live where the `postgres` user can reach it,
/// which rules out root's home directory.
fn default_data_dir(env: &impl Fn(&str) -> Option<String>) -> PathBuf {
    if env("USER").as_deref() == Some("root") || is_root() {
        return PathBuf::from("/var/lib/chorus");
    }
    if let Some(xdg) = env("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("chorus");
    }
    match env("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/chorus"),
        None => PathBuf::from("chorus-data"),
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dir = std::env::temp_dir().join(format!("chorus-config-{}", std::process::id()));
        let path = file.map(|text| {
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{:x}.toml", text.len() ^ text.as_ptr() as usize));
            let _ = std::fs::write(&path, text);
            path
        });
        Settings::load_from(path.as_deref(), |k| env.get(k).cloned())
    }

    #[test]
    fn defaults_apply_without_file_or_environment() {
        let s = load(None, &[("HOME", "/home/u"), ("USER", "u")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.bind, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(s.base_url.as_str(), "http://localhost:8080/");
        assert_eq!(s.database_url, None);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.federation, FederationSettings::default());
        assert_eq!(s.read_replica, ReadReplicaSettings::default());
    }

    #[test]
    fn the_read_replica_comes_from_the_file_or_the_environment() {
        let file =
            "database_read_url = \"postgres://u:file@replica/chorus\"\nread_max_lag_ms = 500\n";
        let s = load(Some(file), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.read_replica.url.as_ref().map(Secret::expose),
            Some("postgres://u:file@replica/chorus")
        );
        assert_eq!(s.read_replica.max_lag_ms, 500);
        let s = load(
            Some(file),
            &[
                ("DATABASE_READ_URL", "postgres://u:hunter2@other/chorus"),
                ("CHORUS_READ_MAX_LAG_MS", "250"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.read_replica.max_lag_ms, 250);
        assert!(!format!("{s:?}").contains("hunter2"));
        match load(None, &[("CHORUS_READ_MAX_LAG_MS", "soon")]) {
            Err(e) => assert!(e.to_string().starts_with("CHORUS_READ_MAX_LAG_MS")),
            Ok(s) => panic!("accepted {s:?}"),
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let file = "bind = \"127.0.0.1:9000\"\nbase_url = \"https://file.example\"\ndata_dir = \"/srv/chorus\"\n";
        let s = load(Some(file), &[("CHORUS_BASE_URL", "http://127.0.0.1:4321")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.base_url.as_str(), "http://127.0.0.1:4321/");
        assert_eq!(s.data_dir, PathBuf::from("/srv/chorus"));
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let err = |file: Option<&str>, env: &[(&str, &str)]| match load(file, env) {
            Err(e) => e.to_string(),
            Ok(s) => panic!("accepted {s:?}"),
        };
        assert!(err(None, &[("CHORUS_BIND", "localhost")]).starts_with("CHORUS_BIND"));
        assert!(err(None, &[("CHORUS_BASE_URL", "ftp://x.example")]).contains("scheme"));
        assert!(err(None, &[("CHORUS_BASE_URL", "https://x.example/sub")]).contains("origin"));
        assert!(err(None, &[("CHORUS_LOG_FORMAT", "xml")]).contains("CHORUS_LOG_FORMAT"));
        assert!(
            err(None, &[("CHORUS_ALLOW_PRIVATE_ADDRESSES", "yes please")])
                .starts_with("CHORUS_ALLOW_PRIVATE_ADDRESSES")
        );
        assert!(err(None, &[("CHORUS_INBOX_BODY_LIMIT", "-1")]).contains("bytes"));
        assert!(err(Some("bindd = 1"), &[]).contains("not valid"));
    }

    #[test]
    fn the_database_url_never_shows_in_debug_output() {
        let s = load(None, &[("DATABASE_URL", "postgres://u:hunter2@db/chorus")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            s.database_url.as_ref().map(Secret::expose),
            Some("postgres://u:hunter2@db/chorus")
        );
    }
}
