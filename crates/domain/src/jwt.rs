//! Tokens: JWTs the data plane mints from an API key, verifies at the edge, and signs for
//! upstreams (`X-Gateway-JWT`), with each tenant's own signing key.
//!
//! **Ed25519 (`EdDSA`)**, not ES256: its signatures are deterministic (no random nonce per
//! signature, so no key leak from a bad random source, ECDSA's classic failure), its keys are 32
//! bytes (a JWK is one `x`), verifying costs about as much as ES256's and signing less, and every
//! stock library a tenant's upstream would use (`jsonwebtoken`, `PyJWT`, jose, Go's `x/crypto`)
//! verifies it.
//!
//! The private key is stored sealed ([`TokenSecret::seal`]: AES-256-GCM under a key derived with
//! HKDF-SHA256 from `GATEWAY_TOKEN_KEY`, else `GATEWAY_SECRET_KEY`, the key id as associated
//! data) and opened only by a data plane minting or signing; the control plane never shows it.
//! Time claims are checked here against the gateway's clock (not the library's system clock),
//! with [`LEEWAY_S`] of leeway.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// The one algorithm tokens are signed with, as the JOSE header names it.
pub const ALGORITHM: &str = "EdDSA";
/// Default lifetime of a minted token.
pub const DEFAULT_LIFETIME_S: i64 = 15 * 60;
/// Longest lifetime a tenant may set.
pub const MAX_LIFETIME_S: i64 = 24 * 60 * 60;
/// Shortest lifetime a tenant may set.
pub const MIN_LIFETIME_S: i64 = 60;
/// Lifetime of an identity token (`X-Gateway-JWT`) the gateway signs for an upstream.
pub const IDENTITY_LIFETIME_S: i64 = 60;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_S: i64 = 60;
/// Shortest `GATEWAY_TOKEN_KEY` / `GATEWAY_SECRET_KEY` accepted.
pub const MIN_SECRET_LEN: usize = 32;

/// What an API accepts from a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiAuth {
    /// An API key only (the default).
    #[default]
    Key,
    /// An API key, or a token minted from one (`Authorization: Bearer <jwt>`).
    KeyOrToken,
    /// A token only.
    Token,
}

impl ApiAuth {
    pub const ALL: [Self; 3] = [Self::Key, Self::KeyOrToken, Self::Token];

    pub fn parse(v: &str) -> Result<Self, &'static str> {
        match v.trim() {
            "key" => Ok(Self::Key),
            "key_or_token" => Ok(Self::KeyOrToken),
            "token" => Ok(Self::Token),
            _ => Err("must be one of key, key_or_token, token"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::KeyOrToken => "key_or_token",
            Self::Token => "token",
        }
    }

    /// How the dashboard names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Key => "API key",
            Self::KeyOrToken => "API key or token",
            Self::Token => "Token only",
        }
    }

    pub fn takes_key(self) -> bool {
        self != Self::Token
    }

    pub fn takes_token(self) -> bool {
        self != Self::Key
    }
}

/// The key that seals signing keys at rest, derived from the configured secret.
pub struct TokenSecret {
    key: LessSafeKey,
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// What can go wrong with signing keys at rest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the token key must be at least {MIN_SECRET_LEN} bytes long")]
    SecretTooShort,
    #[error(
        "a sealed signing key did not open with this token key (GATEWAY_TOKEN_KEY / \
         GATEWAY_SECRET_KEY changed since it was made?)"
    )]
    Unseal,
    #[error("could not generate a signing key")]
    Generate,
}

struct KeyLen;

impl ring::hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

