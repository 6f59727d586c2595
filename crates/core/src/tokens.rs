//! The two secrets-based checks on the buy path: the signed buy-path token (nobody can buy
//! before the start, even by guessing URLs) and the buyer's JWT (who is buying).

use crate::ids::{BuyerId, SaleId};
use crate::line::{LineId, Seed};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of HMAC kept in a buy-path token: 128 bits is far beyond guessing.
const BUY_PATH_TOKEN_BYTES: usize = 16;
/// Longest JWT we look at, in bytes; anything longer is refused before parsing.
pub const BUYER_TOKEN_BYTES_MAX: usize = 2048;

/// Derives and checks buy-path tokens: HMAC over the sale id and its start time.
///
/// The token changes whenever the start moves (edit or "start now"), so a path leaked for an
/// old schedule is useless. It is handed out only by the status endpoint once the sale is live.
#[derive(Clone)]
pub struct BuyPathSigner {
    mac: HmacSha256,
}

impl std::fmt::Debug for BuyPathSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuyPathSigner(<secret>)")
    }
}

impl BuyPathSigner {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
        Self { mac }
    }

    fn mac_for(&self, sale: SaleId, starts_at: OffsetDateTime) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(b"flashsale buy path v1\0");
        mac.update(sale.0.as_bytes());
        mac.update(&(starts_at.unix_timestamp_nanos() / 1_000_000).to_be_bytes());
        mac
    }

    pub fn token(&self, sale: SaleId, starts_at: OffsetDateTime) -> String {
        let tag = self.mac_for(sale, starts_at).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&tag[..BUY_PATH_TOKEN_BYTES])
    }

    /// Constant-time check of a token taken from a URL.
    pub fn verify(&self, sale: SaleId, starts_at: OffsetDateTime, token: &str) -> bool {
        // 16 bytes encode to 22 characters; refuse anything else before decoding.
        if token.len() != 22 {
            return false;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        self.mac_for(sale, starts_at)
            .verify_truncated_left(&bytes)
            .is_ok()
    }
}

/// A signed token's text: `body`, then the first `TOTAL - body.len()` bytes of the MAC over
/// what `mac` was fed already (its domain and context) followed by `body`, in unpadded URL-safe
/// base64. The admission ticket and the line's proof-of-work challenge are both made so.
pub(crate) fn seal<const TOTAL: usize>(mut mac: HmacSha256, body: &[u8]) -> String {
    assert!(body.len() < TOTAL, "a sealed token keeps some signature");
    let mut bytes = [0u8; TOTAL];
    bytes[..body.len()].copy_from_slice(body);
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    bytes[body.len()..].copy_from_slice(&tag[..TOTAL - body.len()]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The bytes of a token that [`seal`] made with the same `mac` and a body of `body_bytes`, or
/// `None` when its length, its encoding or its signature is wrong. The length is checked before
/// decoding, the signature in constant time, and nothing is allocated.
pub(crate) fn unseal<const TOTAL: usize>(
    mut mac: HmacSha256,
    text: &str,
    body_bytes: usize,
) -> Option<[u8; TOTAL]> {
    assert!(body_bytes < TOTAL, "a sealed token keeps some signature");
    if text.len() != (TOTAL * 4).div_ceil(3) {
        return None;
    }
    // Room for the decoder's estimate, which may round up past the exact length.
    let mut decoded = [0u8; 64];
    let written = URL_SAFE_NO_PAD
        .decode_slice(text, &mut decoded[..TOTAL + 3])
        .ok()?;
    if written != TOTAL {
        return None;
    }
    let bytes: [u8; TOTAL] = decoded[..TOTAL].try_into().expect("TOTAL bytes");
    mac.update(&bytes[..body_bytes]);
    mac.verify_truncated_left(&bytes[body_bytes..]).ok()?;
    Some(bytes)
}

/// Bytes of an admission ticket's signature (128 bits, as the buy-path token's).
const TICKET_MAC_BYTES: usize = 16;
/// Bytes of a ticket: position (8), admission end in Unix ms (8), signature.
const TICKET_BYTES: usize = 16 + TICKET_MAC_BYTES;

/// What an admission ticket grants: the holder of `position` may buy until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub position: u64,
    pub until: OffsetDateTime,
}

/// Why a ticket was refused (a buy without its turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketRefused {
    #[error("not an admission ticket of this sale and buyer")]
    Invalid,
    #[error("the admission has ended")]
    Ended,
}

