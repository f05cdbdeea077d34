//! JWT sets: bearer tokens verified with the algorithm the policy pins (never the one the
//! token names; `none` does not exist here), against an HMAC secret or the issuer's public
//! keys (a PEM file or a JWKS file). Times (`exp`, `nbf`) are checked against the request's
//! clock, so policy tests and the gateway decide alike.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::lang::PathSeg;

/// The algorithms a `jwt` set may pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JwtAlg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlg {
    pub const NAMES: &'static str = "HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, EdDSA";

    pub fn parse(s: &str) -> Option<JwtAlg> {
        Some(match s {
            "HS256" => JwtAlg::HS256,
            "HS384" => JwtAlg::HS384,
            "HS512" => JwtAlg::HS512,
            "RS256" => JwtAlg::RS256,
            "RS384" => JwtAlg::RS384,
            "RS512" => JwtAlg::RS512,
            "ES256" => JwtAlg::ES256,
            "ES384" => JwtAlg::ES384,
            "EdDSA" => JwtAlg::EdDSA,
            _ => return None,
        })
    }

    /// An HMAC algorithm: verified with a shared secret, not a public key.
    pub fn is_hmac(self) -> bool {
        matches!(self, JwtAlg::HS256 | JwtAlg::HS384 | JwtAlg::HS512)
    }

    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::HS256 => Algorithm::HS256,
            JwtAlg::HS384 => Algorithm::HS384,
            JwtAlg::HS512 => Algorithm::HS512,
            JwtAlg::RS256 => Algorithm::RS256,
            JwtAlg::RS384 => Algorithm::RS384,
            JwtAlg::RS512 => Algorithm::RS512,
            JwtAlg::ES256 => Algorithm::ES256,
            JwtAlg::ES384 => Algorithm::ES384,
            JwtAlg::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// Where the tenant of a verified token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantFrom {
    /// Every token of the set authenticates as this tenant (the set's name by default).
    Name(String),
    /// A claim, which must be a non-empty string; a token without it is refused.
    Claim(Vec<PathSeg>),
}

/// A verified token: its claims, and who it authenticates as.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub tenant: String,
    /// The `sub` claim, or `-`.
    pub subject: String,
    pub claims: Map<String, Value>,
}

/// One `jwt` set, keys loaded.
#[derive(Clone)]
pub struct JwtVerifier {
    pub name: String,
    pub alg: JwtAlg,
    /// (key id, key); a key without an id serves any token.
    keys: Vec<(Option<String>, DecodingKey)>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_s: u64,
    pub tenant: TenantFrom,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("name", &self.name)
            .field("alg", &self.alg)
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl PartialEq for JwtVerifier {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.alg == other.alg
    }
}