impl TokenSecret {
    /// The sealing key of `secret` (at least [`MIN_SECRET_LEN`] bytes).
    pub fn new(secret: &str) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort);
        }
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"gateway token keys");
        let mut key = [0u8; 32];
        salt.extract(secret.as_bytes())
            .expand(&[b"signing key sealing v1"], KeyLen)
            .and_then(|okm| okm.fill(&mut key))
            .map_err(|_| KeyError::SecretTooShort)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| KeyError::SecretTooShort)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// `private` (a PKCS#8 document) sealed for storage under key id `kid`: base64url of the
    /// nonce and the ciphertext with its tag.
    pub fn seal(&self, kid: &str, private: &[u8]) -> Result<String, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyError::Generate)?;
        let mut buf = private.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Generate)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The PKCS#8 document [`seal`](Self::seal) sealed under `kid`.
    pub fn open(&self, kid: &str, sealed: &str) -> Result<Vec<u8>, KeyError> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| KeyError::Unseal)?;
        if raw.len() < NONCE_LEN {
            return Err(KeyError::Unseal);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Unseal)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut body)
            .map_err(|_| KeyError::Unseal)?;
        Ok(plain.to_vec())
    }
}

/// A new signing key: its id, its public key (the JWK's `x`, base64url) and its private key
/// sealed by `secret`.
pub struct NewSigningKey {
    pub kid: String,
    pub public_x: String,
    pub sealed_private: String,
}

/// Generates an Ed25519 key pair and seals its private half.
pub fn generate(secret: &TokenSecret) -> Result<NewSigningKey, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generate)?;
    let mut id = [0u8; 12];
    rng.fill(&mut id).map_err(|_| KeyError::Generate)?;
    let kid = URL_SAFE_NO_PAD.encode(id);
    Ok(NewSigningKey {
        public_x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        sealed_private: secret.seal(&kid, pkcs8.as_ref())?,
        kid,
    })
}

/// A public key as a JWK (RFC 7517, RFC 8037's `OKP`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    pub fn ed25519(kid: &str, x: &str) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: x.into(),
            kid: kid.into(),
            alg: ALGORITHM.into(),
            use_: "sig".into(),
        }
    }
}

/// The claims of a token minted from an API key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    /// The key's id, as a string (RFC 7519: `sub` is a string).
    pub sub: String,
    /// The tenant's slug.
    pub tenant: String,
    /// The plan the key (or client) was on when the token was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The API slug (identity tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// The request's id (identity tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// A tenant's key that signs: its id and its private half, opened.
pub struct Signer {
    pub kid: String,
    key: EncodingKey,
}

impl Signer {
    /// The signer of a stored key (`sealed` as [`generate`] made it).
    pub fn open(secret: &TokenSecret, kid: &str, sealed: &str) -> Result<Self, KeyError> {
        let der = secret.open(kid, sealed)?;
        Ok(Self {
            kid: kid.to_owned(),
            key: EncodingKey::from_ed_der(&der),
        })
    }

    /// `claims` signed: a compact JWS with `alg: EdDSA`, `typ: JWT` and this key's `kid`.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        // Serialising these claims and signing with a valid key cannot fail.
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }
}

/// A fresh token id.
pub fn new_jti() -> String {
    let mut id = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut id);
    URL_SAFE_NO_PAD.encode(id)
}

/// Which check a token failed, each its own answer (never which bytes were wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// Not three base64url parts of a JWS, or its header or claims are not what a token holds.
    Format,
    /// `alg` is not `EdDSA` (`none`, HS256 with the public key as its secret, ...).
    Algorithm,
    /// No `kid`, or one no tenant's key has.
    UnknownKey,
    /// The signature does not verify with the key `kid` names.
    Signature,
    /// Signed by another tenant's key than the path's.
    Tenant,
    /// `iss` is not this gateway.
    Issuer,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    NotYetValid,
}

impl TokenCheck {
    /// The machine-readable name (`details.check`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "kid",
            Self::Signature => "signature",
            Self::Tenant => "tenant",
            Self::Issuer => "issuer",
            Self::Expired => "exp",
            Self::NotYetValid => "nbf",
        }
    }

    /// What a person reads.
    pub fn message(self) -> &'static str {
        match self {
            Self::Format => "The token is not a well-formed JWT.",
            Self::Algorithm => "The token is not signed with EdDSA, the only algorithm accepted.",
            Self::UnknownKey => "The token's signing key (kid) is not one of this gateway's.",
            Self::Signature => "The token's signature does not verify.",
            Self::Tenant => "The token was issued for another tenant.",
            Self::Issuer => "The token was not issued by this gateway (iss).",
            Self::Expired => "The token has expired (exp).",
            Self::NotYetValid => "The token is not valid yet (nbf).",
        }
    }
}

