//! A test's own slice of the shared engines (Redis, NATS JetStream, PostgreSQL): a key
//! prefix, a stream and a database of its own, removed when it is dropped.

use super::TestApp;
use super::env::{nats_url, postgres_server, redis_url};
use flashsale_service::ManualClock;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The test's own slice of the shared engines. Dropping it removes the database, the stream
/// and the keys.
pub struct SharedBackends {
    database: String,
    pub stream: String,
    pub prefix: String,
    pub redis_url: String,
    pub nats_url: String,
    env: Vec<(String, String)>,
}

impl SharedBackends {
    pub async fn create() -> Self {
        Self::create_on(&redis_url(), &nats_url()).await
    }

    /// On the shared PostgreSQL, with stock in the Redis at `redis_url` and the queue in the
    /// NATS at `nats_url` (the shared ones, or a test's own).
    pub async fn create_on(redis_url: &str, nats_url: &str) -> Self {
        // Keeps the account's storage from emptying while tests create and delete streams
        // (`flashsale_nats::anchor`); harmless on a test's own NATS.
        flashsale_nats::anchor::anchor_shared_account(nats_url)
            .await
            .expect("the NATS anchor stream");
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("flashsale_test_{id}");
        let admin_url = format!("{}/postgres", postgres_server());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {admin_url}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        let stream = format!("FSTEST_{id}");
        let prefix = format!("test-{id}");
        let env = vec![
            ("FLASHSALE_BACKENDS__STOCK", redis_url.to_owned()),
            ("FLASHSALE_BACKENDS__QUEUE", nats_url.to_owned()),
            (
                "FLASHSALE_BACKENDS__ORDERS",
                format!("{}/{database}", postgres_server()),
            ),
            ("FLASHSALE_REDIS__KEY_PREFIX", prefix.clone()),
            // Fail fast while a server is down, so the test sees 503s, not a hang.
            ("FLASHSALE_REDIS__RESPONSE_TIMEOUT_MS", "500".to_owned()),
            ("FLASHSALE_REDIS__CONNECT_TIMEOUT_MS", "500".to_owned()),
            ("FLASHSALE_NATS__STREAM", stream.clone()),
            ("FLASHSALE_NATS__REQUEST_TIMEOUT_MS", "1000".to_owned()),
            ("FLASHSALE_NATS__DEPTH_REFRESH_MS", "100".to_owned()),
            // A pull answered by a server that is stopping can be lost on the way; the server
            // then redelivers only after the ack deadline (30 s by default). Short here, so a
            // test that stops NATS sees the redelivery within its wait.
            ("FLASHSALE_QUEUE__ACK_DEADLINE_MS", "2000".to_owned()),
            ("FLASHSALE_POSTGRES__CONNECTIONS_MAX", "4".to_owned()),
            ("FLASHSALE_CLUSTER__SALE_SYNC_MS", "100".to_owned()),
            ("FLASHSALE_CLUSTER__REBUILD_FENCE_MS", "1500".to_owned()),
            (
                "FLASHSALE_BUY_PATH_SECRET",
                "test-buy-path-secret-0123456789abcdef0123".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            database,
            stream,
            prefix,
            redis_url: redis_url.to_owned(),
            nats_url: nats_url.to_owned(),
            env,
        }
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The sale's stock leases as Redis holds them: node id → units set aside.
    pub fn leases(&self, sale: &str) -> HashMap<String, u64> {
        use redis::Commands as _;
        let mut connection = redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let raw: HashMap<String, String> = connection
            .hgetall(format!("{{fs:{}:{sale}}}:leases", self.prefix))
            .unwrap();
        raw.into_iter()
            .map(|(node, lease)| {
                let units = lease.split(':').next().and_then(|u| u.parse().ok());
                (node, units.expect("a lease is <units>:<expires at>"))
            })
            .collect()
    }

    /// Starts a node on these backends and the given (shared) clock.
    pub async fn node(&self, clock: &Arc<ManualClock>) -> TestApp {
        TestApp::spawn_on_clock(&self.env(), clock.clone()).await
    }

    /// `count` nodes on these backends, sharing one manual clock that starts now.
    pub async fn nodes(&self, count: usize) -> (Arc<ManualClock>, Vec<TestApp>) {
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(self.node(&clock).await);
        }
        (clock, nodes)
    }
}

/// Waits (up to 5 s) until every node shows `sale`'s line in its status: the other nodes learn
/// of a sale from the order store.
pub async fn until_every_node_has_the_line(nodes: &[TestApp], sale: &str) {
    for node in nodes {
        for _ in 0..200 {
            if node.status(sale).await["line"].is_object() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SharedBackends {
    fn drop(&mut self) {
        let (database, stream) = (self.database.clone(), self.stream.clone());
        let (pattern, redis_url) = (format!("{{fs:{}:*", self.prefix), self.redis_url.clone());
        let nats_url = self.nats_url.clone();
        // Drop cannot await inside the test's runtime: a thread with its own does the cleanup.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(mut admin) =
                    PgConnection::connect(&format!("{}/postgres", postgres_server())).await
                {
                    let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut admin)
                        .await
                    {
                        eprintln!("could not drop test database {database}: {e}");
                    }
                }
                if let Ok(client) = async_nats::connect(&nats_url).await
                    && let Err(e) = async_nats::jetstream::new(client)
                        .delete_stream(&stream)
                        .await
                {
                    eprintln!("could not delete test stream {stream}: {e}");
                }
            });
            use redis::Commands as _;
            let keys = || -> redis::RedisResult<()> {
                let mut connection = redis::Client::open(redis_url)?.get_connection()?;
                let keys: Vec<String> = connection
                    .scan_match::<_, String>(&pattern)?
                    .collect::<redis::RedisResult<_>>()?;
                for chunk in keys.chunks(500) {
                    redis::cmd("DEL").arg(chunk).query::<()>(&mut connection)?;
                }
                Ok(())
            };
            // The test's own Redis may be gone already; its keys went with it.
            keys().ok();
        });
        cleanup.join().ok();
    }
}
