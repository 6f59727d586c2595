//! `flashsale demo`: the embedded server with a demo sale that goes live shortly after start,
//! the development login on, and everything a first-time user needs printed.

use crate::app::{RunningApp, random_secret};
use crate::config::Config;
use anyhow::Result;
use flashsale_core::SaleSpec;
use secrecy::{ExposeSecret, SecretString};
use time::Duration;

/// Seconds from start until the demo sale goes live.
pub const DEMO_GO_LIVE_DELAY_SECS: i64 = 30;

/// Turns a loaded config into the demo's: dev login on, secrets generated where unset.
pub fn prepare(mut config: Config) -> Config {
    config.dev_login = true;
    if config.admin_token.is_none() {
        config.admin_token = Some(SecretString::from(random_secret()));
    }
    if config.buyer_jwt_secret.is_none() {
        config.buyer_jwt_secret = Some(SecretString::from(random_secret()));
    }
    config
}

/// Creates the demo sale and prints how to use it.
pub async fn create_sale_and_greet(app: &RunningApp, config: &Config) -> Result<()> {
    let now = app.shop.now();
    let spec = SaleSpec {
        name: "Demo phone".into(),
        price_cents: 19_900,
        stock: 100,
        starts_at: now + Duration::seconds(DEMO_GO_LIVE_DELAY_SECS),
        ends_at: now + Duration::hours(1),
        per_buyer_limit: 1,
        payment_window_secs: 120,
        waiting_room: None,
    };
    let view = app.shop.create_sale(spec).await?;
    let base = format!("http://{}", app.addr);
    let admin = config
        .admin_token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default();
    println!();
    println!(
        "flashsale demo is serving on {base} (data in {})",
        config.data_dir.display()
    );
    println!();
    println!("  Sale page (goes live in {DEMO_GO_LIVE_DELAY_SECS} s):");
    println!("    {base}/sales/{}", view.sale.id);
    println!();
    println!("  Admin dashboard (sign in with the admin token):");
    println!("    {base}/admin");
    println!();
    println!("  Admin token:");
    println!("    {admin}");
    println!("    curl -H 'Authorization: Bearer {admin}' {base}/api/admin/sales");
    println!();
    println!("  A buyer token (development login, on in the demo):");
    println!(
        "    curl -X POST -H 'Content-Type: application/json' -d '{{\"buyer_id\":\"alice\"}}' {base}/api/dev/buyer-token"
    );
    println!();
    println!("  Sale status (the buy path appears once live):");
    println!("    curl {base}/api/sales/{}/status", view.sale.id);
    println!();
    println!("  Stop with Ctrl-C (the queue drains into the order store first).");
    println!();
    Ok(())
}