/// The key material of a set, as read from the policy and its files.
pub enum KeySource<'a> {
    Secret(&'a [u8]),
    Pem(&'a [u8]),
    Jwks(&'a str),
    /// No usable key (an unset secret in `gw-check`): every token is refused.
    None,
}

impl JwtVerifier {
    /// A verifier for `alg` with keys from `source`; the error says why the keys are unusable.
    pub fn new(name: &str, alg: JwtAlg, source: KeySource<'_>) -> Result<JwtVerifier, String> {
        let keys = match source {
            KeySource::None => vec![],
            KeySource::Secret(s) if alg.is_hmac() => vec![(None, DecodingKey::from_secret(s))],
            KeySource::Secret(_) => return Err(format!("{alg:?} verifies with a public key: use `key` or `jwks`")),
            _ if alg.is_hmac() => return Err(format!("{alg:?} verifies with a shared secret: use `secret`")),
            KeySource::Pem(pem) => vec![(None, pem_key(alg, pem)?)],
            KeySource::Jwks(text) => jwks_keys(alg, text)?,
        };
        Ok(JwtVerifier {
            name: name.to_string(),
            alg,
            keys,
            issuer: None,
            audience: None,
            leeway_s: 0,
            tenant: TenantFrom::Name(name.to_string()),
        })
    }

    /// Verify `token` at `now` (Unix seconds). Every failure is the same `None`: the client
    /// learns nothing about which check refused it.
    pub fn verify(&self, token: &str, now: u64) -> Option<Verified> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        // The policy pins the algorithm: a token naming any other is refused before any key
        // is used (no HS256-with-the-public-key confusion).
        if header.alg != self.alg.algorithm() {
            return None;
        }
        let mut validation = Validation::new(self.alg.algorithm());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        let claims = self
            .keys
            .iter()
            .filter(|(kid, _)| kid.is_none() || header.kid.is_none() || *kid == header.kid)
            .find_map(|(_, key)| jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).ok())?
            .claims;
        self.times_ok(&claims, now).then_some(())?;
        if let Some(iss) = &self.issuer {
            (claims.get("iss").and_then(Value::as_str) == Some(iss.as_str())).then_some(())?;
        }
        if let Some(aud) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == aud,
                Some(Value::Array(xs)) => xs.iter().any(|a| a.as_str() == Some(aud.as_str())),
                _ => false,
            };
            ok.then_some(())?;
        }
        let tenant = match &self.tenant {
            TenantFrom::Name(n) => n.clone(),
            TenantFrom::Claim(path) => {
                claim_lookup(&claims, path).and_then(Value::as_str).filter(|t| !t.is_empty())?.to_string()
            }
        };
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or("-").to_string();
        Some(Verified { tenant, subject, claims })
    }

    /// `exp` is required and must be in the future (within the leeway); `nbf`, when present,
    /// must be past.
    fn times_ok(&self, claims: &Map<String, Value>, now: u64) -> bool {
        let now = now as f64;
        let leeway = self.leeway_s as f64;
        let Some(exp) = claims.get("exp").and_then(Value::as_f64) else { return false };
        if now >= exp + leeway {
            return false;
        }
        match claims.get("nbf") {
            None => true,
            Some(v) => v.as_f64().is_some_and(|nbf| now + leeway >= nbf),
        }
    }
}

/// A claim by its path (`claim["org"]["id"]`); the whole claims object for an empty path.
pub fn claim_lookup<'a>(claims: &'a Map<String, Value>, path: &[PathSeg]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let PathSeg::Field(name) = first else { return None };
    let mut v = claims.get(name)?;
    for seg in rest {
        v = match seg {
            PathSeg::Field(f) => v.as_object()?.get(f)?,
            PathSeg::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    Some(v)
}

fn pem_key(alg: JwtAlg, pem: &[u8]) -> Result<DecodingKey, String> {
    let key = match alg {
        JwtAlg::RS256 | JwtAlg::RS384 | JwtAlg::RS512 => DecodingKey::from_rsa_pem(pem),
        JwtAlg::ES256 | JwtAlg::ES384 => DecodingKey::from_ec_pem(pem),
        JwtAlg::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => return Err("an HMAC algorithm has no PEM key".into()),
    };
    key.map_err(|e| format!("not a PEM public key for {alg:?}: {e}"))
}

fn jwks_keys(alg: JwtAlg, text: &str) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = vec![];
    for jwk in &set.keys {
        // A key that declares another algorithm, or is of another family, is not used for this set.
        if jwk.common.key_algorithm.is_some_and(|a| format!("{a:?}") != format!("{alg:?}")) {
            continue;
        }
        use jsonwebtoken::jwk::AlgorithmParameters as P;
        let family_fits = matches!(
            (&jwk.algorithm, alg),
            (P::RSA(_), JwtAlg::RS256 | JwtAlg::RS384 | JwtAlg::RS512)
                | (P::EllipticCurve(_), JwtAlg::ES256 | JwtAlg::ES384)
                | (P::OctetKeyPair(_), JwtAlg::EdDSA)
        );
        if !family_fits {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("a key of the JWKS is unusable: {e}"))?;
        keys.push((jwk.common.key_id.clone(), key));
    }
    if keys.is_empty() {
        return Err(format!("the JWKS has no key for {alg:?}"));
    }
    Ok(keys)
}

