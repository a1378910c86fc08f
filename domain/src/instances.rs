//! Instance blocks: an admin refuses a whole server.

use serde::{Deserialize, Serialize};

use crate::StreamId;
use crate::events::DomainEvent;

/// The stream of one domain's standing.
pub fn instance_stream(domain: &str) -> StreamId {
    StreamId::composed(format!("instance-{domain}"))
}

/// An admin blocked a domain: its inbox requests are refused and its
/// content is hidden.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceBlocked {
    pub domain: String,
    pub reason: Option<String>,
}

/// An admin lifted a domain's block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUnblocked {
    pub domain: String,
}

/// Why an instance command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    #[error("`{0}` is not a domain name")]
    InvalidDomain(String),
    #[error("{0} is already blocked")]
    AlreadyBlocked(String),
    #[error("{0} is not blocked")]
    NotBlocked(String),
    #[error("this server's own domain cannot be blocked")]
    OwnDomain,
}

impl InstanceError {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidDomain(_) => "INVALID_DOMAIN",
            Self::AlreadyBlocked(_) => "ALREADY_BLOCKED",
            Self::NotBlocked(_) => "NOT_BLOCKED",
            Self::OwnDomain => "OWN_DOMAIN",
        }
    }
}

/// A domain's standing, folded from its stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceState {
    pub blocked: bool,
}

impl InstanceState {
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::InstanceBlocked(_) => self.blocked = true,
            DomainEvent::InstanceUnblocked(_) => self.blocked = false,
            _ => {}
        }
    }
}

/// A domain as blocks name it: lower case, no scheme, path or trailing dot;
/// a port is kept (`example.com:8443`).
pub fn normalize_domain(input: &str) -> Result<String, InstanceError> {
    let trimmed = input.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split(':').count() <= 2
        && trimmed.split(':').nth(1).is_none_or(|port| {
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
        })
        && trimmed.split(':').next().is_some_and(|host| {
            host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        });
    if valid {
        Ok(trimmed)
    } else {
        Err(InstanceError::InvalidDomain(input.to_owned()))
    }
}

/// Decides a block of `domain` (already normalised); `own` is this server's domain.
pub fn block(
    state: &InstanceState,
    domain: &str,
    own: &str,
    reason: Option<String>,
) -> Result<Vec<DomainEvent>, InstanceError> {
    if domain == own {
        return Err(InstanceError::OwnDomain);
    }
    if state.blocked {
        return Err(InstanceError::AlreadyBlocked(domain.to_owned()));
    }
    Ok(vec![DomainEvent::InstanceBlocked(InstanceBlocked {
        domain: domain.to_owned(),
        reason,
    })])
}

/// Decides lifting the block of `domain`.
pub fn unblock(state: &InstanceState, domain: &str) -> Result<Vec<DomainEvent>, InstanceError> {
    if !state.blocked {
        return Err(InstanceError::NotBlocked(domain.to_owned()));
    }
    Ok(vec![DomainEvent::InstanceUnblocked(InstanceUnblocked {
        domain: domain.to_owned(),
    })])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        assert_eq!(normalize_domain(input).ok().as_deref(), expected, "{input}");
    }

    #[test]
    fn domains_are_normalised_or_refused() {
        check("Example.COM", Some("example.com"));
        check(" example.com. ", Some("example.com"));
        check("127.0.0.1:8443", Some("127.0.0.1:8443"));
        check("xn--bcher-kva.example", Some("xn--bcher-kva.example"));
        check("", None);
        check("https://example.com", None);
        check("example.com/path", None);
        check("-bad.example", None);
        check("a..b", None);
        check("host:", None);
        check("host:99999x", None);
    }

    #[test]
    fn blocking_twice_or_unblocking_an_unblocked_domain_is_refused() {
        let mut state = InstanceState::default();
        let events =
            block(&state, "bad.example", "chorus.example", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(events.len(), 1);
        state.apply(&events[0]);
        assert_eq!(
            block(&state, "bad.example", "chorus.example", None),
            Err(InstanceError::AlreadyBlocked("bad.example".into()))
        );
        let events = unblock(&state, "bad.example").unwrap_or_else(|e| panic!("{e}"));
        state.apply(&events[0]);
        assert_eq!(
            unblock(&state, "bad.example"),
            Err(InstanceError::NotBlocked("bad.example".into()))
        );
        assert_eq!(
            block(&state, "chorus.example", "chorus.example", None),
            Err(InstanceError::OwnDomain)
        );
    }
}