/// Is `value` shaped like a compact JWS (three parts, header and claims not empty; an unsigned
/// `alg: none` token has an empty third), and not an API key?
pub fn looks_like_jwt(value: &str) -> bool {
    let mut parts = value.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), Some(_), None) if !a.is_empty() && !b.is_empty()
    )
}

/// The verification keys of every tenant, by key id.
#[derive(Default)]
pub struct VerifyKeys {
    by_kid: HashMap<Box<str>, VerifyKey>,
}

struct VerifyKey {
    tenant_id: i64,
    /// The public key, base64url (the JWK's `x`).
    x: Box<str>,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKeys")
            .field("keys", &self.by_kid.len())
            .finish()
    }
}

impl VerifyKeys {
    /// Adds tenant `tenant_id`'s key `kid` (its public `x`, base64url); a key that does not
    /// decode is left out.
    pub fn insert(&mut self, tenant_id: i64, kid: &str, x: &str) {
        if let Ok(key) = DecodingKey::from_ed_components(x) {
            self.by_kid.insert(
                kid.into(),
                VerifyKey {
                    tenant_id,
                    x: x.into(),
                    key,
                },
            );
        }
    }

    /// Tenant `tenant_id`'s keys as a JWK Set's `keys`, ordered by key id.
    pub fn jwks(&self, tenant_id: i64) -> Vec<Jwk> {
        let mut keys: Vec<Jwk> = self
            .by_kid
            .iter()
            .filter(|(_, k)| k.tenant_id == tenant_id)
            .map(|(kid, k)| Jwk::ed25519(kid, &k.x))
            .collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys
    }

    /// The tenant whose key `kid` is.
    pub fn owner(&self, kid: &str) -> Option<i64> {
        self.by_kid.get(kid).map(|k| k.tenant_id)
    }

    pub fn has(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    /// The claims of `token` and the id of its key, if its signature verifies with one of these
    /// keys and it was signed by `tenant_id`'s; its time claims and issuer are checked by
    /// [`check_claims`].
    pub fn verify_signature(
        &self,
        token: &str,
        tenant_id: i64,
    ) -> Result<(Claims, String), TokenCheck> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => TokenCheck::Algorithm,
            // An unknown `alg` (such as `none`) fails the header's parse.
            jsonwebtoken::errors::ErrorKind::Json(_) if header_alg(token).is_some() => {
                TokenCheck::Algorithm
            }
            _ => TokenCheck::Format,
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenCheck::Algorithm);
        }
        let kid = header.kid.ok_or(TokenCheck::UnknownKey)?;
        let found = self
            .by_kid
            .get(kid.as_str())
            .ok_or(TokenCheck::UnknownKey)?;
        let (owner, key) = (&found.tenant_id, &found.key);
        let mut v = Validation::new(Algorithm::EdDSA);
        // Time and issuer are checked against the gateway's clock and settings, after.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenCheck::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenCheck::Algorithm,
            _ => TokenCheck::Format,
        })?;
        if *owner != tenant_id {
            return Err(TokenCheck::Tenant);
        }
        Ok((data.claims, kid))
    }
}

