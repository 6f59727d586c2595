//! Proof of work for a place in a sale's line (issue 15): the solution rule and stateless
//! challenges.
//!
//! **The rule clients are written against.** A `nonce` solves a `challenge` at `difficulty_bits`
//! when SHA-256 over the UTF-8 bytes of `challenge` followed by the UTF-8 bytes of `nonce` (no
//! separator) has at least `difficulty_bits` leading zero bits, counted from the most
//! significant bit of the hash's first byte. Checking a solution costs one hash; finding one
//! takes `2^difficulty_bits` hashes on average.
//!
//! **Challenges cost the server no state.** A challenge is a signed string binding the sale,
//! the buyer's line id, the difficulty and the expiry, plus a salt the caller draws (this
//! module is pure: no clock, no randomness). "Works once" needs a memory of the challenges
//! used until they expire; that belongs to the line's backend, keyed by [`ChallengeInfo::id`].

use crate::ids::SaleId;
use crate::line::LineId;
use crate::tokens::{seal, unseal};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// The hardest difficulty a sale may ask: 2^32 hashes is minutes of a fast core, far past
/// what a buyer's phone should be asked to pay.
pub const DIFFICULTY_BITS_MAX: u8 = 32;
/// Longest nonce looked at, in bytes: a counter in decimal needs 20.
pub const NONCE_BYTES_MAX: usize = 64;

/// Bytes of a challenge before encoding: difficulty (1), expiry in Unix ms (8), salt (8),
/// signature (16).
const CHALLENGE_BYTES: usize = 33;
const SIGNATURE_BYTES: usize = 16;
/// What the signature covers: difficulty, expiry, salt.
const BODY_BYTES: usize = CHALLENGE_BYTES - SIGNATURE_BYTES;
/// 33 bytes in unpadded URL-safe base64.
pub const CHALLENGE_CHARS: usize = 44;

/// How many of the hash's leading bits are zero.
pub fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte != 0 {
            return bits + byte.leading_zeros();
        }
        bits += 8;
    }
    bits
}

/// The hash the rule looks at: SHA-256(challenge ‖ nonce).
pub fn work_hash(challenge: &str, nonce: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(challenge.as_bytes());
    hasher.update(nonce.as_bytes());
    hasher.finalize().into()
}

/// Whether `nonce` solves `challenge` at `difficulty_bits`. A nonce longer than
/// [`NONCE_BYTES_MAX`] never does.
pub fn solves(challenge: &str, nonce: &str, difficulty_bits: u8) -> bool {
    nonce.len() <= NONCE_BYTES_MAX
        && leading_zero_bits(&work_hash(challenge, nonce)) >= u32::from(difficulty_bits)
}

/// Tries the decimal nonces `from`, `from + 1`, … at most `tries_max` of them, as a client
/// would (the sale page, the bench's members). Returns the first that solves and how many
/// hashes it took.
pub fn solve(
    challenge: &str,
    difficulty_bits: u8,
    from: u64,
    tries_max: u64,
) -> Option<(String, u64)> {
    let mut prefix = Sha256::new();
    prefix.update(challenge.as_bytes());
    let mut digits = [0u8; 20];
    for tried in 0..tries_max {
        let nonce = from.wrapping_add(tried);
        let text = format_decimal(nonce, &mut digits);
        let hash: [u8; 32] = prefix
            .clone()
            .chain_update(text.as_bytes())
            .finalize()
            .into();
        if leading_zero_bits(&hash) >= u32::from(difficulty_bits) {
            return Some((text.to_owned(), tried + 1));
        }
    }
    None
}

/// `value` in decimal, written into `buffer` (20 digits hold every u64).
fn format_decimal(mut value: u64, buffer: &mut [u8; 20]) -> &str {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[start..]).expect("ASCII digits")
}

/// What a valid challenge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeInfo {
    pub difficulty_bits: u8,
    pub expires_at: OffsetDateTime,
    /// Names the challenge for "works once": the backend remembers used ids until
    /// `expires_at`.
    pub id: [u8; SIGNATURE_BYTES],
}

/// Why a challenge or its solution was refused. Each is the client's (a 4xx); none changes
/// anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeRefused {
    /// Malformed, forged, or issued for another sale or another buyer (the signature covers
    /// both, so the two look the same).
    #[error("the challenge is not one this server issued for this sale and buyer")]
    Invalid,
    #[error("the challenge has expired; ask for a new one")]
    Expired,
    #[error("the nonce does not solve the challenge at its difficulty")]
    Unsolved,
}

/// Issues and checks signed challenges.
#[derive(Clone)]
pub struct ChallengeSigner {
    mac: HmacSha256,
}

