//! The contrast: the same crowd (the same plans, new buyer ids) at a sale without a line.
//! Everyone who arrived before the start watches the status until it goes live and clicks
//! after its reaction time (the bots at once); later arrivals click after theirs. The server
//! takes buys in order of arrival, so this round's fairness figure shows what the line
//! removes. Judged by the shared invariants like any round.

use super::bots::BotShare;
use super::fairness::{self, Joiner, Winners};
use super::plan::{Arrival, LineShape};
use super::wins::Wins;
use crate::api::{Api, layer_metrics};
use crate::client::Pool;
use crate::crowd::{CrowdShape, Signer};
use crate::report::RoundReport;
use crate::stats::Recorder;
use crate::verdict::{Evidence, judge};
use crate::{BenchArgs, Deployment, PAYMENTS_QUEUED_MAX, go_live, monitor, spawn_payers};
use anyhow::Result;
use futures_util::future::join_all;
use hyper::Method;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What the rushing members share.
struct Rush {
    shape: CrowdShape,
    signer: Signer,
    pools: Vec<Pool>,
    buy_path: String,
    /// When the status first said live.
    released: Instant,
    recorder: Recorder,
    wins: Wins,
}

impl Rush {
    /// One member's click (two at once with one key for some), at `at`.
    async fn click(&self, member: u64, at: Instant, double_click: bool) {
        tokio::time::sleep_until(at.into()).await;
        let auth = format!("Bearer {}", self.signer.token(&self.shape.buyer_id(member)));
        let key = self.shape.key(member, 0);
        let headers = [
            ("authorization", auth.as_str()),
            ("idempotency-key", key.as_str()),
        ];
        let pool = &self.pools[(member % self.pools.len() as u64) as usize];
        let clicks = if double_click { 2 } else { 1 };
        let sends = (0..clicks).map(|_| async {
            let sent = Instant::now();
            (
                sent,
                pool.send(Method::POST, &self.buy_path, &headers, None)
                    .await,
            )
        });
        for (sent, answer) in join_all(sends).await {
            let status = answer.as_ref().map(|a| a.status.as_u16()).unwrap_or(0);
            self.recorder.record(
                member as usize,
                status,
                sent.saturating_duration_since(self.released),
                sent.elapsed(),
            );
            let Ok(answer) = answer else { continue };
            if status != 202 {
                continue;
            }
            self.wins.accepted(
                &self.shape,
                member,
                &answer,
                Instant::now().saturating_duration_since(self.released),
            );
        }
    }
}

/// The round without a line.
pub(crate) async fn rush_round(
    args: &BenchArgs,
    round: usize,
    deployment: &Deployment,
    signer: &Signer,
) -> Result<RoundReport> {
    let (api, target) = (&deployment.api, &deployment.nodes[0]);
    let shape = crate::shape(args, round);
    let line = LineShape::of(args);
    let live = go_live(args, api, target, signer, &shape).await?;
    let released = Instant::now();
    let before = api.counters(&live.sale_id).await?;
    let (pay_tx, pay_rx) = mpsc::channel(PAYMENTS_QUEUED_MAX);
    let connections_per_node = (args.connections / deployment.nodes.len()).max(1);
    let rush = Arc::new(Rush {
        shape: shape.clone(),
        signer: signer.clone(),
        pools: deployment
            .nodes
            .iter()
            .map(|node| Pool::new(node.clone(), connections_per_node))
            .collect(),
        buy_path: live.buy_path.clone(),
        released,
        recorder: Recorder::new(),
        wins: Wins::new(pay_tx),
    });
    let (payers, paid) = spawn_payers(target, signer, &shape, Some(pay_rx));
    let stop = CancellationToken::new();
    let monitor = tokio::spawn(monitor(
        Api::new(target.clone(), &args.admin_token),
        live.sale_id.clone(),
        released,
        stop.clone(),
    ));
    let mut clicks = JoinSet::new();
    for member in 0..args.buyers {
        let plan = line.plan(&shape, member);
        if !plan.buys {
            continue;
        }
        // Who arrived before the start clicks once the status says live; a later arrival
        // once it has arrived.
        let arrived_ms = plan.join_at_ms.max(0) as u64;
        let at = released + Duration::from_millis(arrived_ms) + plan.reaction;
        let rush = rush.clone();
        clicks.spawn(async move { rush.click(member, at, plan.double_click).await });
    }
    while clicks.join_next().await.is_some() {}
    let crowd_secs = released.elapsed().as_secs_f64();
    rush.wins.close_payments();
    for payer in payers {
        let _ = payer.await;
    }
    stop.cancel();
    let samples = monitor.await.unwrap_or_default();
    let accepted = rush.wins.take();
    let verdict = judge(
        api,
        target,
        &Evidence {
            sale_id: &live.sale_id,
            shape: &shape,
            signer,
            accepted: &accepted,
            cheater_wins: 0,
            early_wins: live.early_wins,
            before,
            starts_at: live.starts_at,
            ends_at: live.ends_at,
            per_buyer_limit: live.per_buyer_limit,
            payment_window_secs: live.payment_window_secs,
            last_accept: accepted
                .iter()
                .map(|a| released + a.at)
                .max()
                .unwrap_or(released),
            live_max_sampled: samples.iter().map(|s| s.live).max().unwrap_or(0),
        },
    )
    .await?;

    // The same population as with the line: everyone who arrived before the start.
    let winners: HashSet<u64> = accepted.iter().map(|a| a.buyer).collect();
    let arrived: Vec<(bool, Joiner)> = (0..args.buyers)
        .map(|member| line.plan(&shape, member))
        .enumerate()
        .filter(|(_, plan)| plan.arrival != Arrival::Late)
        .map(|(member, plan)| {
            let won = winners.contains(&(member as u64));
            let joined_s = plan.join_at_ms as f64 / 1000.0;
            (
                plan.arrival == Arrival::LastSecond,
                Joiner { joined_s, won },
            )
        })
        .collect();
    let fairness = fairness::by_join_time(&arrived.iter().map(|(_, j)| *j).collect::<Vec<_>>());
    let view = api.sale(&live.sale_id).await.unwrap_or_default();
    let metrics = layer_metrics(&api.metrics().await);
    let tally = rush.recorder.snapshot();
    let mut report = RoundReport::new(
        "no line",
        round,
        &tally,
        crowd_secs,
        Some(live.sale_id),
        live.status_polls,
        paid.load(Ordering::Relaxed),
        view.get("layers").cloned(),
        metrics,
        samples,
        Some(verdict),
    );
    report.fairness = fairness;
    report.winners = Some(Winners::of(&arrived));
    report.bots = Some(BotShare::of(
        args.buyers,
        |member| line.plan(&shape, member).arrival == Arrival::LastSecond,
        &accepted,
    ));
    Ok(report)
}