/// The value of `claim...` for an identity's claims: missing without a verified token.
pub fn claim_fact(claims: Option<&Map<String, Value>>, path: &[PathSeg]) -> crate::value::Val {
    use crate::value::Val;
    match (claims, path.is_empty()) {
        (None, _) => Val::Missing,
        (Some(c), true) => Val::from_json(&Value::Object(c.clone())),
        (Some(c), false) => claim_lookup(c, path).map(Val::from_json).unwrap_or(Val::Missing),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_900_000_000;

    fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        encode(&h, claims, key).unwrap_or_default()
    }

    fn claims() -> Value {
        json!({"sub": "s", "exp": NOW + 60, "org": {"id": "acme"}})
    }

    #[test]
    fn eddsa_from_a_jwks_picks_the_key_by_kid() {
        let jwks = include_str!("../testdata/ed25519.jwks.json");
        let key = EncodingKey::from_ed_pem(include_bytes!("../testdata/ed25519.key")).expect("ed key");
        let mut v = JwtVerifier::new("j", JwtAlg::EdDSA, KeySource::Jwks(jwks)).expect("jwks");
        v.tenant = TenantFrom::Claim(vec![PathSeg::Field("org".into()), PathSeg::Field("id".into())]);
        let ok = v.verify(&sign(Algorithm::EdDSA, &key, Some("ed-1"), &claims()), NOW).expect("verifies");
        assert_eq!((ok.tenant.as_str(), ok.subject.as_str()), ("acme", "s"));
        assert!(v.verify(&sign(Algorithm::EdDSA, &key, None, &claims()), NOW).is_some(), "no kid: any key");
        assert!(v.verify(&sign(Algorithm::EdDSA, &key, Some("ed-2"), &claims()), NOW).is_none(), "unknown kid");
        let no_org = json!({"sub": "s", "exp": NOW + 60});
        assert!(v.verify(&sign(Algorithm::EdDSA, &key, None, &no_org), NOW).is_none(), "no tenant claim");
        assert!(JwtVerifier::new("j", JwtAlg::RS256, KeySource::Jwks(jwks)).is_err(), "no key for RS256");
    }

    #[test]
    fn es256_from_pem_and_times_at_the_edges() {
        let pem = include_bytes!("../testdata/es256.pem");
        let key = EncodingKey::from_ec_pem(include_bytes!("../testdata/es256.p8")).expect("ec key");
        let mut v = JwtVerifier::new("j", JwtAlg::ES256, KeySource::Pem(pem)).expect("pem");
        let at = |exp: u64, nbf: Option<u64>| {
            let mut c = json!({"exp": exp});
            if let Some(n) = nbf {
                c["nbf"] = json!(n);
            }
            sign(Algorithm::ES256, &key, None, &c)
        };
        assert!(v.verify(&at(NOW + 1, None), NOW).is_some());
        assert!(v.verify(&at(NOW, None), NOW).is_none(), "exp is the first second it is refused");
        assert!(v.verify(&at(NOW + 60, Some(NOW)), NOW).is_some());
        assert!(v.verify(&at(NOW + 60, Some(NOW + 1)), NOW).is_none());
        assert!(v.verify(&sign(Algorithm::ES256, &key, None, &json!({"sub": "x"})), NOW).is_none(), "no exp");
        v.leeway_s = 5;
        assert!(v.verify(&at(NOW - 4, None), NOW).is_some() && v.verify(&at(NOW - 5, None), NOW).is_none());
        assert!(v.verify(&at(NOW + 60, Some(NOW + 5)), NOW).is_some());
        assert!(JwtVerifier::new("j", JwtAlg::ES256, KeySource::Secret(b"s")).is_err());
        assert!(JwtVerifier::new("j", JwtAlg::HS256, KeySource::Pem(pem)).is_err());
    }

    #[test]
    fn the_algorithm_is_the_policys() {
        let v = JwtVerifier::new("j", JwtAlg::HS512, KeySource::Secret(b"k")).expect("secret");
        let k = EncodingKey::from_secret(b"k");
        assert!(v.verify(&sign(Algorithm::HS512, &k, None, &claims()), NOW).is_some());
        assert!(v.verify(&sign(Algorithm::HS256, &k, None, &claims()), NOW).is_none(), "same secret, other alg");
        assert!(JwtAlg::parse("none").is_none() && JwtAlg::parse("HS256").is_some());
    }
}
