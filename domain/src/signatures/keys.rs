//! Public keys of remote actors and our own private keys, both from PEM.
//!
//! All cryptography goes through aws-lc-rs. Only the DER framing needed to
//! tell key types apart and to measure an RSA modulus is read here, so a
//! refusal can say *why* ("an EC key", "a 1024-bit RSA key") instead of a
//! bare "rejected".

use std::fmt;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey};

/// The smallest RSA modulus accepted. Every current fediverse server
/// generates 2048-bit keys or larger; smaller ones are forgeable.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted (the limit of aws-lc-rs verification).
pub const MAX_RSA_BITS: usize = 8192;

/// DER of the rsaEncryption algorithm OID, 1.2.840.113549.1.1.1.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// DER of id-RSASSA-PSS, 1.2.840.113549.1.1.10.
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// DER of id-Ed25519, 1.3.101.112.
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// DER of id-Ed448, 1.3.101.113.
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];
/// DER of id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of id-dsa, 1.2.840.10040.4.1.
const OID_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];

/// Why a key could not be used. Messages name the problem, never the key
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is not valid PEM")]
    Pem,
    #[error("expected {expected}, found a `{found}` PEM block")]
    UnexpectedPemLabel {
        expected: &'static str,
        found: String,
    },
    #[error("the key's DER encoding is malformed")]
    Der,
    #[error("unsupported key type: {0}; only RSA keys (and Ed25519 for RFC 9421) are accepted")]
    UnsupportedType(String),
    #[error(
        "an RSA key of {bits} bits is not accepted (between {MIN_RSA_BITS} and {MAX_RSA_BITS} bits)"
    )]
    RsaSize { bits: usize },
    #[error("the key was rejected by the crypto library ({0})")]
    Rejected(&'static str),
}

/// The kind of a public key, which decides the signature algorithms it can
/// check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA, checked with RSASSA-PKCS1-v1_5 and SHA-256.
    Rsa {
        /// The modulus length in bits.
        bits: usize,
    },
    /// Ed25519 (RFC 9421 `ed25519`, or draft-cavage `hs2019`).
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "a {bits}-bit RSA key"),
            KeyKind::Ed25519 => f.write_str("an Ed25519 key"),
        }
    }
}

/// A remote actor's public key, parsed once so that checking many
/// signatures with it costs no further parsing. Cheap to clone and safe to
/// share between threads.
#[derive(Clone)]
pub struct PublicKey {
    kind: KeyKind,
    key: ParsedPublicKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parses an actor's `publicKeyPem`: SPKI (`BEGIN PUBLIC KEY`, what
    /// Mastodon and most servers publish) or PKCS#1 (`BEGIN RSA PUBLIC
    /// KEY`, still seen from some older servers). Whitespace around the
    /// block and `\r\n` line ends are tolerated.
    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(pem_text.trim()).map_err(|_| KeyError::Pem)?;
        match block.tag() {
            "PUBLIC KEY" => Self::from_spki_der(block.contents()),
            "RSA PUBLIC KEY" => Self::from_pkcs1_der(block.contents()),
            other => Err(KeyError::UnexpectedPemLabel {
                expected: "`PUBLIC KEY` or `RSA PUBLIC KEY`",
                found: excerpt_label(other),
            }),
        }
    }

    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let (oid, key_bits) = spki_parts(der)?;
        if oid == OID_RSA {
            Self::from_pkcs1_der(key_bits)
        } else if oid == OID_ED25519 {
            let key = ParsedPublicKey::new(&signature::ED25519, der)
                .map_err(|e| KeyError::Rejected(e.description_()))?;
            Ok(Self {
                kind: KeyKind::Ed25519,
                key,
            })
        } else {
            Err(KeyError::UnsupportedType(oid_name(oid)))
        }
    }

    /// Parses a DER PKCS#1 RSAPublicKey.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let bits = rsa_modulus_bits(der)?;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(KeyError::RsaSize { bits });
        }
        let key = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| KeyError::Rejected(e.description_()))?;
        Ok(Self {
            kind: KeyKind::Rsa { bits },
            key,
        })
    }

    /// What kind of key this is.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key as SPKI PEM (`BEGIN PUBLIC KEY`), the form ActivityPub's
    /// `publicKeyPem` carries.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let der: PublicKeyX509Der<'static> = self
            .key
            .as_der()
            .map_err(|_| KeyError::Rejected("cannot encode the key"))?;
        Ok(pem::encode(&pem::Pem::new("PUBLIC KEY", der.as_ref())))
    }

    /// Checks `signature` over `message`: RSASSA-PKCS1-v1_5 with SHA-256 for
    /// RSA keys, Ed25519 for Ed25519 keys. The caller has already checked
    /// that the algorithm named in the request fits [`Self::kind`].
    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// Our own RSA private key, used to sign outbound requests. Its `Debug`
