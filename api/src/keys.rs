//! Actor key pairs. Private keys live in `actor_keys`, never in the log, a
//! log line, an error or a GraphQL response.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;

/// A freshly generated RSA-2048 key pair, PEM-encoded.
pub struct ActorKeys {
    /// PKCS#8 PEM.
    pub private_pem: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as ActivityPub's `publicKeyPem`.
    pub public_pem: String,
}

impl std::fmt::Debug for ActorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorKeys")
            .field("private_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Why a key pair could not be made.
#[derive(Debug, thiserror::Error)]
#[error("could not generate an RSA key pair")]
pub struct KeyError;

/// Generates an RSA-2048 key pair (the size every fediverse server accepts).
pub fn generate() -> Result<ActorKeys, KeyError> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError)?;
    let private: Pkcs8V1Der<'_> = pair.as_der().map_err(|_| KeyError)?;
    let public: PublicKeyX509Der<'_> = pair.public_key().as_der().map_err(|_| KeyError)?;
    Ok(ActorKeys {
        private_pem: pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref().to_vec())),
        public_pem: pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref().to_vec())),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn generates_distinct_pem_pairs_and_hides_the_private_key_in_debug() {
        let a = super::generate().unwrap_or_else(|e| panic!("{e}"));
        let b = super::generate().unwrap_or_else(|e| panic!("{e}"));
        assert!(a.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(a.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(a.public_pem, b.public_pem);
        assert!(!format!("{a:?}").contains("PRIVATE KEY-----"));
        let der = pem::parse(&a.private_pem).unwrap_or_else(|e| panic!("{e}"));
        assert!(aws_lc_rs::rsa::KeyPair::from_pkcs8(der.contents()).is_ok());
    }
}