impl std::fmt::Debug for ChallengeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeSigner(<secret>)")
    }
}

impl ChallengeSigner {
    pub fn new(secret: &[u8]) -> Self {
        let mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
        Self { mac }
    }

    fn mac_for(&self, sale: SaleId, line: &LineId) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(b"flashsale line challenge v1\0");
        mac.update(sale.0.as_bytes());
        mac.update(&line.0);
        mac
    }

    /// A challenge for `line` in `sale`: URL-safe, [`CHALLENGE_CHARS`] characters.
    /// `difficulty_bits` is capped at [`DIFFICULTY_BITS_MAX`]; `salt` is the caller's random
    /// draw, so two challenges for one buyer in one millisecond differ.
    pub fn issue(
        &self,
        sale: SaleId,
        line: &LineId,
        difficulty_bits: u8,
        expires_at: OffsetDateTime,
        salt: [u8; 8],
    ) -> String {
        let mut body = [0u8; BODY_BYTES];
        body[0] = difficulty_bits.min(DIFFICULTY_BITS_MAX);
        let expires_ms = (expires_at.unix_timestamp_nanos() / 1_000_000) as i64;
        body[1..9].copy_from_slice(&expires_ms.to_be_bytes());
        body[9..].copy_from_slice(&salt);
        seal::<CHALLENGE_BYTES>(self.mac_for(sale, line), &body)
    }

    /// Checks a challenge (constant time on the signature): issued here for this sale and this
    /// line id, not expired at `now`.
    pub fn verify(
        &self,
        sale: SaleId,
        line: &LineId,
        challenge: &str,
        now: OffsetDateTime,
    ) -> Result<ChallengeInfo, ChallengeRefused> {
        let bytes = unseal::<CHALLENGE_BYTES>(self.mac_for(sale, line), challenge, BODY_BYTES)
            .ok_or(ChallengeRefused::Invalid)?;
        let difficulty_bits = bytes[0];
        if difficulty_bits > DIFFICULTY_BITS_MAX {
            return Err(ChallengeRefused::Invalid);
        }
        let expires_ms = i64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let expires_at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_ms) * 1_000_000)
                .map_err(|_| ChallengeRefused::Invalid)?;
        if now >= expires_at {
            return Err(ChallengeRefused::Expired);
        }
        Ok(ChallengeInfo {
            difficulty_bits,
            expires_at,
            id: bytes[BODY_BYTES..].try_into().expect("16 bytes"),
        })
    }

    /// Checks a challenge and its nonce: one MAC and one hash.
    pub fn check_solution(
        &self,
        sale: SaleId,
        line: &LineId,
        challenge: &str,
        nonce: &str,
        now: OffsetDateTime,
    ) -> Result<ChallengeInfo, ChallengeRefused> {
        let info = self.verify(sale, line, challenge, now)?;
        if !solves(challenge, nonce, info.difficulty_bits) {
            return Err(ChallengeRefused::Unsolved);
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BuyerId;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use time::macros::datetime;

    fn sale() -> SaleId {
        SaleId(uuid::Uuid::from_u128(0x1234))
    }

    fn line(buyer: &str) -> LineId {
        LineId::of(sale(), &BuyerId::parse(buyer).unwrap())
    }

    const NOW: OffsetDateTime = datetime!(2026-12-03 12:00 UTC);

    #[test]
    fn leading_zero_bits_count_from_the_first_bytes_top_bit() {
        let mut hash = [0u8; 32];
        assert_eq!(leading_zero_bits(&hash), 256);
        hash[0] = 0x80;
        assert_eq!(leading_zero_bits(&hash), 0);
        hash[0] = 0x01;
        assert_eq!(leading_zero_bits(&hash), 7);
        hash[0] = 0;
        hash[1] = 0x10;
        assert_eq!(leading_zero_bits(&hash), 11);
    }

    #[test]
    fn the_rule_is_sha256_of_the_challenge_then_the_nonce() {
        // A known vector: SHA-256("abc") = ba7816bf…, no leading zero bits; the split between
        // challenge and nonce does not matter, only the concatenation.
        assert_eq!(work_hash("ab", "c")[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(work_hash("abc", ""), work_hash("", "abc"));
        assert!(solves("ab", "c", 0));
        assert!(!solves("ab", "c", 1));
    }

    #[test]
    fn a_solution_found_by_counting_is_checked_by_one_hash() {
        let (nonce, tries) = solve("some-challenge", 12, 0, 1 << 20).expect("found");
        assert!(tries >= 1);
        assert!(solves("some-challenge", &nonce, 12));
        assert_eq!(nonce.parse::<u64>().unwrap(), tries - 1);
        // Every nonce tried before it fails the check.
        for earlier in 0..tries - 1 {
            assert!(!solves("some-challenge", &earlier.to_string(), 12));
        }
        assert!(!solves(
            "some-challenge",
            &"1".repeat(NONCE_BYTES_MAX + 1),
            0
        ));
    }

    #[test]
    fn decimal_nonces_are_written_as_to_string_would() {
        let mut buffer = [0u8; 20];
        for value in [0, 7, 10, 12345, u64::MAX] {
            assert_eq!(format_decimal(value, &mut buffer), value.to_string());
        }
    }

    #[test]
    fn a_challenge_is_bound_to_its_sale_and_buyer_and_expires() {
        let signer = ChallengeSigner::new(b"a secret of enough bytes, 32 or more");
        let until = NOW + time::Duration::minutes(2);
        let challenge = signer.issue(sale(), &line("alice"), 10, until, [7; 8]);
        assert_eq!(challenge.len(), CHALLENGE_CHARS);
        let info = signer
            .verify(sale(), &line("alice"), &challenge, NOW)
            .expect("valid");
        assert_eq!(info.difficulty_bits, 10);
        assert_eq!(info.expires_at, until);
        assert_eq!(
            signer.verify(sale(), &line("bob"), &challenge, NOW),
            Err(ChallengeRefused::Invalid)
        );
        let other_sale = SaleId(uuid::Uuid::from_u128(0x5678));
        let alice_elsewhere = LineId::of(other_sale, &BuyerId::parse("alice").unwrap());
        assert_eq!(
            signer.verify(other_sale, &alice_elsewhere, &challenge, NOW),
            Err(ChallengeRefused::Invalid)
        );
        assert_eq!(
            signer.verify(sale(), &line("alice"), &challenge, until),
            Err(ChallengeRefused::Expired)
        );
        let other_key = ChallengeSigner::new(b"another secret of enough bytes, 32+");
        assert_eq!(
            other_key.verify(sale(), &line("alice"), &challenge, NOW),
            Err(ChallengeRefused::Invalid)
        );
        // A different salt is a different challenge with a different id.
        let again = signer.issue(sale(), &line("alice"), 10, until, [8; 8]);
        assert_ne!(again, challenge);
        let again_info = signer.verify(sale(), &line("alice"), &again, NOW).unwrap();
        assert_ne!(again_info.id, info.id);
    }

    #[test]
    fn a_changed_byte_or_a_wrong_length_is_invalid() {
        let signer = ChallengeSigner::new(b"a secret of enough bytes, 32 or more");
        let until = NOW + time::Duration::minutes(2);
        let challenge = signer.issue(sale(), &line("alice"), 3, until, [1; 8]);
        // Raising the difficulty byte (or any byte) breaks the signature.
        let mut bytes = URL_SAFE_NO_PAD.decode(&challenge).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let forged = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                signer.verify(sale(), &line("alice"), &forged, NOW),
                Err(ChallengeRefused::Invalid),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        for bad in [
            "",
            "short",
            &challenge[1..],
            &format!("{challenge}A"),
            &"!".repeat(44),
        ] {
            assert_eq!(
                signer.verify(sale(), &line("alice"), bad, NOW),
                Err(ChallengeRefused::Invalid),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_solution_is_checked_against_the_signed_difficulty() {
        let signer = ChallengeSigner::new(b"a secret of enough bytes, 32 or more");
        let until = NOW + time::Duration::minutes(2);
        let challenge = signer.issue(sale(), &line("alice"), 8, until, [2; 8]);
        let (nonce, _) = solve(&challenge, 8, 0, 1 << 20).expect("found");
        assert!(
            signer
                .check_solution(sale(), &line("alice"), &challenge, &nonce, NOW)
                .is_ok()
        );
        // A nonce that fails at 8 bits (the first non-solution counting up from 0).
        let wrong = (0u64..)
            .map(|n| n.to_string())
            .find(|n| !solves(&challenge, n, 8))
            .unwrap();
        assert_eq!(
            signer.check_solution(sale(), &line("alice"), &challenge, &wrong, NOW),
            Err(ChallengeRefused::Unsolved)
        );
        assert_eq!(
            signer.check_solution(sale(), &line("bob"), &challenge, &nonce, NOW),
            Err(ChallengeRefused::Invalid)
        );
        // Asked above the cap, a challenge carries the cap.
        let capped = signer.issue(sale(), &line("alice"), 200, until, [3; 8]);
        let info = signer.verify(sale(), &line("alice"), &capped, NOW).unwrap();
        assert_eq!(info.difficulty_bits, DIFFICULTY_BITS_MAX);
    }
}