/// output shows no key material.
pub struct PrivateKey {
    pair: RsaKeyPair,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("bits", &(self.pair.public_modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Parses a PKCS#8 (`BEGIN PRIVATE KEY`, what Chorus stores) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) RSA private key.
    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(pem_text.trim()).map_err(|_| KeyError::Pem)?;
        let pair = match block.tag() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()),
            other => {
                return Err(KeyError::UnexpectedPemLabel {
                    expected: "`PRIVATE KEY` or `RSA PRIVATE KEY`",
                    found: excerpt_label(other),
                });
            }
        }
        .map_err(|e| KeyError::Rejected(e.description_()))?;
        let bits = pair.public_modulus_len() * 8;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(KeyError::RsaSize { bits });
        }
        Ok(Self { pair })
    }

    /// The matching public key.
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        PublicKey::from_pkcs1_der(self.pair.public_key().as_ref())
    }

    /// Signs `message` with RSASSA-PKCS1-v1_5 and SHA-256, the only scheme
    /// every fediverse server verifies.
    pub(super) fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0; self.pair.public_modulus_len()];
        // aws-lc-rs ignores the random source for RSA signing (PKCS#1 v1.5
        // is deterministic); it is only part of the signature for ring
        // compatibility.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut out)
            .ok()?;
        Some(out)
    }
}

/// Shortens a PEM label taken from outside before it goes into a message.
fn excerpt_label(label: &str) -> String {
    label.chars().take(40).collect()
}

/// A readable name for a key algorithm OID.
fn oid_name(oid: &[u8]) -> String {
    let known = [
        (OID_EC, "an elliptic-curve (EC) key"),
        (OID_ED448, "an Ed448 key"),
        (OID_RSA_PSS, "an RSASSA-PSS-only key"),
        (OID_DSA, "a DSA key"),
    ];
    if let Some((_, name)) = known.iter().find(|(known, _)| *known == oid) {
        return (*name).to_owned();
    }
    format!("a key with algorithm OID {}", dotted_oid(oid))
}

/// Renders a DER OID body in dotted form.
fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &byte in oid.iter().take(32) {
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Splits a SubjectPublicKeyInfo into its algorithm OID and the contents of
/// its BIT STRING (for RSA, a PKCS#1 RSAPublicKey).
fn spki_parts(der: &[u8]) -> Result<(&[u8], &[u8]), KeyError> {
    let (spki, rest) = der::expect(der, der::SEQUENCE)?;
    if !rest.is_empty() {
        return Err(KeyError::Der);
    }
    let (algorithm, after) = der::expect(spki, der::SEQUENCE)?;
    let (oid, _params) = der::expect(algorithm, der::OID)?;
    let (bits, _) = der::expect(after, der::BIT_STRING)?;
    match bits.split_first() {
        Some((0, key)) => Ok((oid, key)),
        _ => Err(KeyError::Der),
    }
}

/// The bit length of the modulus of a PKCS#1 RSAPublicKey.
pub(super) fn rsa_modulus_bits(der: &[u8]) -> Result<usize, KeyError> {
    let (key, _) = der::expect(der, der::SEQUENCE)?;
    let (modulus, _exponent) = der::expect(key, der::INTEGER)?;
    let significant = match modulus.iter().position(|&b| b != 0) {
        Some(start) => &modulus[start..],
        None => return Err(KeyError::Der),
    };
    let top = significant.first().copied().unwrap_or(0);
    Ok((significant.len() - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// Just enough DER to walk the structures above.
pub(super) mod der {
    use super::KeyError;

    pub(crate) const INTEGER: u8 = 0x02;
    pub(crate) const BIT_STRING: u8 = 0x03;
    #[cfg(test)]
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const SEQUENCE: u8 = 0x30;

    /// Reads one element with the given tag: its contents and what follows.
    pub(crate) fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), KeyError> {
        let (&found, rest) = input.split_first().ok_or(KeyError::Der)?;
        if found != tag {
            return Err(KeyError::Der);
        }
        let (&first, rest) = rest.split_first().ok_or(KeyError::Der)?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(KeyError::Der);
            }
            let (len_bytes, rest) = rest.split_at(count);
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        };
        if rest.len() < len {
            return Err(KeyError::Der);
        }
        Ok(rest.split_at(len))
    }
}
