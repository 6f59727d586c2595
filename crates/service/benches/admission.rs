//! Micro-benchmarks of the admission checks every buy passes before the ledger: the
//! per-buyer limiter and the per-sale bucket. `cargo bench -p flashsale-service`.

#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use flashsale_core::BuyerId;
use flashsale_service::FilterConfig;
use flashsale_service::filters::{Limiters, SaleGate};
use std::hint::black_box;

/// Distinct buyers the keyed limiter sees.
const BUYERS: usize = 10_000;

fn admission(c: &mut Criterion) {
    let config = FilterConfig::default();
    let limiters = Limiters::new(&config);
    let buyers: Vec<BuyerId> = (0..BUYERS)
        .map(|n| BuyerId::parse(&format!("buyer-{n}")).unwrap())
        .collect();
    let mut next = 0;
    c.bench_function("buyer_limiter_check_10k_buyers", |b| {
        b.iter(|| {
            next = (next + 1) % BUYERS;
            black_box(limiters.check_buyer(&buyers[next]))
        })
    });
    // A gate with an effectively endless rate measures the admitting path.
    let open = SaleGate::new(
        &FilterConfig {
            sale_rate_per_sec: u32::MAX,
            ..FilterConfig::default()
        },
        1000,
    );
    c.bench_function("sale_gate_check_admit", |b| {
        b.iter(|| black_box(open.check()))
    });
    // A gate with a spent burst measures the refusing path (429 + Retry-After).
    let spent = SaleGate::new(
        &FilterConfig {
            sale_rate_per_sec: 1,
            sale_burst_min: 1,
            sale_burst_stock_multiple: 1,
            ..FilterConfig::default()
        },
        1,
    );
    let _ = spent.check();
    c.bench_function("sale_gate_check_refuse", |b| {
        b.iter(|| black_box(spent.check()))
    });
}

criterion_group!(benches, admission);
criterion_main!(benches);
