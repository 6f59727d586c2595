//! Micro-benchmarks of the core's hot paths: a reservation in the stock ledger, the two
//! token checks every buy passes (buyer JWT, buy-path HMAC), and proof of work for a place in
//! line (the server's check, and a client's 4,096 tries: what each difficulty bit costs a
//! core), and a join's draw key. `cargo bench -p flashsale-core`.

#![allow(clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use flashsale_core::line::{LineId, Seed};
use flashsale_core::pow::{self, ChallengeSigner};
use flashsale_core::tokens::{BuyPathSigner, BuyerTokens};
use flashsale_core::{BatchId, BuyerId, IdempotencyKey, OrderId, SaleId, SaleLedger};
use std::hint::black_box;
use time::OffsetDateTime;
use uuid::Uuid;

/// Buyers prepared for one batch of reservations.
const BUYERS: usize = 10_000;

fn reservation(c: &mut Criterion) {
    let sale = SaleId(Uuid::from_u128(7));
    let key = IdempotencyKey::parse("k").unwrap();
    let buyers: Vec<(BuyerId, OrderId)> = (0..BUYERS)
        .map(|n| {
            let buyer = BuyerId::parse(&format!("buyer-{n}")).unwrap();
            let order = OrderId::derive(sale, &buyer, &key);
            (buyer, order)
        })
        .collect();
    c.bench_function("ledger_reserve_10k_distinct_buyers", |b| {
        b.iter_batched_ref(
            || SaleLedger::new(1_000_000, 1),
            |ledger| {
                for (buyer, order) in &buyers {
                    black_box(ledger.reserve(*order, buyer, BatchId::of_order(*order)));
                }
            },
            BatchSize::LargeInput,
        )
    });
    c.bench_function("ledger_reserve_sold_out", |b| {
        let mut ledger = SaleLedger::new(1, 1);
        ledger.reserve(buyers[0].1, &buyers[0].0, BatchId::of_order(buyers[0].1));
        let (buyer, order) = &buyers[1];
        b.iter(|| black_box(ledger.reserve(*order, buyer, BatchId::of_order(*order))))
    });
    c.bench_function("order_id_derive", |b| {
        let buyer = &buyers[0].0;
        b.iter(|| black_box(OrderId::derive(sale, buyer, &key)))
    });
}

fn tokens(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let tokens = BuyerTokens::new(b"a-buyer-secret-of-at-least-32-bytes!!");
    let buyer = BuyerId::parse("buyer-1").unwrap();
    let jwt = tokens.issue(&buyer, now, now + time::Duration::hours(1));
    c.bench_function("buyer_token_verify", |b| {
        b.iter(|| black_box(tokens.verify(black_box(&jwt), now)))
    });
    c.bench_function("buyer_token_issue", |b| {
        b.iter(|| black_box(tokens.issue(&buyer, now, now + time::Duration::hours(1))))
    });
    let signer = BuyPathSigner::new(b"a-buy-path-secret-of-32-bytes-or-more");
    let sale = SaleId(Uuid::from_u128(7));
    let path = signer.token(sale, now);
    c.bench_function("buy_path_verify", |b| {
        b.iter(|| black_box(signer.verify(sale, now, black_box(&path))))
    });
}

fn proof_of_work(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let signer = ChallengeSigner::new(b"a-challenge-secret-of-32-bytes-or-more");
    let sale = SaleId(Uuid::from_u128(7));
    let line = LineId::of(sale, &BuyerId::parse("buyer-1").unwrap());
    let challenge = signer.issue(sale, &line, 16, now + time::Duration::minutes(5), [1; 8]);
    let (nonce, _) = pow::solve(&challenge, 16, 0, u64::MAX).unwrap();
    c.bench_function("pow_check_solution", |b| {
        b.iter(|| black_box(signer.check_solution(sale, &line, &challenge, black_box(&nonce), now)))
    });
    // Difficulty 64 is never met, so every call makes exactly 4,096 tries.
    c.bench_function("pow_solve_4096_tries", |b| {
        b.iter(|| black_box(pow::solve(black_box(&challenge), 64, 0, 4096)))
    });
}

/// A join's draw key: from the seed each time, or from the seed's keyed state kept per sale.
fn draw_key(c: &mut Criterion) {
    let seed = Seed([9; 32]);
    let line = LineId::of(
        SaleId(Uuid::from_u128(7)),
        &BuyerId::parse("alice").unwrap(),
    );
    c.bench_function("draw_key_from_the_seed", |b| {
        b.iter(|| black_box(seed.draw_key(black_box(&line))))
    });
    let keys = seed.draw_keys();
    c.bench_function("draw_key_keyed_once", |b| {
        b.iter(|| black_box(keys.of(black_box(&line))))
    });
}

criterion_group!(benches, reservation, tokens, proof_of_work, draw_key);
criterion_main!(benches);
