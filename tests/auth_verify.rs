//! End-to-end checks of `auth::Verifier`: real signatures from the fixture keys in
//! `tests/fixtures/auth/`, and a local axum server standing in for the issuer's JWKS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use activity_gateway::auth::{AuthConfig, AuthError, AuthSetupError, Claims, Verifier};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{json, Value};

const HS_SECRET: &str = "test-secret-test-secret-test-secret!";
/// The audience every JWKS configuration requires.
const AUDIENCE: &str = "activity-gateway";

// === Fixtures and helpers ===

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rsa_signer() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).unwrap()
}

fn ec_signer() -> EncodingKey {
    EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).unwrap()
}

fn hs_signer(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret)
}

/// Claims of a token valid for the next 10 minutes.
fn good_claims() -> Value {
    json!({ "sub": "0xabc", "iat": now(), "exp": now() + 600, "aud": AUDIENCE })
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs_config() -> AuthConfig {
    AuthConfig {
        hs256_secret: Some(HS_SECRET.into()),
        ..AuthConfig::default()
    }
}

fn rsa_config() -> AuthConfig {
    AuthConfig {
        rsa_public_key_pem: Some(fixture("rsa_public.pem")),
        ..AuthConfig::default()
    }
}

fn all_static_config() -> AuthConfig {
    AuthConfig {
        hs256_secret: Some(HS_SECRET.into()),
        rsa_public_key_pem: Some(fixture("rsa_public.pem")),
        ec_public_key_pem: Some(fixture("ec_public.pem")),
        ..AuthConfig::default()
    }
}

/// Verifies and insists on failure with exactly `code` and `reason`.
async fn assert_refused(verifier: &Verifier, token: &str, code: &str, reason: &str) {
    match verifier.verify(token).await {
        Ok(claims) => panic!("expected {code}/{reason}, got {claims:?}"),
        Err(err) => {
            assert_eq!(
                (err.code().as_str(), err.reason()),
                (code, reason),
                "{err:?} for token {token:?}"
            )
        }
    }
}

// === Valid tokens ===

#[tokio::test]
async fn valid_tokens_of_each_algorithm_verify() {
    let verifier = Verifier::new(&all_static_config()).unwrap();
    let claims = good_claims();
    let exp = claims["exp"].as_u64().unwrap();
    for token in [
        sign(
            Algorithm::HS256,
            &hs_signer(HS_SECRET.as_bytes()),
            None,
            &claims,
        ),
        sign(Algorithm::RS256, &rsa_signer(), None, &claims),
        sign(Algorithm::ES256, &ec_signer(), None, &claims),
    ] {
        assert_eq!(
            verifier.verify(&token).await.unwrap(),
            Claims {
                sub: "0xabc".into(),
                exp
            }
        );
    }
}

#[tokio::test]
async fn configured_issuer_and_audience_are_accepted_when_matching() {
    let verifier = Verifier::new(&AuthConfig {
        issuer: Some("https://issuer.example".into()),
        audience: Some("activity-gateway".into()),
        ..rsa_config()
    })
    .unwrap();
    let token = sign(
        Algorithm::RS256,
        &rsa_signer(),
        None,
        &json!({ "sub": "0xabc", "exp": now() + 600,
                 "iss": "https://issuer.example", "aud": ["other", "activity-gateway"] }),
    );
    assert_eq!(verifier.verify(&token).await.unwrap().sub, "0xabc");
}

#[tokio::test]
async fn aud_is_ignored_when_no_audience_is_configured() {
    let verifier = Verifier::new(&hs_config()).unwrap();
    let token = sign(
        Algorithm::HS256,
        &hs_signer(HS_SECRET.as_bytes()),
        None,
        &json!({ "sub": "0xabc", "exp": now() + 600, "aud": "someone-else" }),
    );
    assert!(verifier.verify(&token).await.is_ok());
}

// === Time ===

#[tokio::test]
async fn expired_token_is_token_expired() {
    let verifier = Verifier::new(&all_static_config()).unwrap();
    // Beyond the default 5s leeway.
    let claims = json!({ "sub": "0xabc", "exp": now() - 60 });
    let token = sign(Algorithm::ES256, &ec_signer(), None, &claims);
    assert_refused(&verifier, &token, "token_expired", "expired").await;
}

#[tokio::test]
async fn leeway_tolerates_small_skew_only() {
    let verifier = Verifier::new(&AuthConfig {
        leeway: Duration::from_secs(30),
        ..hs_config()
    })
    .unwrap();
    let key = hs_signer(HS_SECRET.as_bytes());
    let just_expired = json!({ "sub": "0xabc", "exp": now() - 10 });
    assert!(verifier
        .verify(&sign(Algorithm::HS256, &key, None, &just_expired))
        .await
        .is_ok());
    let long_expired = json!({ "sub": "0xabc", "exp": now() - 60 });
    let token = sign(Algorithm::HS256, &key, None, &long_expired);
    assert_refused(&verifier, &token, "token_expired", "expired").await;
}

#[tokio::test]
async fn future_nbf_is_token_not_yet_valid() {
    let verifier = Verifier::new(&rsa_config()).unwrap();
    let claims = json!({ "sub": "0xabc", "exp": now() + 600, "nbf": now() + 120 });
    let token = sign(Algorithm::RS256, &rsa_signer(), None, &claims);
    assert_refused(&verifier, &token, "token_not_yet_valid", "not_yet_valid").await;
}

// === Signatures and algorithms ===

#[tokio::test]
async fn bad_signatures_are_token_invalid() {
    let verifier = Verifier::new(&all_static_config()).unwrap();
    // Signed with another secret.
    let token = sign(
        Algorithm::HS256,
        &hs_signer(b"another-secret-another-secret-another"),
        None,
        &good_claims(),
    );
    assert_refused(&verifier, &token, "token_invalid", "bad_signature").await;

    // A genuine RS256 token whose payload was swapped for another subject.
    let genuine = sign(Algorithm::RS256, &rsa_signer(), None, &good_claims());
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged_payload =
        URL_SAFE_NO_PAD.encode(json!({ "sub": "0xevil", "exp": now() + 600 }).to_string());
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_refused(&verifier, &forged, "token_invalid", "bad_signature").await;

    // An ES256 token with the signature of another ES256 token.
    let a = sign(Algorithm::ES256, &ec_signer(), None, &good_claims());
    let b = sign(
        Algorithm::ES256,
        &ec_signer(),
        None,
        &json!({ "sub": "0xdef", "exp": now() + 600 }),
    );
    let spliced = format!(
        "{}.{}",
        a.rsplit_once('.').unwrap().0,
        b.rsplit_once('.').unwrap().1
    );
    assert_refused(&verifier, &spliced, "token_invalid", "bad_signature").await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let verifier = Verifier::new(&all_static_config()).unwrap();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(good_claims().to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.c2ln"),
    ] {
        assert_refused(&verifier, &token, "token_invalid", "alg_none").await;
    }
}

#[tokio::test]
async fn algorithm_without_a_configured_key_is_refused() {
    let rsa_only = Verifier::new(&rsa_config()).unwrap();
    let hs = sign(
        Algorithm::HS256,
        &hs_signer(HS_SECRET.as_bytes()),
        None,
        &good_claims(),
    );
    assert_refused(&rsa_only, &hs, "token_invalid", "alg_not_allowed").await;
    let es = sign(Algorithm::ES256, &ec_signer(), None, &good_claims());
    assert_refused(&rsa_only, &es, "token_invalid", "alg_not_allowed").await;
    let rs512 = sign(Algorithm::RS512, &rsa_signer(), None, &good_claims());
    assert_refused(&rsa_only, &rs512, "token_invalid", "alg_not_allowed").await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The algorithm-confusion forgery: everyone knows the public key, so a verifier that
    // used it as an HMAC secret would accept anyone's token.
    let public_pem = fixture("rsa_public.pem");
    let forged = sign(
        Algorithm::HS256,
        &hs_signer(public_pem.as_bytes()),
        None,
        &good_claims(),
    );
    let rsa_only = Verifier::new(&rsa_config()).unwrap();
    assert_refused(&rsa_only, &forged, "token_invalid", "alg_not_allowed").await;
    // With HS256 enabled too, the token is checked against the real secret only.
    let both = Verifier::new(&all_static_config()).unwrap();
    assert_refused(&both, &forged, "token_invalid", "bad_signature").await;
}

// === Claims ===

#[tokio::test]
async fn wrong_issuer_and_audience_are_refused() {
    let verifier = Verifier::new(&AuthConfig {
        issuer: Some("https://issuer.example".into()),
        audience: Some("activity-gateway".into()),
        ..hs_config()
    })
    .unwrap();
    let key = hs_signer(HS_SECRET.as_bytes());
    let exp = now() + 600;
    let cases = [
        (
            json!({ "sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "activity-gateway" }),
            "wrong_issuer",
        ),
        (
            json!({ "sub": "a", "exp": exp, "iss": "https://issuer.example", "aud": "other" }),
            "wrong_audience",
        ),
        (
            json!({ "sub": "a", "exp": exp, "aud": "activity-gateway" }),
            "missing_claim",
        ),
        (
            json!({ "sub": "a", "exp": exp, "iss": "https://issuer.example" }),
            "missing_claim",
        ),
    ];
    for (claims, reason) in cases {
        let token = sign(Algorithm::HS256, &key, None, &claims);
        assert_refused(&verifier, &token, "token_invalid", reason).await;
    }
}

#[tokio::test]
async fn missing_exp_or_sub_is_missing_claim() {
    let verifier = Verifier::new(&hs_config()).unwrap();
    let key = hs_signer(HS_SECRET.as_bytes());
    for claims in [
        json!({ "sub": "0xabc" }),
        json!({ "exp": now() + 600 }),
        json!({ "sub": "", "exp": now() + 600 }),
        json!({ "sub": 42, "exp": now() + 600 }),
    ] {
        let token = sign(Algorithm::HS256, &key, None, &claims);
        assert_refused(&verifier, &token, "token_invalid", "missing_claim").await;
    }
}

#[tokio::test]
async fn garbage_is_malformed() {
    let verifier = Verifier::new(&all_static_config()).unwrap();
    // Correctly signed, but the payload is not JSON: the signature passes, the parse fails.
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
        URL_SAFE_NO_PAD.encode("nope")
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &hs_signer(HS_SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    let not_json_payload = format!("{message}.{signature}");
    for token in ["", "abc", "a.b.c", "a.b", "a.b.c.d", &not_json_payload] {
        assert_refused(&verifier, token, "token_invalid", "malformed").await;
    }
}

// === Setup errors ===

#[test]
fn setup_refuses_wrong_or_private_pems() {
    let rsa_as_ec = AuthConfig {
        ec_public_key_pem: Some(fixture("rsa_public.pem")),
        ..AuthConfig::default()
    };
    assert!(matches!(
        Verifier::new(&rsa_as_ec),
        Err(AuthSetupError::InvalidKey {
            setting: "auth.ec_public_key_pem",
            ..
        })
    ));
    let ec_as_rsa = AuthConfig {
        rsa_public_key_pem: Some(fixture("ec_public.pem")),
        ..AuthConfig::default()
    };
    assert!(matches!(
        Verifier::new(&ec_as_rsa),
        Err(AuthSetupError::InvalidKey {
            setting: "auth.rsa_public_key_pem",
            ..
        })
    ));
    let private = AuthConfig {
        rsa_public_key_pem: Some(fixture("rsa_private.pem")),
        ..AuthConfig::default()
    };
    assert!(matches!(
        Verifier::new(&private),
        Err(AuthSetupError::PrivateKeyGiven {
            setting: "auth.rsa_public_key_pem"
        })
    ));
}

// === JWKS ===

/// A JWKS endpoint whose document and health can be changed mid-test, counting its hits.
#[derive(Clone)]
struct JwksServer {
    doc: Arc<Mutex<Value>>,
    healthy: Arc<Mutex<bool>>,
    hits: Arc<AtomicUsize>,
    url: String,
}

impl JwksServer {
    async fn start(doc: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = JwksServer {
            doc: Arc::new(Mutex::new(doc)),
            healthy: Arc::new(Mutex::new(true)),
            hits: Arc::new(AtomicUsize::new(0)),
            url: format!("http://{addr}/.well-known/jwks.json"),
        };
        let app = Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .route(
                "/moved",
                get(|| async { (StatusCode::FOUND, [("location", "/.well-known/jwks.json")]) }),
            )
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn set(&self, doc: Value) {
        *self.doc.lock() = doc;
    }

    fn config(&self, min_refresh: Duration) -> AuthConfig {
        AuthConfig {
            jwks_url: Some(self.url.clone()),
            jwks_cache_ttl: Duration::from_secs(60),
            jwks_min_refresh_interval: min_refresh,
            audience: Some(AUDIENCE.into()),
            ..AuthConfig::default()
        }
    }
}

async fn serve_jwks(State(server): State<JwksServer>) -> Response {
    server.hits.fetch_add(1, Ordering::SeqCst);
    if !*server.healthy.lock() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let doc = server.doc.lock().clone();
    Json(doc).into_response()
}

/// The public JWK of a fixture signing key, under `kid`.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

fn jwks(keys: Vec<Jwk>) -> Value {
    serde_json::to_value(JwkSet { keys }).unwrap()
}

/// Kid "A" is the RSA fixture key, kid "B" the P-256 one.
fn key_a() -> Jwk {
    jwk(&rsa_signer(), Algorithm::RS256, "A")
}

fn key_b() -> Jwk {
    jwk(&ec_signer(), Algorithm::ES256, "B")
}

fn token_a() -> String {
    sign(Algorithm::RS256, &rsa_signer(), Some("A"), &good_claims())
}

fn token_b() -> String {
    sign(Algorithm::ES256, &ec_signer(), Some("B"), &good_claims())
}

#[tokio::test]
async fn jwks_is_fetched_lazily_and_cached() {
    let server = JwksServer::start(jwks(vec![key_a()])).await;
    let verifier = Verifier::new(&server.config(Duration::from_millis(300))).unwrap();
    assert_eq!(server.hits(), 0, "new() must not fetch");
    for _ in 0..5 {
        assert_eq!(verifier.verify(&token_a()).await.unwrap().sub, "0xabc");
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn concurrent_first_use_fetches_once() {
    let server = JwksServer::start(jwks(vec![key_a()])).await;
    // No rate limit, so only the single-flight gate can keep this at one fetch.
    let verifier = Verifier::new(&server.config(Duration::ZERO)).unwrap();
    let token = token_a();
    let results = futures_util::future::join_all((0..32).map(|_| {
        let verifier = verifier.clone();
        let token = token.clone();
        tokio::spawn(async move { verifier.verify(&token).await })
    }))
    .await;
    for result in results {
        assert!(result.unwrap().is_ok());
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_old_keys_are_dropped() {
    let min_refresh = Duration::from_millis(300);
    let server = JwksServer::start(jwks(vec![key_a()])).await;
    let verifier = Verifier::new(&server.config(min_refresh)).unwrap();
    assert!(verifier.verify(&token_a()).await.is_ok());
    assert_eq!(server.hits(), 1);

    // The issuer rotates to B only. Within the rate limit an unknown kid cannot refetch...
    server.set(jwks(vec![key_b()]));
    assert_refused(&verifier, &token_b(), "token_invalid", "unknown_kid").await;
    assert_eq!(server.hits(), 1);
    // ...and A keeps verifying from the cache meanwhile.
    assert!(verifier.verify(&token_a()).await.is_ok());

    // Once the interval has passed, the unknown kid B triggers a refetch and verifies.
    tokio::time::sleep(min_refresh + Duration::from_millis(50)).await;
    assert!(verifier.verify(&token_b()).await.is_ok());
    assert_eq!(server.hits(), 2);

    // The refetch replaced the set: A, withdrawn by the issuer, no longer verifies, and
    // asking for it again within the interval does not refetch.
    assert_refused(&verifier, &token_a(), "token_invalid", "unknown_kid").await;
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn unknown_kid_flood_refetches_at_most_once_per_interval() {
    let min_refresh = Duration::from_millis(400);
    let server = JwksServer::start(jwks(vec![key_a()])).await;
    let verifier = Verifier::new(&server.config(min_refresh)).unwrap();
    assert!(verifier.verify(&token_a()).await.is_ok());
    tokio::time::sleep(min_refresh + Duration::from_millis(50)).await;

    // The signature never gets checked (the kid is unknown first), so an attacker needs no
    // key to send these; neither do we.
    let payload = URL_SAFE_NO_PAD.encode(good_claims().to_string());
    let results = futures_util::future::join_all((0..100).map(|i| {
        let verifier = verifier.clone();
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"random-{i}"}}"#));
        let token = format!("{header}.{payload}.c2ln");
        tokio::spawn(async move { verifier.verify(&token).await })
    }))
    .await;
    for result in results {
        assert_eq!(result.unwrap().unwrap_err(), AuthError::UnknownKid);
    }
    assert_eq!(server.hits(), 2, "one initial fetch plus one refetch");
    // Known keys are unaffected by the flood.
    assert!(verifier.verify(&token_a()).await.is_ok());
    assert_eq!(server.hits(), 2);

    tokio::time::sleep(min_refresh + Duration::from_millis(50)).await;
    let token = sign(
        Algorithm::RS256,
        &rsa_signer(),
        Some("later"),
        &good_claims(),
    );
    assert_refused(&verifier, &token, "token_invalid", "unknown_kid").await;
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn unreachable_jwks_is_jwks_unavailable() {
    let server = JwksServer::start(jwks(vec![key_a()])).await;
    *server.healthy.lock() = false;
    let verifier = Verifier::new(&server.config(Duration::from_millis(300))).unwrap();
    assert_refused(&verifier, &token_a(), "token_invalid", "jwks_unavailable").await;
    assert_refused(&verifier, &token_a(), "token_invalid", "jwks_unavailable").await;
    assert_eq!(
        server.hits(),
        1,
        "a failing server is not retried within the interval"
    );

    // Nothing listening at all.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let verifier = Verifier::new(&AuthConfig {
        jwks_url: Some(url),
        audience: Some(AUDIENCE.into()),
        ..AuthConfig::default()
    })
    .unwrap();
    assert_refused(&verifier, &token_a(), "token_invalid", "jwks_unavailable").await;
}

#[tokio::test]
async fn a_jwks_redirect_is_not_followed() {
    let server = JwksServer::start(jwks(vec![key_a()])).await;
    let verifier = Verifier::new(&AuthConfig {
        jwks_url: Some(server.url.replace("/.well-known/jwks.json", "/moved")),
        ..server.config(Duration::from_millis(300))
    })
    .unwrap();
    assert_refused(&verifier, &token_a(), "token_invalid", "jwks_unavailable").await;
    assert_eq!(server.hits(), 0, "the redirect's target was fetched");
}

#[tokio::test]
async fn a_jwks_token_living_longer_than_the_maximum_is_refused() {
    let server = JwksServer::start(jwks(vec![key_a()])).await;
    let verifier = Verifier::new(&AuthConfig {
        max_token_lifetime: Duration::from_secs(3600),
        ..server.config(Duration::from_millis(300))
    })
    .unwrap();
    let claims = json!({ "sub": "0xabc", "iat": now() - 60, "exp": now() + 3590, "aud": AUDIENCE });
    let token = sign(Algorithm::RS256, &rsa_signer(), Some("A"), &claims);
    assert_refused(&verifier, &token, "token_invalid", "lifetime_too_long").await;
    let claims = json!({ "sub": "0xabc", "exp": now() + 3700, "aud": AUDIENCE });
    let token = sign(Algorithm::RS256, &rsa_signer(), Some("A"), &claims);
    assert_refused(&verifier, &token, "token_invalid", "lifetime_too_long").await;
    assert!(verifier.verify(&token_a()).await.is_ok());
}

#[tokio::test]
async fn stale_keys_are_refreshed_after_ttl_and_kept_if_the_refresh_fails() {
    let server = JwksServer::start(jwks(vec![key_a()])).await;
    let verifier = Verifier::new(&AuthConfig {
        jwks_cache_ttl: Duration::from_millis(200),
        jwks_min_refresh_interval: Duration::from_millis(100),
        ..server.config(Duration::ZERO)
    })
    .unwrap();
    assert!(verifier.verify(&token_a()).await.is_ok());
    assert_eq!(server.hits(), 1);

    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(verifier.verify(&token_a()).await.is_ok());
    assert_eq!(server.hits(), 2, "a stale set is refetched");

    *server.healthy.lock() = false;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        verifier.verify(&token_a()).await.is_ok(),
        "a cached key outlives a failed refresh"
    );
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn jwks_key_is_bound_to_its_key_type() {
    let server = JwksServer::start(jwks(vec![key_a(), key_b()])).await;
    let verifier = Verifier::new(&server.config(Duration::from_millis(300))).unwrap();
    assert!(verifier.verify(&token_b()).await.is_ok());
    // An ES256 token naming the RSA key A.
    let mismatched = sign(Algorithm::ES256, &ec_signer(), Some("A"), &good_claims());
    assert_refused(&verifier, &mismatched, "token_invalid", "alg_not_allowed").await;
    // HS256 signed with RSA key A's public PEM: HS256 is not enabled by a JWKS.
    let forged = sign(
        Algorithm::HS256,
        &hs_signer(fixture("rsa_public.pem").as_bytes()),
        Some("A"),
        &good_claims(),
    );
    assert_refused(&verifier, &forged, "token_invalid", "alg_not_allowed").await;
    // Without a kid and without a static key, nothing can verify an RS256 token.
    let no_kid = sign(Algorithm::RS256, &rsa_signer(), None, &good_claims());
    assert_refused(&verifier, &no_kid, "token_invalid", "unknown_kid").await;
}

#[tokio::test]
async fn static_key_serves_tokens_without_kid_alongside_jwks() {
    let server = JwksServer::start(jwks(vec![key_b()])).await;
    let verifier = Verifier::new(&AuthConfig {
        rsa_public_key_pem: Some(fixture("rsa_public.pem")),
        ..server.config(Duration::from_millis(300))
    })
    .unwrap();
    let no_kid = sign(Algorithm::RS256, &rsa_signer(), None, &good_claims());
    assert!(verifier.verify(&no_kid).await.is_ok());
    assert_eq!(server.hits(), 0, "a static key needs no JWKS");
    assert!(verifier.verify(&token_b()).await.is_ok());
    assert_eq!(server.hits(), 1);
}

// === Metrics ===

mod metrics_capture {
    //! A minimal recorder that remembers the `reason` label of every counter increment.

    use std::sync::Arc;

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use parking_lot::Mutex;

    #[derive(Default, Clone)]
    pub struct Capture(pub Arc<Mutex<Vec<(String, String, u64)>>>);

    struct Handle {
        name: String,
        reason: String,
        sink: Capture,
    }

    impl CounterFn for Handle {
        fn increment(&self, value: u64) {
            self.sink
                .0
                .lock()
                .push((self.name.clone(), self.reason.clone(), value));
        }
        fn absolute(&self, _value: u64) {}
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let reason = key
                .labels()
                .find(|l| l.key() == "reason")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            Counter::from_arc(Arc::new(Handle {
                name: key.name().to_owned(),
                reason,
                sink: self.clone(),
            }))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

#[test]
fn each_failure_is_counted_once_with_its_reason() {
    let capture = metrics_capture::Capture::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let verifier = Verifier::new(&hs_config()).unwrap();
    let expired = sign(
        Algorithm::HS256,
        &hs_signer(HS_SECRET.as_bytes()),
        None,
        &json!({ "sub": "a", "exp": now() - 60 }),
    );
    let good = sign(
        Algorithm::HS256,
        &hs_signer(HS_SECRET.as_bytes()),
        None,
        &good_claims(),
    );
    // The local recorder is per thread; a current-thread runtime keeps verify on this one.
    metrics::with_local_recorder(&capture, || {
        runtime.block_on(async {
            assert!(verifier.verify("abc").await.is_err());
            assert!(verifier.verify(&expired).await.is_err());
            assert!(verifier.verify(&good).await.is_ok());
        });
        activity_gateway::auth::record_failure(&AuthError::Missing);
    });
    let seen = capture.0.lock().clone();
    let expected: Vec<_> = ["malformed", "expired", "missing"]
        .into_iter()
        .map(|r| ("gateway_auth_failures_total".to_owned(), r.to_owned(), 1))
        .collect();
    assert_eq!(seen, expected);
}
