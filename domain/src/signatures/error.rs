//! Why a signed request was refused.
//!
//! Messages are written for the body of a 401 response: they say what was
//! wrong in words a remote admin can act on, and never contain key material
//! or long stretches of what the peer sent.

use super::keys::KeyKind;
use super::time::human_duration;

/// The broad class of a refusal, for the caller's decisions: only
/// [`ErrorKind::BadSignature`] is worth re-fetching the signer's key for
/// (it may have been rotated); everything else fails the same way again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request carries no signature at all.
    Missing,
    /// A signature header is present but cannot be understood.
    Malformed,
    /// The signature uses an algorithm or component this server does not
    /// implement.
    Unsupported,
    /// The signature is well formed but does not meet this server's rules
    /// (coverage, clock window, digest).
    Policy,
    /// The cryptographic check failed with the key at hand.
    BadSignature,
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request is not signed: it has no Signature or Signature-Input header")]
    Missing,
    #[error("malformed signature: {0}")]
    Malformed(#[from] Malformed),
    #[error("unsupported signature algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    #[error("unsupported signature component `{0}`")]
    UnsupportedComponent(String),
    #[error(transparent)]
    Policy(#[from] PolicyViolation),
    #[error("the signature algorithm `{algorithm}` cannot be checked with {key}")]
    WrongKeyType { algorithm: String, key: KeyKind },
    #[error("the signature does not verify with the key `{key_id}`")]
    BadSignature { key_id: String },
}

impl SignatureError {
    /// The class of this refusal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SignatureError::Missing => ErrorKind::Missing,
            SignatureError::Malformed(_) => ErrorKind::Malformed,
            SignatureError::UnsupportedAlgorithm(_) | SignatureError::UnsupportedComponent(_) => {
                ErrorKind::Unsupported
            }
            SignatureError::Policy(_) => ErrorKind::Policy,
            // A key of another type than before is a rotation too.
            SignatureError::WrongKeyType { .. } | SignatureError::BadSignature { .. } => {
                ErrorKind::BadSignature
            }
        }
    }
}

/// How a signature header is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("cannot parse the {header} header: {reason}")]
    Syntax {
        header: &'static str,
        reason: &'static str,
    },
    #[error("the request has a {present} header but no {missing} header")]
    MissingHeader {
        present: &'static str,
        missing: &'static str,
    },
    #[error("the {header} header has no `{param}` parameter")]
    MissingParameter {
        header: &'static str,
        param: &'static str,
    },
    #[error("the {header} header repeats the `{param}` parameter")]
    DuplicateParameter { header: &'static str, param: String },
    #[error("the `{param}` parameter has the wrong type")]
    ParameterType { param: String },
    #[error("the signature value is not valid base64")]
    SignatureEncoding,
    #[error("`{param}` must be a whole number of seconds")]
    Timestamp { param: &'static str },
    #[error("the signature covers nothing")]
    NothingCovered,
    #[error("the signature covers `{0}` more than once")]
    DuplicateComponent(String),
    #[error("component names must be lower-case, found `{0}`")]
    ComponentCase(String),
    #[error("`{0}` may only be covered with the algorithm `hs2019`")]
    PseudoHeaderNeedsHs2019(&'static str),
    #[error("the signature covers `{0}` but the request has no such header")]
    MissingCoveredHeader(String),
    #[error("no label of the Signature-Input header has a value in the Signature header")]
    NoMatchingLabel,
    #[error("the Date header is not an HTTP date")]
    Date,
    #[error("the {header} header is malformed")]
    Digest { header: &'static str },
}

/// How a well-formed signature breaks this server's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    #[error("the signature does not cover {0}")]
    NotCovered(&'static str),
    #[error("the {header} header has no {expected} value")]
    DigestAlgorithm {
        header: &'static str,
        expected: &'static str,
    },
    #[error("the {header} header does not match the body")]
    DigestMismatch { header: &'static str },
    #[error("the request has no Date header and no signed creation time")]
    NoDate,
    #[error(
        "the {what} is {} {} the server's clock (limit {})",
        human_duration(*.offset_seconds),
        if *.offset_seconds < 0 { "behind" } else { "ahead of" },
        human_duration(*.limit_seconds)
    )]
    Skew {
        /// `Date header` or `signature's creation time`.
        what: &'static str,
        /// The signed time minus the server's time (negative: in the past).
        offset_seconds: i64,
        /// The allowed distance either way.
        limit_seconds: i64,
    },
    #[error("the signature expired {} ago", human_duration(*.seconds_ago))]
    Expired { seconds_ago: i64 },
}
