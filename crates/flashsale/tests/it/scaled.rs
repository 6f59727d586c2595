//! Scaled out (issue 5), against the real servers on this machine: several nodes, each a
//! server on its own port, sharing one Redis, one NATS JetStream and one PostgreSQL through a
//! key prefix, a stream and a database of the test's own (all removed at the end). The tests
//! that stop a server start their own Redis instance; the shared ones are never touched beyond
//! the test's own keys, stream and database.

use crate::support::backends::SharedBackends;
use crate::support::env::{nats_url, postgres_server, redis_url};
use crate::support::{TestApp, error_code};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

use flashsale_service::ManualClock;

/// Polls `node` until the sale is live there (another node started it; the sync brings it).
async fn wait_live_on(node: &TestApp, sale: &str) -> String {
    for _ in 0..200 {
        let status = node.status(sale).await;
        if let Some(path) = status["buy_path"].as_str() {
            return path.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "sale {sale} never went live on {}: {}",
        node.base,
        node.status(sale).await
    );
}

/// Every order of a sale, through the admin API of `node`.
async fn all_orders(node: &TestApp, sale: &str) -> Vec<Value> {
    node.admin_client().orders(sale).await
}

/// Waits until the writers have moved every accepted reservation into PostgreSQL.
async fn wait_orders(node: &TestApp, sale: &str, expected: usize) -> Vec<Value> {
    for _ in 0..400 {
        let orders = all_orders(node, sale).await;
        if orders.len() >= expected {
            return orders;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the orders of sale {sale} never reached {expected}");
}

const NODES: usize = 3;
const STOCK: usize = 1_000;
const BUYERS: usize = 5_000;
const BUYS: usize = 20_000;
const CONCURRENT_BUYS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_sell_exactly_the_stock() {
    let shared = SharedBackends::create().await;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(shared.node(&clock).await);
    }
    let nodes = Arc::new(nodes);
    // Created and started on node 0; the others learn of it from PostgreSQL.
    let (sale, path) = nodes[0].live_sale(STOCK as u32, 1).await;
    for node in &nodes[1..] {
        assert_eq!(
            wait_live_on(node, &sale).await,
            path,
            "one buy path on every node"
        );
    }

    let tokens: Arc<Vec<String>> = Arc::new(
        (0..BUYERS)
            .map(|b| nodes[0].buyer(&format!("buyer-{b}")))
            .collect(),
    );
    // Each buyer clicks 4 times with a new key each time, on different nodes.
    let answers: Vec<(usize, StatusCode, Value)> = futures_util::stream::iter(0..BUYS)
        .map(|i| {
            let (nodes, tokens, path) = (nodes.clone(), tokens.clone(), path.clone());
            async move {
                let buyer = i % BUYERS;
                let node = &nodes[(i / BUYERS + buyer) % NODES];
                let (status, body) = node.buy(&path, &tokens[buyer], &format!("key-{i}")).await;
                (buyer, status, body)
            }
        })
        .buffer_unordered(CONCURRENT_BUYS)
        .collect()
        .await;

    let mut accepted: HashMap<String, usize> = HashMap::new();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for (buyer, status, body) in &answers {
        let code = match *status {
            StatusCode::ACCEPTED => {
                let order = body["order_id"].as_str().unwrap().to_owned();
                if let Some(other) = accepted.insert(order.clone(), *buyer) {
                    assert_eq!(other, *buyer, "one order id, two buyers");
                }
                "accepted".to_owned()
            }
            _ => error_code(body).to_owned(),
        };
        *outcomes.entry(code).or_default() += 1;
    }
    for code in outcomes.keys() {
        assert!(
            ["accepted", "sold_out", "limit_reached", "rate_limited"].contains(&code.as_str()),
            "unexpected answer {code}: {outcomes:?}"
        );
    }
    assert_eq!(
        accepted.len(),
        STOCK,
        "exactly the stock was accepted: {outcomes:?}"
    );

    let orders = wait_orders(&nodes[1], &sale, STOCK).await;
    assert_eq!(orders.len(), STOCK, "every 202 became exactly one order");
    let written: HashSet<&str> = orders
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(written.len(), STOCK, "no order written twice");
    for order in accepted.keys() {
        assert!(
            written.contains(order.as_str()),
            "202 for {order} but no order"
        );
    }
    let buyers: HashSet<&str> = orders
        .iter()
        .map(|o| o["buyer"].as_str().unwrap())
        .collect();
    assert_eq!(buyers.len(), STOCK, "no buyer over the limit of 1");

    // Redis work grows with the stock, not with the crowd: after the sell-out no node calls
    // the ledger (the sold-out flag), so the calls are at most one per unit sold plus one per
    // buy in flight when it sold out; batches make them fewer.
    let mut ledger_calls = 0;
    for node in nodes.iter() {
        ledger_calls += node.sale(&sale).await["layers"]["ledger_calls"]
            .as_u64()
            .unwrap();
    }
    assert!(
        ledger_calls <= (STOCK + CONCURRENT_BUYS) as u64,
        "{ledger_calls} ledger calls for {BUYS} buys of a stock of {STOCK}"
    );
    eprintln!("{BUYS} buys of a stock of {STOCK} on {NODES} nodes: {ledger_calls} ledger calls");

    // A node that joins the running sale adopts the ledger instead of resetting it.
    let late = shared.node(&clock).await;
    assert_eq!(late.status(&sale).await["phase"], "sold_out");
    for node in nodes.iter().chain([&late]) {
        let counters = node.sale(&sale).await["counters"].clone();
        assert_eq!(counters["available"], 0, "{counters}");
        assert_eq!(counters["pending_payment"], STOCK, "{counters}");
    }
    let (status, body) = late.buy(&path, &late.buyer("latecomer"), "late-key").await;
    assert_eq!(status, StatusCode::GONE, "{body}");
}

#[tokio::test]
async fn admin_changes_on_one_node_reach_the_others() {
    let shared = SharedBackends::create().await;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let (a, b) = (shared.node(&clock).await, shared.node(&clock).await);
    let sale = a.create_sale(5, 1, time::Duration::hours(1)).await;
    // Created on a: b lists it within the sync interval.
    let mut seen = false;
    for _ in 0..100 {
        if b.status(&sale).await["phase"] == "upcoming" {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "b never learned of the sale");
    // Stopped on b: a stops selling too.
    let (_, path) = {
        let (status, body) = b
            .admin(
                reqwest::Method::POST,
                &format!("/api/admin/sales/{sale}/start"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (sale.clone(), wait_live_on(&a, &sale).await)
    };
    let (status, body) = a.buy(&path, &a.buyer("alice"), "k1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = b
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/sales/{sale}/stop"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut stopped = false;
    for _ in 0..100 {
        if a.status(&sale).await["phase"] == "ended" {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(stopped, "a never learned the sale was stopped");
}

/// A server process of the test's own (Redis or NATS) on a free port with a temp dir, that the
/// test can stop and start again on the same port and directory. Never the shared servers.
struct OwnServer {
    kind: ServerKind,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

#[derive(Clone, Copy)]
enum ServerKind {
    /// Nothing on disk, like the shared one: a restart comes back empty.
    Redis,
    /// JetStream with its store in the temp dir: a restart keeps the stream.
    Nats,
}

impl OwnServer {
    fn start(kind: ServerKind) -> Self {
        // The one port a test still picks and frees before use: the server is restarted on
        // the same address (the nodes reconnect to it), and redis-server cannot be handed a
        // bound socket or report a port it chose.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            kind,
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        match self.kind {
            ServerKind::Redis => format!("redis://127.0.0.1:{}", self.port),
            ServerKind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn restart(&mut self) {
        let port = self.port.to_string();
        let mut command = match self.kind {
            ServerKind::Redis => {
                let mut command = std::process::Command::new(installed("redis-server"));
                command
                    .args(["--bind", "127.0.0.1", "--port", &port])
                    .args(["--save", "", "--appendonly", "no", "--dir"]);
                command
            }
            ServerKind::Nats => {
                let mut command = std::process::Command::new(installed("nats-server"));
                command.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"]);
                command
            }
        };
        let child = command
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.url()));
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} never came up", self.url());
    }

    /// SIGKILL: a crash. Redis forgets everything (it keeps nothing on disk).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// SIGTERM: a clean stop, as an operator's restart would do (JetStream flushes its store).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .ok();
            child.wait().ok();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The path of an installed server binary (Debian puts them in sbin or bin).
fn installed(name: &str) -> String {
    ["/usr/sbin", "/usr/bin"]
        .into_iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|path| Path::new(path).exists())
        .unwrap_or_else(|| name.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_gets_503_then_the_ledger_is_rebuilt() {
    let mut redis = OwnServer::start(ServerKind::Redis);
    let shared = SharedBackends::create_on(&redis.url(), &nats_url()).await;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let (a, b) = (shared.node(&clock).await, shared.node(&clock).await);
    let (sale, path) = a.live_sale(10, 1).await;
    wait_live_on(&b, &sale).await;
    let mut accepted = HashSet::new();
    for i in 0..4 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, body) = node
            .buy(&path, &node.buyer(&format!("early-{i}")), "k")
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        accepted.insert(body["order_id"].as_str().unwrap().to_owned());
    }

    redis.kill();
    let (status, body) = a.buy(&path, &a.buyer("while-down"), "k").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    redis.restart();
    // Back but empty: still 503, never a sale from a ledger that is not there.
    let (status, body) = b.buy(&path, &b.buyer("while-empty"), "k").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // After the fence a node rebuilds the ledger from PostgreSQL and the queue.
    let mut rebuilt = false;
    for _ in 0..200 {
        // The admin view answers 503 too while the ledger is missing.
        let (status, view) = a
            .admin(
                reqwest::Method::GET,
                &format!("/api/admin/sales/{sale}"),
                None,
            )
            .await;
        if status == StatusCode::OK && view["counters"]["available"] == 6 {
            rebuilt = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        rebuilt,
        "the ledger was never rebuilt with the 4 orders held"
    );
    // The 4 early buyers still hold their unit (the limit survived the loss)...
    let (status, body) = b.buy(&path, &b.buyer("early-1"), "k2").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "limit_reached");
    // ...and exactly the 6 units left sell, on both nodes, then it is sold out.
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, body) = node
            .buy(&path, &node.buyer(&format!("late-{i}")), "k")
            .await;
        if status == StatusCode::ACCEPTED {
            accepted.insert(body["order_id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(status, StatusCode::GONE, "{body}");
        }
    }
    assert_eq!(accepted.len(), 10, "exactly the stock, across the loss");
    let orders = wait_orders(&a, &sale, 10).await;
    assert_eq!(orders.len(), 10);
}

#[tokio::test]
async fn a_node_that_cannot_reach_a_backend_names_it_and_exits_non_zero() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--stock", "redis://127.0.0.1:1"])
        .args(["--queue", &nats_url()])
        .args(["--orders", &format!("{}/postgres", postgres_server())])
        .env("FLASHSALE_ADMIN_TOKEN", crate::support::ADMIN_TOKEN)
        .env("FLASHSALE_BUYER_JWT_SECRET", crate::support::BUYER_SECRET)
        .env(
            "FLASHSALE_BUY_PATH_SECRET",
            "test-buy-path-secret-0123456789abcdef0123",
        )
        .env("FLASHSALE_REDIS__CONNECT_TIMEOUT_MS", "300")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stock backend (backends.stock)")
            && stderr.contains("cannot connect to Redis at redis://127.0.0.1:1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopping_fails_buys_fast_and_the_invariants_hold_after_it_returns() {
    const STOCK: usize = 10;
    let mut nats = OwnServer::start(ServerKind::Nats);
    let shared = SharedBackends::create_on(&redis_url(), &nats.url()).await;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let node = shared.node(&clock).await;
    let (sale, path) = node.live_sale(STOCK as u32, 1).await;
    let mut accepted = HashSet::new();
    for i in 0..3 {
        let (status, body) = node
            .buy(&path, &node.buyer(&format!("before-{i}")), "k")
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        accepted.insert(body["order_id"].as_str().unwrap().to_owned());
    }

    nats.stop();
    for i in 0..3 {
        let started = std::time::Instant::now();
        let (status, body) = node
            .buy(&path, &node.buyer(&format!("down-{i}")), "k")
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        // Bounded by nats.request_timeout_ms (1 s here), never the 10 s request timeout.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    nats.restart();
    // Buys succeed again once the client has reconnected; then the rest of the stock sells.
    let mut i = 0;
    let mut sold_out = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !sold_out && std::time::Instant::now() < deadline {
        let (status, body) = node
            .buy(&path, &node.buyer(&format!("after-{i}")), "k")
            .await;
        i += 1;
        match status {
            StatusCode::ACCEPTED => {
                accepted.insert(body["order_id"].as_str().unwrap().to_owned());
            }
            StatusCode::GONE => sold_out = true,
            StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(sold_out, "the sale never sold out after NATS came back");
    // The invariants: never oversold, every 202 exactly one order. (A buy whose publish was
    // in flight when NATS stopped may hold its unit without a 202: the Redis/NATS gap of
    // ARCHITECTURE.md, left for the reconciler; so the orders may be fewer than the stock.)
    assert!(accepted.len() <= STOCK);
    let mut orders = Vec::new();
    for _ in 0..400 {
        orders = all_orders(&node, &sale).await;
        let written: HashSet<&str> = orders
            .iter()
            .map(|o| o["order_id"].as_str().unwrap())
            .collect();
        if accepted.iter().all(|id| written.contains(id.as_str())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written: HashSet<&str> = orders
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(written.len(), orders.len(), "no order written twice");
    assert!(orders.len() <= STOCK, "oversold: {} orders", orders.len());
    for id in &accepted {
        assert!(written.contains(id.as_str()), "202 for {id} but no order");
    }
    let buyers: HashSet<&str> = orders
        .iter()
        .map(|o| o["buyer"].as_str().unwrap())
        .collect();
    assert_eq!(buyers.len(), orders.len(), "no buyer over the limit of 1");
}

/// A node that died between taking a unit in Redis and the publish ack leaves the reservation
/// pending. A live node's reconciler settles it after `cluster.rebuild_fence_ms`: one whose
/// publish never arrived gives its unit back, and its late publish can no longer become
/// durable; one whose publish did arrive becomes an order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_settles_reservations_a_dead_node_left_pending() {
    use flashsale_core::{BatchId, BuyerId, OrderId, Reservation, ReserveOutcome, SaleId};
    use flashsale_redis::{LeaseConfig, RedisStock, RedisStockConfig};
    use flashsale_service::{Buy, Clock, StockLedger};

    let shared = SharedBackends::create().await;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let node = shared.node(&clock).await;
    let (sale, _path) = node.live_sale(10, 1).await;
    let sale_id = SaleId::parse(&sale).unwrap();

    // What the dead node did: three units taken in the shared ledger in two batches, and only
    // the second batch published. It sold from a lease, which expires unrenewed.
    let dead_node = RedisStock::connect(
        &shared.redis_url,
        RedisStockConfig {
            key_prefix: shared.prefix.clone(),
            lease: Some(LeaseConfig {
                units_max: 64,
                ttl_ms: 500,
            }),
            ..RedisStockConfig::default()
        },
    )
    .await
    .unwrap();
    let never_published = [OrderId(Uuid::new_v4()), OrderId(Uuid::new_v4())];
    let published = OrderId(Uuid::new_v4());
    let (lost_batch, published_batch) = (BatchId(Uuid::now_v7()), BatchId(Uuid::now_v7()));
    let buy = |order: OrderId, buyer: &str| Buy {
        order,
        buyer: BuyerId::parse(buyer).unwrap(),
    };
    for (batch, buys) in [
        (
            lost_batch,
            vec![
                buy(never_published[0], "ghost-1"),
                buy(never_published[1], "ghost-2"),
            ],
        ),
        (published_batch, vec![buy(published, "ghost-3")]),
    ] {
        let outcomes = dead_node.reserve(sale_id, batch, &buys).await.unwrap();
        assert!(outcomes.iter().all(|o| *o == ReserveOutcome::Reserved));
    }
    let nats = async_nats::connect(&shared.nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(nats);
    let publish = |batch: BatchId, orders: Vec<(OrderId, &str)>| {
        let reservations: Vec<Reservation> = orders
            .into_iter()
            .map(|(order, buyer)| {
                Reservation::new(
                    order,
                    sale_id,
                    BuyerId::parse(buyer).unwrap(),
                    clock.now(),
                    600,
                )
            })
            .collect();
        let payload = flashsale_nats::encode_batch(&reservations).unwrap();
        let subject = format!("{}.res.{batch}", shared.stream);
        let jetstream = jetstream.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", batch.to_string().as_str());
            jetstream
                .publish_with_headers(subject, headers, payload.into())
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    publish(published_batch, vec![(published, "ghost-3")]).await;
    assert_eq!(node.sale(&sale).await["counters"]["available"], 7);

    // The reconciler (sync every 100 ms, fence 1,500 ms in these tests) settles both.
    let mut counters = Value::Null;
    for _ in 0..200 {
        counters = node.sale(&sale).await["counters"].clone();
        if counters["available"] == 9 && counters["pending_payment"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counters["available"], 9, "{counters}");
    assert_eq!(counters["pending_payment"], 1, "{counters}");
    let orders = all_orders(&node, &sale).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["order_id"], published.to_string());
    assert!(
        dead_node.pending_orders(sale_id).await.unwrap().is_empty(),
        "nothing is left pending"
    );

    // The dead node's publish arriving late is dropped: its id holds the tombstone.
    let late = publish(
        lost_batch,
        vec![
            (never_published[0], "ghost-1"),
            (never_published[1], "ghost-2"),
        ],
    )
    .await;
    assert!(
        late.duplicate,
        "a late publish after the void must be a duplicate"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(all_orders(&node, &sale).await.len(), 1);
    assert_eq!(node.sale(&sale).await["counters"]["available"], 9);
}

/// Issue 14: a Redis that comes back empty has lost the sale's line. Nothing re-creates it
/// empty (that would hand out new places in a new order): joins and `line/me` answer 503
/// `line_lost` on every node, also after the sync passes that rebuild the stock ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarting_empty_loses_the_line_loudly_never_silently() {
    let mut redis = OwnServer::start(ServerKind::Redis);
    let shared = SharedBackends::create_on(&redis.url(), &nats_url()).await;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let (a, b) = (shared.node(&clock).await, shared.node(&clock).await);
    let now = clock_now(&clock);
    let starts_at = now + time::Duration::minutes(10);
    let (status, sale) = a
        .admin(
            reqwest::Method::POST,
            "/api/admin/sales",
            Some(serde_json::json!({
                "name": "Lined", "price_cents": 100, "stock": 5,
                "starts_at": crate::support::rfc3339(starts_at),
                "ends_at": crate::support::rfc3339(starts_at + time::Duration::hours(1)),
                "per_buyer_limit": 1, "payment_window_secs": 60,
                "waiting_room": {
                    "opens_at": crate::support::rfc3339(now + time::Duration::minutes(1)),
                    "admit_per_sec": 10, "admission_secs": 60,
                },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sale}");
    let sale = sale["id"].as_str().unwrap().to_owned();
    clock.advance(time::Duration::minutes(2));
    let join = |node: &TestApp, who: &str| {
        let request = node
            .http
            .post(node.url(&format!("/api/sales/{sale}/line")))
            .bearer_auth(node.buyer(who));
        async move { crate::support::read(request.send().await.unwrap()).await }
    };
    let me = |node: &TestApp, who: &str| {
        let request = node
            .http
            .get(node.url(&format!("/api/sales/{sale}/line/me")))
            .bearer_auth(node.buyer(who));
        async move { crate::support::read(request.send().await.unwrap()).await }
    };
    // Node b learns of the sale from PostgreSQL, then both take joins.
    for _ in 0..200 {
        if b.status(&sale).await["line"].is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for (i, who) in ["x", "y", "z"].iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, body) = join(node, who).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "pre_queue");
    }

    redis.kill();
    redis.restart();
    clock.advance(time::Duration::seconds(1));
    for node in [&a, &b] {
        // Every answer is a 503; the first ones may be `unavailable` while the client
        // reconnects to the restarted server, then the loss is found and said.
        let mut lost = false;
        for _ in 0..100 {
            let (status, body) = me(node, "x").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            if error_code(&body) == "line_lost" {
                lost = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(lost, "the line's loss was never said");
        let (status, body) = join(node, "newcomer").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(error_code(&body), "line_lost");
    }
    // Sync passes come and go (they rebuild the stock ledger); the line stays lost, and the
    // status says so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    clock.advance(time::Duration::seconds(1));
    let (status, body) = join(&b, "later").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "line_lost");
    assert_eq!(a.status(&sale).await["line"]["lost"], true);
}

fn clock_now(clock: &ManualClock) -> OffsetDateTime {
    use flashsale_service::Clock;
    clock.now()
}
