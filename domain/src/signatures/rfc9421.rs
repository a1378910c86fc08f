//! RFC 9421 HTTP Message Signatures: the `Signature-Input` and `Signature`
//! headers.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use url::Url;

use super::error::{Malformed, SignatureError};
use super::keys::{KeyKind, PrivateKey, PublicKey};
use super::sf::{self, BareItem, Item, Member, Parameters};
use super::{BASE64, RequestParts, SigningError, digest, excerpt, outbound};

/// The label Chorus gives its own signatures.
const LABEL: &str = "sig1";

/// The derived components (RFC 9421 section 2.2) this server can rebuild.
/// `@status` only exists on responses, and `@query-param` needs a parameter
/// (refused below), so neither is here.
const DERIVED: &[&str] = &[
    "@method",
    "@target-uri",
    "@authority",
    "@scheme",
    "@request-target",
    "@path",
    "@query",
];

/// The algorithms accepted in the `alg` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Algorithm {
    /// `rsa-v1_5-sha256`: the only one Mastodon uses.
    RsaV15Sha256,
    /// `ed25519`, for the rare peer with an Ed25519 key.
    Ed25519,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::RsaV15Sha256 => "rsa-v1_5-sha256",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// A parsed RFC 9421 signature (the first label present in both headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rfc9421Signature {
    pub(super) label: String,
    /// Covered component names, in order.
    pub(super) components: Vec<String>,
    /// The canonical serialisation of the components and parameters: the
    /// value of the `@signature-params` line.
    pub(super) signature_params: String,
    pub(super) key_id: String,
    /// `None` when the sender left the algorithm to the key.
    pub(super) algorithm: Option<Algorithm>,
    pub(super) created: Option<i64>,
    pub(super) expires: Option<i64>,
    pub(super) signature: Vec<u8>,
}

impl Rfc9421Signature {
    pub(super) fn covers(&self, name: &str) -> bool {
        self.components.iter().any(|c| c == name)
    }
}

/// Parses the two headers and picks the first label of `Signature-Input`
/// that also has a value in `Signature`.
pub(super) fn parse(input: &str, signature: &str) -> Result<Rfc9421Signature, SignatureError> {
    const INPUT: &str = "Signature-Input";
    const SIGNATURE: &str = "Signature";
    let inputs = sf::parse_dictionary(input).map_err(|reason| Malformed::Syntax {
        header: INPUT,
        reason,
    })?;
    let signatures = sf::parse_dictionary(signature).map_err(|reason| Malformed::Syntax {
        header: SIGNATURE,
        reason,
    })?;
    let (label, member, value) = inputs
        .iter()
        .find_map(|(label, member)| {
            signatures
                .iter()
                .find(|(l, _)| l == label)
                .map(|(_, value)| (label, member, value))
        })
        .ok_or(Malformed::NoMatchingLabel)?;
    let Member::InnerList(items, params) = member else {
        return Err(Malformed::Syntax {
            header: INPUT,
            reason: "a signature's components must be an inner list",
        }
        .into());
    };
    let signature = match value {
        Member::Item(Item {
            bare: BareItem::Bytes(bytes),
            ..
        }) if !bytes.is_empty() => bytes.clone(),
        _ => return Err(Malformed::SignatureEncoding.into()),
    };
    let components = component_names(items)?;
    let key_id = match find(params, "keyid") {
        Some(BareItem::String(k)) if !k.is_empty() => k.clone(),
        Some(_) => {
            return Err(Malformed::ParameterType {
                param: "keyid".to_owned(),
            }
            .into());
        }
        None => {
            return Err(Malformed::MissingParameter {
                header: INPUT,
                param: "keyid",
            }
            .into());
        }
    };
    let algorithm = match find(params, "alg") {
        None => None,
        Some(BareItem::String(a)) if a == "rsa-v1_5-sha256" => Some(Algorithm::RsaV15Sha256),
        Some(BareItem::String(a)) if a == "ed25519" => Some(Algorithm::Ed25519),
        Some(BareItem::String(other)) => {
            return Err(SignatureError::UnsupportedAlgorithm(excerpt(other)));
        }
        Some(_) => {
            return Err(Malformed::ParameterType {
                param: "alg".to_owned(),
            }
            .into());
        }
    };
    let integer = |name: &str| match find(params, name) {
        None => Ok(None),
        Some(BareItem::Integer(n)) => Ok(Some(*n)),
        Some(_) => Err(Malformed::ParameterType {
            param: name.to_owned(),
        }),
    };
    let created = integer("created")?;
    let expires = integer("expires")?;
    Ok(Rfc9421Signature {
        label: label.clone(),
        signature_params: sf::serialize_inner_list(items, params),
        components,
        key_id,
        algorithm,
        created,
        expires,
        signature,
    })
}