/// The secrets of a sale's line, from the buy-path secret every node shares: the draw's seed,
/// and the admission tickets that take the place of the buy path once a sale has a line.
///
/// The seed is `HMAC-SHA256(buy-path secret, "flashsale line seed v1\0" ‖ the sale id's 16
/// bytes)`: fixed when the sale is created, the same on every node and after a restart, and
/// unknown to anyone without the secret until it is published at the start. Its commitment is
/// published before the line opens, so it cannot be chosen after seeing who joined.
#[derive(Clone)]
pub struct LineSigner {
    mac: HmacSha256,
}

impl std::fmt::Debug for LineSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineSigner(<secret>)")
    }
}

impl LineSigner {
    pub fn new(secret: &[u8]) -> Self {
        let mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
        Self { mac }
    }

    /// The seed of a sale's draw.
    pub fn seed(&self, sale: SaleId) -> Seed {
        let mut mac = self.mac.clone();
        mac.update(b"flashsale line seed v1\0");
        mac.update(sale.0.as_bytes());
        Seed(mac.finalize().into_bytes().into())
    }

    fn ticket_mac(&self, sale: SaleId, line: &LineId) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(b"flashsale admission v1\0");
        mac.update(sale.0.as_bytes());
        mac.update(&line.0);
        mac
    }

    /// A ticket for `admission` of `line` in `sale`: URL-safe, 43 characters.
    pub fn ticket(&self, sale: SaleId, line: &LineId, admission: Admission) -> String {
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&admission.position.to_be_bytes());
        let until_ms = (admission.until.unix_timestamp_nanos() / 1_000_000) as i64;
        body[8..].copy_from_slice(&until_ms.to_be_bytes());
        seal::<TICKET_BYTES>(self.ticket_mac(sale, line), &body)
    }

    /// Checks a ticket taken from a URL (constant time on the signature): for this sale and
    /// this buyer's line id, and not ended at `now`.
    pub fn verify(
        &self,
        sale: SaleId,
        line: &LineId,
        ticket: &str,
        now: OffsetDateTime,
    ) -> Result<Admission, TicketRefused> {
        let bytes = unseal::<TICKET_BYTES>(self.ticket_mac(sale, line), ticket, 16)
            .ok_or(TicketRefused::Invalid)?;
        let position = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let until_ms = i64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let until = OffsetDateTime::from_unix_timestamp_nanos(i128::from(until_ms) * 1_000_000)
            .map_err(|_| TicketRefused::Invalid)?;
        if now >= until {
            return Err(TicketRefused::Ended);
        }
        Ok(Admission { position, until })
    }
}

/// Why a buyer token was refused. All of these are the client's problem (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or its signature is wrong")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token's subject is not a valid buyer id")]
    BadSubject,
}

#[derive(Debug, Serialize)]
struct BuyerClaims {
    sub: String,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

/// The claims `verify` reads, borrowed from the decoded payload where no escape forbids it.
/// Other claims are ignored.
#[derive(Deserialize)]
struct ClaimsSeen<'a> {
    #[serde(borrow)]
    sub: std::borrow::Cow<'a, str>,
    exp: i64,
}

#[derive(Deserialize)]
struct HeaderSeen<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
}

/// The encoded headers `{"typ":"JWT","alg":"HS256"}` (what `issue` and jsonwebtoken write)
/// and `{"alg":"HS256","typ":"JWT"}` (what most other libraries write): known at a glance, so
/// only another header is decoded and parsed.
const HS256_HEADERS: [&str; 2] = [
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
];
/// Characters of an HS256 signature: 32 bytes in unpadded base64.
const HS256_SIGNATURE_CHARS: usize = 43;

/// Verifies (and, for the development login and the load generator, issues) buyer JWTs:
/// HS256 only, `exp` and `sub` required, `now` passed in.
///
/// Verifying is written here rather than left to jsonwebtoken (which issues, and against
/// which the tests check every verdict): jsonwebtoken builds the HMAC key schedule from the
/// secret on every call and parses the claims into owned strings, and this is the first thing
/// every buy, refusal and line poll pays. Here the keyed HMAC state is built once and cloned
/// per token, the token is decoded into stack buffers, and the claims are read borrowed.
#[derive(Clone)]
pub struct BuyerTokens {
    mac: HmacSha256,
    encoding: EncodingKey,
}

impl std::fmt::Debug for BuyerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuyerTokens(<secret>)")
    }
}