/// The `alg` a token's header names, when its header is JSON with one.
fn header_alg(token: &str) -> Option<String> {
    let head = token.split('.').next()?;
    let raw = URL_SAFE_NO_PAD.decode(head).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// The checks of a verified token's claims at `now_s` (seconds since the epoch): issuer, then
/// `exp` and `nbf` with [`LEEWAY_S`].
pub fn check_claims(claims: &Claims, issuer: &str, now_s: i64) -> Result<(), TokenCheck> {
    if claims.iss != issuer {
        return Err(TokenCheck::Issuer);
    }
    check_times(claims.nbf, claims.exp, now_s)
}

/// A token's `nbf` and `exp` at `now_s`, with [`LEEWAY_S`] either way.
pub fn check_times(nbf: i64, exp: i64, now_s: i64) -> Result<(), TokenCheck> {
    if exp + LEEWAY_S <= now_s {
        return Err(TokenCheck::Expired);
    }
    if nbf - LEEWAY_S > now_s {
        return Err(TokenCheck::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "http://gw".into(),
            sub: "7".into(),
            tenant: "acme".into(),
            plan: Some(1),
            client: None,
            api: None,
            request_id: None,
            iat: now,
            nbf: now,
            exp: now + 900,
            jti: new_jti(),
        }
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_secret_and_kid() {
        let s = TokenSecret::new(SECRET).unwrap();
        let k = generate(&s).unwrap();
        assert!(s.open(&k.kid, &k.sealed_private).is_ok());
        assert_eq!(s.open("other", &k.sealed_private), Err(KeyError::Unseal));
        let other = TokenSecret::new("another secret of at least thirty-two bytes").unwrap();
        assert_eq!(other.open(&k.kid, &k.sealed_private), Err(KeyError::Unseal));
        assert_eq!(
            TokenSecret::new("short").err(),
            Some(KeyError::SecretTooShort)
        );
    }

    #[test]
    fn a_minted_token_verifies_and_each_bad_one_names_its_check() {
        let s = TokenSecret::new(SECRET).unwrap();
        let k = generate(&s).unwrap();
        let signer = Signer::open(&s, &k.kid, &k.sealed_private).unwrap();
        let mut keys = VerifyKeys::default();
        keys.insert(1, &k.kid, &k.public_x);
        let now = 1_800_000_000;
        let token = signer.sign(&claims(now));
        let (got, kid) = keys.verify_signature(&token, 1).unwrap();
        assert_eq!(kid, k.kid);
        assert_eq!(check_claims(&got, "http://gw", now), Ok(()));
        assert_eq!(keys.verify_signature(&token, 2), Err(TokenCheck::Tenant));
        assert_eq!(
            check_claims(&got, "http://other", now),
            Err(TokenCheck::Issuer)
        );
        assert_eq!(
            check_claims(&got, "http://gw", now + 900 + LEEWAY_S),
            Err(TokenCheck::Expired)
        );
        assert_eq!(
            check_claims(&got, "http://gw", now + 900 + LEEWAY_S - 1),
            Ok(())
        );
        assert_eq!(
            check_claims(&got, "http://gw", now - LEEWAY_S - 1),
            Err(TokenCheck::NotYetValid)
        );
        // Tampered claims.
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims(now);
        c.sub = "8".into();
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        let forged = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
        assert_eq!(
            keys.verify_signature(&forged, 1),
            Err(TokenCheck::Signature)
        );
        // alg none.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            keys.verify_signature(&format!("{none}.{}.x", parts[1]), 1),
            Err(TokenCheck::Algorithm)
        );
        // HS256 with the public key as the HMAC secret.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(k.kid.clone());
        let hs = jsonwebtoken::encode(
            &h,
            &claims(now),
            &EncodingKey::from_secret(k.public_x.as_bytes()),
        )
        .unwrap();
        assert_eq!(keys.verify_signature(&hs, 1), Err(TokenCheck::Algorithm));
        assert_eq!(
            keys.verify_signature("not a token", 1),
            Err(TokenCheck::Format)
        );
        // Unknown kid.
        let other = generate(&s).unwrap();
        let other_signer = Signer::open(&s, &other.kid, &other.sealed_private).unwrap();
        assert_eq!(
            keys.verify_signature(&other_signer.sign(&claims(now)), 1),
            Err(TokenCheck::UnknownKey)
        );
        assert!(looks_like_jwt(&token));
        assert!(!looks_like_jwt("gw_live_abc"));
    }
}