fn find<'p>(params: &'p Parameters, name: &str) -> Option<&'p BareItem> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The covered component names, refusing what this server cannot rebuild
/// exactly (component parameters such as `;sf`, `;bs`, `;req`, `;name`).
fn component_names(items: &[Item]) -> Result<Vec<String>, SignatureError> {
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let BareItem::String(name) = &item.bare else {
            return Err(Malformed::Syntax {
                header: "Signature-Input",
                reason: "component names must be strings",
            }
            .into());
        };
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Malformed::ComponentCase(excerpt(name)).into());
        }
        if !item.params.is_empty() || (name.starts_with('@') && !DERIVED.contains(&name.as_str())) {
            let mut shown = name.clone();
            sf::serialize_params(&mut shown, &item.params);
            return Err(SignatureError::UnsupportedComponent(excerpt(&shown)));
        }
        if names.contains(name) {
            return Err(Malformed::DuplicateComponent(excerpt(name)).into());
        }
        names.push(name.clone());
    }
    Ok(names)
}

/// Builds the signature base of RFC 9421 section 2.5.
pub(super) fn signature_base(
    req: &RequestParts<'_>,
    components: &[String],
    signature_params: &str,
) -> Result<String, SignatureError> {
    let mut base = String::new();
    for name in components {
        let value = match name.as_str() {
            "@method" => req.method.to_owned(),
            "@target-uri" => format!(
                "{}://{}{}",
                req.scheme.to_ascii_lowercase(),
                authority(req),
                req.path_and_query
            ),
            "@authority" => authority(req),
            "@scheme" => req.scheme.to_ascii_lowercase(),
            "@request-target" => req.path_and_query.to_owned(),
            "@path" => match req.path() {
                "" => "/".to_owned(),
                path => path.to_owned(),
            },
            "@query" => format!("?{}", req.query().unwrap_or("")),
            header => req
                .header(header)
                .ok_or_else(|| Malformed::MissingCoveredHeader(excerpt(header)))?,
        };
        base.push('"');
        base.push_str(name);
        base.push_str("\": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(signature_params);
    Ok(base)
}

/// The normalised authority (RFC 9421 section 2.2.3): lower-case, without
/// the scheme's default port.
fn authority(req: &RequestParts<'_>) -> String {
    let authority = req.authority.to_ascii_lowercase();
    let default_port = match req.scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return authority,
    };
    match authority.strip_suffix(default_port) {
        Some(host) => host.to_owned(),
        None => authority,
    }
}

/// Checks the signature cryptographically.
pub(super) fn verify(
    sig: &Rfc9421Signature,
    req: &RequestParts<'_>,
    key: &PublicKey,
) -> Result<(), SignatureError> {
    match (sig.algorithm, key.kind()) {
        (None | Some(Algorithm::RsaV15Sha256), KeyKind::Rsa { .. })
        | (None | Some(Algorithm::Ed25519), KeyKind::Ed25519) => {}
        (Some(algorithm), kind) => {
            return Err(SignatureError::WrongKeyType {
                algorithm: algorithm.name().to_owned(),
                key: kind,
            });
        }
    }
    let base = signature_base(req, &sig.components, &sig.signature_params)?;
    if key.verify(base.as_bytes(), &sig.signature) {
        Ok(())
    } else {
        Err(SignatureError::BadSignature {
            key_id: excerpt(&sig.key_id),
        })
    }
}

/// Signs an outbound request; see [`super::sign_rfc9421`].
pub(super) fn sign(
    method: &str,
    url: &Url,
    body: Option<&[u8]>,
    key_id: &str,
    key: &PrivateKey,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, SigningError> {
    // A structured-field string holds printable ASCII only.
    if key_id.is_empty() || !key_id.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(SigningError::KeyId);
    }
    let target = outbound::Target::new(method, url)?;
    let mut components = vec!["@method", "@target-uri"];
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(body) = body {
        headers.push((
            "content-digest".to_owned(),
            digest::content_digest_header(body),
        ));
        components.push("content-digest");
    }
    let items: Vec<Item> = components
        .iter()
        .map(|c| Item {
            bare: BareItem::String((*c).to_owned()),
            params: Vec::new(),
        })
        .collect();
    let params: Parameters = vec![
        ("created".to_owned(), BareItem::Integer(now.timestamp())),
        ("keyid".to_owned(), BareItem::String(key_id.to_owned())),
        (
            "alg".to_owned(),
            BareItem::String(Algorithm::RsaV15Sha256.name().to_owned()),
        ),
    ];
    let signature_params = sf::serialize_inner_list(&items, &params);
    let components: Vec<String> = components.into_iter().map(str::to_owned).collect();
    let base = signature_base(
        &target.parts(&headers, body.unwrap_or(&[])),
        &components,
        &signature_params,
    )
    .map_err(|_| SigningError::Internal)?;
    let signature = key.sign(base.as_bytes()).ok_or(SigningError::Crypto)?;
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .map(|(_, v)| ("Content-Digest".to_owned(), v))
        .collect();
    out.push((
        "Signature-Input".to_owned(),
        format!("{LABEL}={signature_params}"),
    ));
    out.push((
        "Signature".to_owned(),
        format!("{LABEL}=:{}:", BASE64.encode(signature)),
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_cannot_rebuild() {
        let sig = "sig1=:AAEC:";
        let cases: Vec<(&str, SignatureError)> = vec![
            (
                r#"sig1=("@status");keyid="k""#,
                SignatureError::UnsupportedComponent("@status".to_owned()),
            ),
            (
                r#"sig1=("@query-param";name="id");keyid="k""#,
                SignatureError::UnsupportedComponent(r#"@query-param;name="id""#.to_owned()),
            ),
            (
                r#"sig1=("content-type";sf);keyid="k""#,
                SignatureError::UnsupportedComponent("content-type;sf".to_owned()),
            ),
            (
                r#"sig1=("@method");keyid="k";alg="rsa-pss-sha512""#,
                SignatureError::UnsupportedAlgorithm("rsa-pss-sha512".to_owned()),
            ),
            (
                r#"sig1=("@method" "@method");keyid="k""#,
                Malformed::DuplicateComponent("@method".to_owned()).into(),
            ),
            (
                r#"sig1=("Date");keyid="k""#,
                Malformed::ComponentCase("Date".to_owned()).into(),
            ),
            (
                r#"sig1=("@method");created=1"#,
                Malformed::MissingParameter {
                    header: "Signature-Input",
                    param: "keyid",
                }
                .into(),
            ),
            (
                r#"sig1=("@method");keyid="k";created="yesterday""#,
                Malformed::ParameterType {
                    param: "created".to_owned(),
                }
                .into(),
            ),
            (
                r#"other=("@method");keyid="k""#,
                Malformed::NoMatchingLabel.into(),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input, sig), Err(expected), "{input}");
        }
    }

    #[test]
    fn normalises_the_authority() {
        let headers = Vec::new();
        for (scheme, given, expected) in [
            ("https", "Example.COM:443", "example.com"),
            ("http", "example.com:80", "example.com"),
            ("http", "127.0.0.1:8080", "127.0.0.1:8080"),
        ] {
            let req = RequestParts {
                method: "GET",
                scheme,
                authority: given,
                path_and_query: "/",
                headers: &headers,
                body: &[],
            };
            assert_eq!(authority(&req), expected);
        }
    }
}