impl BuyerTokens {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key length"),
            encoding: EncodingKey::from_secret(secret),
        }
    }

    /// The buyer named by a valid, unexpired token: three base64url (unpadded) parts, a header
    /// whose `alg` is `HS256`, the HMAC-SHA256 of `header.payload` under the secret (checked in
    /// constant time), and claims with an integer `exp` after `now` (and not before 1970) and a `sub` that is a valid
    /// buyer id.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<BuyerId, TokenError> {
        if token.len() > BUYER_TOKEN_BYTES_MAX {
            return Err(TokenError::Invalid);
        }
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let (header, payload) = signed.split_once('.').ok_or(TokenError::Invalid)?;
        if payload.contains('.') || signature.len() != HS256_SIGNATURE_CHARS {
            return Err(TokenError::Invalid);
        }
        let mut tag = [0u8; 32 + 3];
        let written = URL_SAFE_NO_PAD
            .decode_slice(signature, &mut tag)
            .map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag[..written])
            .map_err(|_| TokenError::Invalid)?;
        let mut buffer = [0u8; BUYER_TOKEN_BYTES_MAX * 3 / 4 + 3];
        if !HS256_HEADERS.contains(&header) {
            let header = decode_part(header, &mut buffer)?;
            let seen: HeaderSeen =
                serde_json::from_slice(header).map_err(|_| TokenError::Invalid)?;
            if seen.alg != "HS256" {
                return Err(TokenError::Invalid);
            }
        }
        let claims = decode_part(payload, &mut buffer)?;
        let claims: ClaimsSeen = serde_json::from_slice(claims).map_err(|_| TokenError::Invalid)?;
        // As jsonwebtoken reads it: a time before 1970 is a malformed `exp`, not an expired one.
        if claims.exp < 0 {
            return Err(TokenError::Invalid);
        }
        if claims.exp <= now.unix_timestamp() {
            return Err(TokenError::Expired);
        }
        BuyerId::parse(&claims.sub).map_err(|_| TokenError::BadSubject)
    }

    /// Signs a token for `buyer`, valid until `expires_at`.
    pub fn issue(
        &self,
        buyer: &BuyerId,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> String {
        let claims = BuyerClaims {
            sub: buyer.as_str().to_owned(),
            exp: expires_at.unix_timestamp(),
            iat: Some(now.unix_timestamp()),
        };
        // Encoding HS256 claims made of a string and integers cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }
}

/// One unpadded base64url part of a token, decoded into `buffer` (as long as a whole token can
/// need).
fn decode_part<'b>(part: &str, buffer: &'b mut [u8]) -> Result<&'b [u8], TokenError> {
    let written = URL_SAFE_NO_PAD
        .decode_slice(part, buffer)
        .map_err(|_| TokenError::Invalid)?;
    Ok(&buffer[..written])
}

