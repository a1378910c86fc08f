//! `CHORUS_EVENT_STORE` (`event_store` in the file): which log Chorus keeps
//! its events in.

use std::fmt;

use url::Url;

use super::{ConfigError, Secret};

/// Where the event log lives.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum EventStoreSetting {
    /// The Postgres database's own `events` table (the default).
    #[default]
    Postgres,
    /// A KurrentDB server: a `kurrentdb://`, `esdb://` (or `+discover`)
    /// connection string, which may carry a password.
    KurrentDb(Secret),
    /// Another Postgres database (`postgres://…`), holding Chorus' schema:
    /// the log of record, which this database's log mirrors.
    Database(Secret),
}

impl EventStoreSetting {
    /// Parses the setting `name` (for messages): `postgres`, a KurrentDB
    /// connection string or another Postgres database's URL.
    pub fn parse(name: &'static str, value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        if value == "postgres" {
            return Ok(Self::Postgres);
        }
        let fail = |reason: &str| ConfigError::EventStore {
            name,
            value: redact(value),
            reason: reason.to_owned(),
        };
        let Some((scheme, rest)) = value.split_once("://") else {
            return Err(fail(
                "expected `postgres`, a KurrentDB connection string (kurrentdb://host:2113?tls=false) or another Postgres database's URL (postgres://…)",
            ));
        };
        if matches!(scheme, "postgres" | "postgresql") {
            let url = Url::parse(value).map_err(|e| fail(&e.to_string()))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(fail("it needs a host"));
            }
            return Ok(Self::Database(Secret::new(value)));
        }
        if !matches!(
            scheme,
            "kurrentdb"
                | "kurrent"
                | "esdb"
                | "kurrentdb+discover"
                | "kurrent+discover"
                | "esdb+discover"
        ) {
            return Err(fail(
                "the scheme must be kurrentdb://, esdb:// or postgres:// (or `postgres` for the database's own log)",
            ));
        }
        // Clusters list their seeds as `host1:2113,host2:2113`, which is no
        // URL host: only single-host strings are checked further.
        let hosts = rest.split(['/', '?']).next().unwrap_or_default();
        let hosts = hosts.rsplit('@').next().unwrap_or_default();
        if hosts.is_empty() {
            return Err(fail("it needs a host"));
        }
        if !hosts.contains(',') {
            Url::parse(value).map_err(|e| fail(&e.to_string()))?;
        }
        Ok(Self::KurrentDb(Secret::new(value)))
    }

    /// The setting as it may be shown: `postgres`, or the connection string
    /// with its password replaced by `***`.
    pub fn display(&self) -> String {
        match self {
            Self::Postgres => "postgres".to_owned(),
            Self::KurrentDb(url) | Self::Database(url) => redact(url.expose()),
        }
    }

    /// The URL of the external log of record, if the log is not the
    /// database's own.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            Self::Postgres => None,
            Self::KurrentDb(url) | Self::Database(url) => Some(url.expose()),
        }
    }
}

impl fmt::Debug for EventStoreSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// `value` with the password of its credentials, if any, replaced by `***`.
pub fn redact(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Result<&str, &str>) {
        match (
            EventStoreSetting::parse("CHORUS_EVENT_STORE", value),
            expected,
        ) {
            (Ok(setting), Ok(shown)) => assert_eq!(setting.display(), shown, "{value}"),
            (Err(error), Err(says)) => {
                let error = error.to_string();
                assert!(error.contains(says), "{value}: {error}");
                assert!(!error.contains("hunter2"), "{value}: {error}");
            }
            (got, want) => panic!("{value}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn postgres_or_kurrentdb_urls_and_never_a_password() {
        check("postgres", Ok("postgres"));
        check(
            "kurrentdb://127.0.0.1:2113?tls=false",
            Ok("kurrentdb://127.0.0.1:2113?tls=false"),
        );
        check(
            "esdb://admin:hunter2@db.example:2113",
            Ok("esdb://admin:***@db.example:2113"),
        );
        check(
            "esdb+discover://admin:hunter2@a:2113,b:2113?tls=false",
            Ok("esdb+discover://admin:***@a:2113,b:2113?tls=false"),
        );
        check("kurrent", Err("expected `postgres`"));
        check("mysql://u:hunter2@db/x", Err("the scheme must be"));
        check("postgres://u:hunter2@db/x", Ok("postgres://u:***@db/x"));
        check(
            "postgresql://db.example/chorus",
            Ok("postgresql://db.example/chorus"),
        );
        check("postgres:///x", Err("needs a host"));
        check("kurrentdb://u:hunter2@", Err("needs a host"));
        check("kurrentdb://u:hunter2@db:99999", Err("invalid port"));
    }
}
