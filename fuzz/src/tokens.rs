//! The buyer JWT verifier and the buy-path token verifier.

use crate::NOW;
use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flashsale_core::tokens::{BUYER_TOKEN_BYTES_MAX, BuyPathSigner, BuyerTokens, TokenError};
use flashsale_core::{BuyerId, SaleId};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

const SECRET: &[u8] = b"fuzz-secret-of-thirty-two-bytes!";
const OTHER_SECRET: &[u8] = b"another-secret-of-thirty-two-by!";

fn hs256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// A JWT made of any header and payload bytes, signed with `key`.
fn sign(key: &[u8], header: &[u8], payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = URL_SAFE_NO_PAD.encode(hs256(key, message.as_bytes()));
    format!("{message}.{signature}")
}

/// What the verifier should accept, written independently of it: exactly three segments in
/// canonical unpadded base64url, an HS256 signature by `SECRET` over the first two, a header
/// object naming HS256, and a payload object. Returns that payload.
fn independently_verified_claims(token: &str) -> Option<Map<String, Value>> {
    if token.len() > BUYER_TOKEN_BYTES_MAX {
        return None;
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return None;
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let expected = hs256(SECRET, format!("{header}.{payload}").as_bytes());
    if signature != expected {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header.get("alg")? != "HS256" {
        return None;
    }
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// Every answer of `BuyerTokens::verify` other than `Invalid` means "the signature is good":
/// check it against the independent verifier and the claims it read.
fn assert_verdict_is_justified(token: &str, verdict: Result<BuyerId, TokenError>) {
    if verdict == Err(TokenError::Invalid) {
        return;
    }
    let claims = independently_verified_claims(token)
        .unwrap_or_else(|| panic!("{verdict:?} for a token not validly signed: {token:?}"));
    let sub = claims.get("sub").and_then(Value::as_str);
    let exp = claims.get("exp").and_then(Value::as_i64);
    let (Some(sub), Some(exp)) = (sub, exp) else {
        panic!("{verdict:?} for claims without a string sub and an integer exp: {claims:?}");
    };
    match verdict {
        Ok(buyer) => {
            assert_eq!(buyer.as_str(), sub, "accepted buyer differs from the sub");
            assert!(exp > NOW.unix_timestamp(), "accepted an expired token");
        }
        Err(TokenError::Expired) => assert!(exp <= NOW.unix_timestamp()),
        Err(TokenError::BadSubject) => assert!(BuyerId::parse(sub).is_err()),
        Err(TokenError::Invalid) => unreachable!(),
    }
}

/// `buyer_jwt`: the input is either a token as sent (mode 0), or a header and a payload that
/// the harness signs with the right key (mode 1) or a wrong one (mode 2), so the fuzzer reaches
/// the claims parsing behind the signature. Asserts that any answer other than `Invalid`
/// agrees with an independent HS256 verifier and with the claims: accepted means signed by
/// the key, `alg` HS256, `sub` equal to the buyer and `exp` in the future.
pub fn check_buyer_jwt(data: &[u8]) {
    let tokens = BuyerTokens::new(SECRET);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        signed => {
            let mut u = Unstructured::new(rest);
            let Ok(header) = <&[u8]>::arbitrary(&mut u) else {
                return;
            };
            let payload = u.take_rest();
            let key = if signed == 1 { SECRET } else { OTHER_SECRET };
            sign(key, header, payload)
        }
    };
    let verdict = tokens.verify(&token, NOW);
    assert_verdict_is_justified(&token, verdict);
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Replace { at: u16, byte: u8 },
    Insert { at: u16, byte: u8 },
    Remove { at: u16 },
    Truncate { to: u16 },
}

fn apply_edits(bytes: &mut Vec<u8>, edits: Vec<Edit>) {
    for edit in edits {
        let len = bytes.len();
        match edit {
            Edit::Replace { at, byte } if len > 0 => bytes[usize::from(at) % len] = byte,
            Edit::Insert { at, byte } => bytes.insert(usize::from(at) % (len + 1), byte),
            Edit::Remove { at } if len > 0 => {
                bytes.remove(usize::from(at) % len);
            }
            Edit::Truncate { to } => bytes.truncate(usize::from(to)),
            _ => {}
        }
    }
}

/// `buyer_jwt_mutated`: a token issued by `BuyerTokens::issue` for a fuzz-chosen buyer and
/// expiry verifies to that buyer (or `Expired`); after fuzz-chosen byte edits, it is refused
/// unless the edits changed nothing. No other string is accepted in its place.
pub fn check_buyer_jwt_mutated(data: &[u8]) {
    let tokens = BuyerTokens::new(SECRET);
    let mut u = Unstructured::new(data);
    let (Ok(buyer), Ok(lifetime_secs), Ok(edits)) = (
        <&str>::arbitrary(&mut u),
        i32::arbitrary(&mut u),
        Vec::<Edit>::arbitrary(&mut u),
    ) else {
        return;
    };
    let buyer = BuyerId::parse(buyer).unwrap_or_else(|_| BuyerId::parse("alice").unwrap());
    let expires_at = NOW + time::Duration::seconds(i64::from(lifetime_secs));
    let original = tokens.issue(&buyer, NOW, expires_at);
    let expected = if expires_at > NOW {
        Ok(buyer.clone())
    } else if expires_at.unix_timestamp() < 0 {
        // jsonwebtoken reads `exp` as unsigned, so an expiry before 1970 makes the token
        // malformed rather than expired: refused all the same (both are a 401).
        Err(TokenError::Invalid)
    } else {
        Err(TokenError::Expired)
    };
    assert_eq!(tokens.verify(&original, NOW), expected, "round trip");

    let mut bytes = original.clone().into_bytes();
    apply_edits(&mut bytes, edits);
    // A header value reaches the verifier only as text.
    let edited = String::from_utf8_lossy(&bytes);
    let verdict = tokens.verify(&edited, NOW);
    if edited == original {
        assert_eq!(verdict, expected);
    } else {
        assert_eq!(
            verdict,
            Err(TokenError::Invalid),
            "an edited token was not refused: {original:?} -> {edited:?}"
        );
    }
}

/// `buy_path_token`: for a fuzz-chosen sale and start, `BuyPathSigner::verify` accepts a
/// string if and only if it is exactly the token `token()` hands out; the input is either
/// raw text or the real token with fuzz-chosen edits.
pub fn check_buy_path_token(data: &[u8]) {
    let signer = BuyPathSigner::new(SECRET);
    let mut u = Unstructured::new(data);
    let (Ok(sale), Ok(starts_at_secs), Ok(nanos), Ok(edits)) = (
        u128::arbitrary(&mut u),
        i64::arbitrary(&mut u),
        u32::arbitrary(&mut u),
        Vec::<Edit>::arbitrary(&mut u),
    ) else {
        return;
    };
    let sale = SaleId(Uuid::from_u128(sale));
    let Ok(starts_at) = OffsetDateTime::from_unix_timestamp(starts_at_secs) else {
        return;
    };
    let starts_at = starts_at.replace_nanosecond(nanos % 1_000_000_000).unwrap();
    let token = signer.token(sale, starts_at);
    assert_eq!(token.len(), 22, "a buy-path token is 22 characters");
    assert!(signer.verify(sale, starts_at, &token), "round trip");

    let candidate = if edits.is_empty() {
        String::from_utf8_lossy(u.take_rest()).into_owned()
    } else {
        let mut bytes = token.clone().into_bytes();
        apply_edits(&mut bytes, edits);
        String::from_utf8_lossy(&bytes).into_owned()
    };
    assert_eq!(
        signer.verify(sale, starts_at, &candidate),
        candidate == token,
        "verify disagrees with equality: token {token:?}, candidate {candidate:?}"
    );
}

/// `admin_token`: the `Authorization` header of an admin request. For a fuzz-chosen admin
/// token and header value (raw, or `Bearer <token>` with fuzz-chosen edits), the admin check
/// passes exactly when the header is `Bearer ` or `bearer ` followed by the token, give or take
/// surrounding whitespace, and never for an empty token.
pub fn check_admin_token(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(expected), Ok(edits)) = (String::arbitrary(&mut u), Vec::<Edit>::arbitrary(&mut u))
    else {
        return;
    };
    let header = if edits.is_empty() {
        String::from_utf8_lossy(u.take_rest()).into_owned()
    } else {
        let mut bytes = format!("Bearer {expected}").into_bytes();
        apply_edits(&mut bytes, edits);
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let passes = flashsale_core::tokens::bearer_token(&header).is_some_and(|token| {
        flashsale_core::tokens::admin_token_matches(expected.as_bytes(), token)
    });
    // The same rule written out independently.
    let presented = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim);
    let should_pass = !expected.is_empty() && presented == Some(expected.as_str());
    assert_eq!(
        passes, should_pass,
        "admin check: expected {expected:?}, header {header:?}"
    );
}
