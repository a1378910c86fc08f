//! Small helpers every projection shares.

use chorus_domain::posts::Visibility;
use chorus_domain::{DomainEvent, RecordedEvent};

use crate::ProjectionError;

/// Reads `event` as a domain event. `Ok(None)` for types the domain does not
/// know, which projections ignore: the log also carries other subsystems'
/// events, and newer types a projection was not written for.
pub(crate) fn decode(event: &RecordedEvent) -> Result<Option<DomainEvent>, ProjectionError> {
    DomainEvent::from_recorded(event).map_err(|source| ProjectionError::decode(event, source))
}

/// The event's log position as the two `bigint` columns of the read models.
///
/// Both parts come from Postgres `bigint`s in the first place (a transaction
/// id and a sequence value), so they always fit; saturating keeps the
/// conversion total without a panic path.
/// A time as bulk statements pass it in JSON: truncated to microseconds, as
/// a bound timestamp is (Postgres would round the nanoseconds instead, and a
/// row written in bulk would differ from the same row written alone).
pub(crate) fn micros(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn position(event: &RecordedEvent) -> (i64, i64) {
    (
        i64::try_from(event.position.major()).unwrap_or(i64::MAX),
        i64::try_from(event.position.minor()).unwrap_or(i64::MAX),
    )
}

/// The value of a `visibility` column, as the schema's CHECK constraint spells it.
pub(crate) fn visibility(visibility: Visibility) -> &'static str {
    match visibility {
        Visibility::Public => "public",
        Visibility::Unlisted => "unlisted",
        Visibility::FollowersOnly => "followers_only",
        Visibility::Direct => "direct",
    }
}

/// The domain of an actor from its id: the lower-cased host, with the port
/// when the id names one other than its scheme's default (`127.0.0.1:3000`).
///
/// That is the domain of the actor's `acct:` (WebFinger) and what mentions
/// write (`@alice@127.0.0.1:3000`); on the usual ports it is the bare host.
/// Actor ids are absolute URLs by construction; for anything else this still
/// returns something deterministic rather than failing, because a
/// projection that refused the event would stop for good.
pub(crate) fn domain_of(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("", uri));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = if host_port.starts_with('[') {
        // An IPv6 literal keeps its brackets.
        match host_port.find(']') {
            Some(end) => (&host_port[..=end], host_port[end + 1..].strip_prefix(':')),
            None => (host_port, None),
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => Some("443"),
        "http" => Some("80"),
        _ => None,
    };
    match port.filter(|p| !p.is_empty() && Some(*p) != default_port) {
        Some(port) => format!("{}:{port}", host.to_ascii_lowercase()),
        None => host.to_ascii_lowercase(),
    }
}

/// A table of one row per (actor, post) interaction: `favorites` (keyed
/// activity id `like_id`) or `reblogs` (`announce_id`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct InteractionTable {
    pub table: &'static str,
    pub activity_id: &'static str,
}

/// One interaction recorded: the facts of the event and when it happened.
pub(crate) struct Interaction<'a> {
    pub actor: &'a str,
    pub post: &'a str,
    pub post_author: &'a str,
    pub activity_id: &'a str,
    pub at: sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc>,
}

impl InteractionTable {
    /// Records an interaction. The pair's row is removed when it is taken
    /// back, so an existing one is this interaction applied before.
    pub async fn insert(
        self,
        conn: &mut sqlx::PgConnection,
        event: &RecordedEvent,
        row: Interaction<'_>,
    ) -> Result<(), sqlx::Error> {
        let (major, minor) = position(event);
        sqlx::query(&format!(
            "INSERT INTO {} (actor, post, post_author, {}, created_at, position_major, position_minor)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (actor, post) DO NOTHING",
            self.table, self.activity_id
        ))
        .bind(row.actor)
        .bind(row.post)
        .bind(row.post_author)
        .bind(row.activity_id)
        .bind(row.at)
        .bind(major)
        .bind(minor)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Forgets `actor`'s interaction with `post` (taken back).
    pub async fn remove(
        self,
        conn: &mut sqlx::PgConnection,
        actor: &str,
        post: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE actor = $1 AND post = $2",
            self.table
        ))
        .bind(actor)
        .bind(post)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Forgets every interaction of a deleted remote actor, and with its posts.
    pub async fn remove_actor(
        self,
        conn: &mut sqlx::PgConnection,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE actor = $1 OR post_author = $1",
            self.table
        ))
        .bind(actor)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Forgets every interaction with a deleted post: none is left to count or list.
    pub async fn remove_post(
        self,
        conn: &mut sqlx::PgConnection,
        post: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("DELETE FROM {} WHERE post = $1", self.table))
            .bind(post)
            .execute(conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uri: &str, expected: &str) {
        assert_eq!(domain_of(uri), expected, "{uri}");
    }

    #[test]
    fn domains_are_lower_case_hosts_with_non_default_ports() {
        check("https://Example.COM/users/alice", "example.com");
        check("https://example.com:8443/users/alice", "example.com:8443");
        check("https://example.com:443/users/alice", "example.com");
        check("http://example.com:80/users/alice", "example.com");
        check("http://127.0.0.1:3000/users/alice", "127.0.0.1:3000");
        check("https://user:pw@example.com/x", "example.com");
        check("https://[::1]:8080/users/a", "[::1]:8080");
        check("https://example.com", "example.com");
        check("https://example.com?x=1", "example.com");
    }
}