/// The token of an `Authorization` header value `Bearer <token>` (the scheme as `Bearer` or
/// `bearer`), without surrounding whitespace; `None` for any other scheme.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let token = header_value
        .strip_prefix("Bearer ")
        .or_else(|| header_value.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// Whether `presented` is the admin token, compared in constant time (no early exit on the
/// first differing byte, so the time taken tells nothing about how much of a guess was right).
/// An empty expected token matches nothing.
pub fn admin_token_matches(expected: &[u8], presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && bool::from(expected.ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2030-01-01 12:00 UTC);

    #[test]
    fn bearer_tokens_and_the_admin_check() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert!(admin_token_matches(b"s3cret", "s3cret"));
        assert!(!admin_token_matches(b"s3cret", "s3cre"));
        assert!(!admin_token_matches(b"s3cret", "s3cret!"));
        assert!(
            !admin_token_matches(b"", ""),
            "an empty admin token matches nothing"
        );
    }

    #[test]
    fn buy_path_token_is_bound_to_sale_start_and_secret() {
        let signer = BuyPathSigner::new(b"secret");
        let sale = SaleId(Uuid::from_u128(1));
        let token = signer.token(sale, NOW);
        assert_eq!(token.len(), 22);
        assert!(signer.verify(sale, NOW, &token));
        assert!(!signer.verify(sale, NOW + Duration::milliseconds(1), &token));
        assert!(!signer.verify(SaleId(Uuid::from_u128(2)), NOW, &token));
        assert!(!BuyPathSigner::new(b"other").verify(sale, NOW, &token));
        for bad in [
            "",
            "x",
            "AAAAAAAAAAAAAAAAAAAAAA",
            "!!!!!!!!!!!!!!!!!!!!!!",
            &format!("{token}A"),
        ] {
            assert!(!signer.verify(sale, NOW, bad), "{bad}");
        }
    }

    #[test]
    fn buyer_token_round_trip_and_rejections() {
        let tokens = BuyerTokens::new(b"shop-secret");
        let alice = BuyerId::parse("alice").unwrap();
        let good = tokens.issue(&alice, NOW, NOW + Duration::hours(1));
        assert_eq!(tokens.verify(&good, NOW), Ok(alice.clone()));
        assert_eq!(
            tokens.verify(&good, NOW + Duration::hours(1)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            BuyerTokens::new(b"other").verify(&good, NOW),
            Err(TokenError::Invalid)
        );
        assert_eq!(tokens.verify("not.a.jwt", NOW), Err(TokenError::Invalid));
        assert_eq!(
            tokens.verify(&"a".repeat(5000), NOW),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn buyer_token_needs_hs256_exp_and_a_valid_sub() {
        let secret = b"shop-secret";
        let tokens = BuyerTokens::new(secret);
        let key = EncodingKey::from_secret(secret);
        let sign = |header: Header, claims: serde_json::Value| {
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        let exp = (NOW + Duration::hours(1)).unix_timestamp();
        let no_exp = sign(
            Header::new(Algorithm::HS256),
            serde_json::json!({"sub": "alice"}),
        );
        assert_eq!(tokens.verify(&no_exp, NOW), Err(TokenError::Invalid));
        let no_sub = sign(
            Header::new(Algorithm::HS256),
            serde_json::json!({"exp": exp}),
        );
        assert_eq!(tokens.verify(&no_sub, NOW), Err(TokenError::Invalid));
        let hs512 = sign(
            Header::new(Algorithm::HS512),
            serde_json::json!({"sub": "alice", "exp": exp}),
        );
        assert_eq!(tokens.verify(&hs512, NOW), Err(TokenError::Invalid));
        let bad_sub = sign(
            Header::new(Algorithm::HS256),
            serde_json::json!({"sub": "a b", "exp": exp}),
        );
        assert_eq!(tokens.verify(&bad_sub, NOW), Err(TokenError::BadSubject));
        // "alg": "none" with the signature stripped.
        let good = sign(
            Header::new(Algorithm::HS256),
            serde_json::json!({"sub": "alice", "exp": exp}),
        );
        let mut parts = good.split('.');
        let (_, payload) = (parts.next(), parts.next().unwrap());
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            tokens.verify(&format!("{none_header}.{payload}."), NOW),
            Err(TokenError::Invalid)
        );
    }

    /// jsonwebtoken's verdict, as `verify` gave it before it was written here.
    fn reference_verdict(
        secret: &[u8],
        token: &str,
        now: OffsetDateTime,
    ) -> Result<BuyerId, TokenError> {
        #[derive(Deserialize)]
        struct Claims {
            sub: String,
            exp: i64,
        }
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if token.len() > BUYER_TOKEN_BYTES_MAX {
            return Err(TokenError::Invalid);
        }
        let key = jsonwebtoken::DecodingKey::from_secret(secret);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now.unix_timestamp() {
            return Err(TokenError::Expired);
        }
        BuyerId::parse(&data.claims.sub).map_err(|_| TokenError::BadSubject)
    }

    /// Every verdict is jsonwebtoken's: headers in either order, with a key id or without a
    /// type, extra claims, an escaped subject, other algorithms, damaged parts, padding, a
    /// fourth part, the wrong secret, the edge of expiry.
    #[test]
    fn buyer_token_verdicts_are_jsonwebtokens() {
        let secret = b"shop-secret";
        let tokens = BuyerTokens::new(secret);
        let key = EncodingKey::from_secret(secret);
        let other = EncodingKey::from_secret(b"other");
        let exp = (NOW + Duration::hours(1)).unix_timestamp();
        let sign_raw = |header: &str, claims: &str, key: &EncodingKey| {
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let signature =
                jsonwebtoken::crypto::sign(signed.as_bytes(), key, Algorithm::HS256).unwrap();
            format!("{signed}.{signature}")
        };
        let plain = format!(r#"{{"sub":"alice","exp":{exp}}}"#);
        let mut cases = vec![
            tokens.issue(
                &BuyerId::parse("alice").unwrap(),
                NOW,
                NOW + Duration::hours(1),
            ),
            sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &plain, &key),
            sign_raw(r#"{"typ":"JWT","alg":"HS256"}"#, &plain, &key),
            sign_raw(r#"{"alg":"HS256"}"#, &plain, &key),
            sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &plain, &key),
            sign_raw(r#"{"alg":"HS384"}"#, &plain, &key),
            sign_raw(r#"{"alg":"none"}"#, &plain, &key),
            sign_raw(r#"{"typ":"JWT"}"#, &plain, &key),
            sign_raw(r#"not json"#, &plain, &key),
            sign_raw(r#"{"alg":"HS256"}"#, &plain, &other),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"al\u0069ce","exp":1999999999,"aud":"x"}"#,
                &key,
            ),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"alice","exp":1999999999,"nbf":2999999999}"#,
                &key,
            ),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"sub":"bob","exp":{}}}"#, NOW.unix_timestamp()),
                &key,
            ),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"sub":"bob","exp":{}}}"#, NOW.unix_timestamp() + 1),
                &key,
            ),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"a b","exp":1999999999}"#,
                &key,
            ),
            sign_raw(r#"{"alg":"HS256"}"#, r#"{"sub":7,"exp":1999999999}"#, &key),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"alice","exp":"1999999999"}"#,
                &key,
            ),
            sign_raw(r#"{"alg":"HS256"}"#, r#"{"sub":"alice"}"#, &key),
            sign_raw(r#"{"alg":"HS256"}"#, r#"{"sub":"alice","exp":-5}"#, &key),
            sign_raw(r#"{"alg":"HS256"}"#, r#"{"sub":"alice","exp":0}"#, &key),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"alice","exp":9223372036854775807}"#,
                &key,
            ),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"alice","exp":9223372036854775808}"#,
                &key,
            ),
            sign_raw(
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"alice","exp":1999999999.5}"#,
                &key,
            ),
            sign_raw(r#"{"alg":"HS256"}"#, r#"[1,2]"#, &key),
        ];
        let good = cases[0].clone();
        cases.extend([
            format!("{good}="),
            format!("{good}.x"),
            format!(".{good}"),
            good.replacen('.', "=.", 1),
            good[..good.len() - 1].to_owned(),
            format!("{}A", &good[..good.len() - 1]),
            good.replace('.', ""),
            String::new(),
            "..".to_owned(),
            "a.b.c".to_owned(),
        ]);
        for (n, token) in cases.iter().enumerate() {
            for now in [NOW, NOW + Duration::hours(2)] {
                assert_eq!(
                    tokens.verify(token, now),
                    reference_verdict(secret, token, now),
                    "case {n}: {token}"
                );
            }
        }
        assert_eq!(
            tokens.verify(&cases[10], NOW),
            Ok(BuyerId::parse("alice").unwrap())
        );
    }

    #[test]
    fn admission_tickets_are_bound_to_sale_buyer_and_time() {
        use crate::line::LineId;
        let signer = LineSigner::new(b"a secret of thirty-two bytes!!!!");
        let sale = SaleId(uuid::Uuid::from_u128(1));
        let alice = LineId::of(sale, &BuyerId::parse("alice").unwrap());
        let bob = LineId::of(sale, &BuyerId::parse("bob").unwrap());
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let admission = Admission {
            position: 7,
            until: now + time::Duration::seconds(60),
        };
        let ticket = signer.ticket(sale, &alice, admission);
        assert_eq!(ticket.len(), 43);
        assert_eq!(signer.verify(sale, &alice, &ticket, now), Ok(admission));
        assert_eq!(
            signer.verify(sale, &bob, &ticket, now),
            Err(TicketRefused::Invalid)
        );
        let other_sale = SaleId(uuid::Uuid::from_u128(2));
        assert_eq!(
            signer.verify(other_sale, &alice, &ticket, now),
            Err(TicketRefused::Invalid)
        );
        assert_eq!(
            signer.verify(sale, &alice, &ticket, admission.until),
            Err(TicketRefused::Ended)
        );
        let other_key = LineSigner::new(b"another secret of thirty-two b!!");
        assert_eq!(
            other_key.verify(sale, &alice, &ticket, now),
            Err(TicketRefused::Invalid)
        );
        // A changed position or time breaks the signature.
        let mut bytes = URL_SAFE_NO_PAD.decode(&ticket).unwrap();
        bytes[7] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            signer.verify(sale, &alice, &forged, now),
            Err(TicketRefused::Invalid)
        );
        assert_eq!(
            signer.verify(sale, &alice, "short", now),
            Err(TicketRefused::Invalid)
        );
        // Seeds differ per sale and per secret, and are stable.
        assert_eq!(signer.seed(sale), signer.seed(sale));
        assert_ne!(signer.seed(sale), signer.seed(other_sale));
        assert_ne!(signer.seed(sale), other_key.seed(sale));
    }
}
