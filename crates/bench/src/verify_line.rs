//! `flashsale verify-line --url URL --sale ID [--receipt HASH]`: downloads a sale's published
//! line log (`GET /api/sales/{id}/line/log`, every page of every part) and checks everything
//! a third party can (`flashsale_core::line_log::verify`), printing one line per check and a
//! verdict. Needs nothing but the shop's public URL: no token, no buyer ids. The bench's
//! rounds with a line run the same check on the sale they made (`line_log_checks_out`).

use crate::client::{Conn, Target};
use anyhow::{Context, Result, anyhow, bail};
use flashsale_core::SaleId;
use flashsale_core::line::{JoinRecord, LineEvent, LineId};
use flashsale_core::line_log::{
    Hash, Head, PublishedEvent, PublishedJoin, PublishedLog, Verdict, parse_hash, verify,
};
use serde_json::Value;

/// Records asked per page (the server's maximum).
const PAGE_RECORDS: u64 = 10_000;
/// Pages read at most per part: 10 million records, far past any line, so a server that
/// never ends a part cannot keep the checker reading forever.
const PAGES_MAX: u64 = 1_000;

/// The command's arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyLineArgs {
    /// The shop's base URL (http://host:port).
    #[arg(long)]
    pub url: String,
    /// The sale's id.
    #[arg(long)]
    pub sale: String,
    /// A receipt's hash (64 hex characters, from the join answer or line/me) to find in the
    /// join chain.
    #[arg(long)]
    pub receipt: Option<String>,
}

/// Downloads and checks; `Ok(verdict)` whether or not it passed, `Err` when the log could
/// not be read at all.
pub async fn check(args: &VerifyLineArgs) -> Result<Verdict> {
    let sale = SaleId::parse(&args.sale).map_err(|e| anyhow!("--sale: not a sale id ({e})"))?;
    let receipt = match &args.receipt {
        Some(text) => Some(
            parse_hash(&text.to_ascii_lowercase())
                .ok_or_else(|| anyhow!("--receipt: not 64 hex characters"))?,
        ),
        None => None,
    };
    let log = download(&Target::parse(&args.url)?, sale).await?;
    Ok(verify(&log, receipt.as_ref()))
}

/// Runs the command: prints each check and the verdict; an error unless every check passed.
pub async fn run(args: VerifyLineArgs) -> Result<()> {
    let verdict = check(&args).await?;
    for check in &verdict.checks {
        match &check.outcome {
            Ok(what) => println!("ok    {}: {what}", check.name),
            Err(why) => println!("FAIL  {}: {why}", check.name),
        }
    }
    if verdict.passed() {
        println!("verdict: the line of sale {} checks out", args.sale);
        Ok(())
    } else {
        bail!(
            "verdict: the line of sale {} does NOT check out ({} of {} checks failed)",
            args.sale,
            verdict.failed().len(),
            verdict.checks.len()
        )
    }
}

/// Every page of every part, into one log. Positions are read first and the chains after, so
/// a line that grows meanwhile only adds records past what the positions and heads cover.
pub async fn download(target: &Target, sale: SaleId) -> Result<PublishedLog> {
    let mut conn = Conn::new(target.clone());
    let mut header = None;
    let mut positions = Vec::new();
    let mut joins = Vec::new();
    let mut events = Vec::new();
    for part in ["positions", "joins", "events"] {
        let mut from = 1u64;
        for _ in 0..PAGES_MAX {
            let path =
                format!("/api/sales/{sale}/line/log?part={part}&from={from}&limit={PAGE_RECORDS}");
            let answer = conn.get(&path, &[]).await?;
            let body = answer.json()?;
            if !answer.status.is_success() {
                bail!(
                    "GET {path}: {} {}",
                    answer.status,
                    body["error"]["message"].as_str().unwrap_or("")
                );
            }
            if header.is_none() {
                header = Some(body.clone());
            }
            let got = match part {
                "positions" => read_list(&body, "positions", &mut positions, |v| {
                    v.as_str().and_then(LineId::parse)
                })?,
                "joins" => read_list(&body, "joins", &mut joins, read_join)?,
                _ => read_list(&body, "events", &mut events, read_event)?,
            };
            if (got as u64) < PAGE_RECORDS {
                break;
            }
            from += got as u64;
        }
    }
    let header = header.ok_or_else(|| anyhow!("no page of the log was read"))?;
    Ok(PublishedLog {
        sale,
        starts_at_ms: header["starts_at_ms"]
            .as_i64()
            .context("the log has no starts_at_ms")?,
        commitment: header["commitment"]
            .as_str()
            .context("the log has no commitment")?
            .to_owned(),
        seed: header["seed"].as_str().map(str::to_owned),
        pre_queue: header["pre_queue"]
            .as_u64()
            .context("the log has no pre_queue")?,
        joins_head: read_head(&header["joins_head"]).context("joins_head")?,
        events_head: read_head(&header["events_head"]).context("events_head")?,
        joins,
        positions,
        events,
    })
}

fn read_list<T>(
    body: &Value,
    field: &str,
    into: &mut Vec<T>,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<usize> {
    let items = body[field]
        .as_array()
        .ok_or_else(|| anyhow!("a {field} page without {field}"))?;
    for item in items {
        into.push(
            read(item).ok_or_else(|| anyhow!("a {field} record that does not read: {item}"))?,
        );
    }
    Ok(items.len())
}

fn read_head(value: &Value) -> Option<Head> {
    Some(Head {
        length: value["length"].as_u64()?,
        hash: hash(&value["hash"])?,
    })
}

fn hash(value: &Value) -> Option<Hash> {
    parse_hash(value.as_str()?)
}

fn read_join(value: &Value) -> Option<PublishedJoin> {
    Some(PublishedJoin {
        index: value["index"].as_u64()?,
        record: JoinRecord {
            line: LineId::parse(value["line_id"].as_str()?)?,
            joined_at_ms: value["joined_at_ms"].as_i64()?,
        },
        hash: hash(&value["hash"])?,
    })
}

fn read_event(value: &Value) -> Option<PublishedEvent> {
    let event = match value["kind"].as_str()? {
        "admitted" => LineEvent::Admitted {
            up_to: value["up_to"].as_u64()?,
            at_ms: value["at_ms"].as_i64()?,
        },
        "bought" => LineEvent::Bought {
            position: value["position"].as_u64()?,
        },
        "passed" => LineEvent::Passed {
            up_to: value["up_to"].as_u64()?,
        },
        "sold_out" => LineEvent::SoldOut {
            after: value["after"].as_u64()?,
        },
        _ => return None,
    };
    Some(PublishedEvent {
        index: value["index"].as_u64()?,
        event,
        from: value["from"].as_u64(),
        hash: hash(&value["hash"])?,
    })
}
