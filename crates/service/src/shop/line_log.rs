//! A line anyone can check: buyers' receipts, the chain heads the status carries, and the
//! published log (`core::line_log` has the format and the verifier).
//!
//! The line's backend keeps the chains' records in order (one order across every node: the
//! join script appends them in Redis); each node computes the hashes from that order, as far
//! as it has read, in its own copy (`Chains`). A node that has not read a record yet reads
//! the records it lacks in pages, so a receipt or a log page never waits for more than the
//! records it needs, and a node's copy is at most 32 bytes a member.

use super::line::LineOutcome;
use super::table::SaleSlot;
use super::{ServiceError, Shop};
use crate::ports::LineRefused;
use flashsale_core::line::{JoinRecord, LineEvent, LineId};
use flashsale_core::line_log::{
    Chain, Hash, Head, PublishedEvent, PublishedJoin, events_genesis, first_positions,
    joins_genesis,
};
use flashsale_core::{SaleId, Timestamp};

/// Most records one page of the published log holds (and the default is `LOG_PAGE_DEFAULT`).
pub const LOG_PAGE_RECORDS_MAX: u32 = 10_000;
/// Records in a page when the client does not say.
pub const LOG_PAGE_DEFAULT: u32 = 1_000;
/// Records read from the backend per call while catching up with a chain.
const CATCH_UP_RECORDS_MAX: usize = 10_000;

/// A buyer's receipt: their join's place in the join chain and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub hash: Hash,
}

/// Which part of the log a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPart {
    /// The join chain: line ids, join times, hashes.
    Joins,
    /// Line ids in position order.
    Positions,
    /// The event chain: admissions (with the first position each admits) and buys.
    Events,
}

/// What every page of the log starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHeader {
    pub starts_at: Timestamp,
    pub commitment: String,
    pub seed: String,
    /// Members drawn at the start: the first `pre_queue` joins.
    pub pre_queue: u64,
    pub joins_head: Head,
    pub events_head: Head,
}

/// The records of one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecords {
    Joins(Vec<PublishedJoin>),
    /// Positions from the page's `from`, in order.
    Positions(Vec<LineId>),
    Events(Vec<PublishedEvent>),
}

/// The answer to a log request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutcome {
    Page {
        header: LogHeader,
        records: LogRecords,
    },
    /// Not before the sale has started (the draw is not made, the seed not public).
    NotStarted,
    Refused(LineOutcome),
}

/// This node's copy of a line's chains, as far as it has read them.
#[derive(Default)]
pub(super) struct Chains(tokio::sync::Mutex<Option<ChainCopy>>);

struct ChainCopy {
    joins: Chain,
    events: Chain,
    /// The events themselves (a few per second of admitting, one per buy): a page of them
    /// states each admission's first position, which needs the one before.
    event_records: Vec<LineEvent>,
}

impl ChainCopy {
    fn new(sale: SaleId) -> Self {
        Self {
            joins: Chain::new(joins_genesis(sale)),
            events: Chain::new(events_genesis(sale)),
            event_records: Vec::new(),
        }
    }

    fn heads(&self) -> (Head, Head) {
        let head = |chain: &Chain| Head {
            length: chain.len(),
            hash: chain.head(),
        };
        (head(&self.joins), head(&self.events))
    }
}

impl Chains {
    /// The heads as far as this node has read (memory only, for the status).
    pub(super) fn heads(&self) -> Option<(Head, Head)> {
        let copy = self.0.try_lock().ok()?;
        copy.as_ref().map(ChainCopy::heads)
    }
}

impl Shop {
    /// Reads the join chain up to `up_to` records (all there are, if `None`) and the event
    /// chain to its end, into this node's copy.
    async fn catch_up(
        &self,
        slot: &SaleSlot,
        up_to: Option<u64>,
    ) -> Result<Result<(), LineRefused>, ServiceError> {
        let sale = slot.sale.id;
        let mut guard = slot.shared.line.chains.0.lock().await;
        let copy = guard.get_or_insert_with(|| ChainCopy::new(sale));
        while up_to.is_none_or(|up_to| copy.joins.len() < up_to) {
            let records = match self
                .backends
                .line
                .join_records(sale, copy.joins.len() + 1, CATCH_UP_RECORDS_MAX)
                .await?
            {
                Ok(records) => records,
                Err(refused) => return Ok(Err(refused)),
            };
            for record in &records {
                copy.joins.push_join(record);
            }
            if records.len() < CATCH_UP_RECORDS_MAX {
                break;
            }
        }
        if up_to.is_none() {
            loop {
                let events = match self
                    .backends
                    .line
                    .events(sale, copy.events.len() + 1, CATCH_UP_RECORDS_MAX)
                    .await?
                {
                    Ok(events) => events,
                    Err(refused) => return Ok(Err(refused)),
                };
                for event in &events {
                    copy.events.push_event(event);
                }
                copy.event_records.extend_from_slice(&events);
                if events.len() < CATCH_UP_RECORDS_MAX {
                    break;
                }
            }
        }
        Ok(Ok(()))
    }

    /// A member's receipt (`None` for someone who never joined), from the line and this
    /// node's copy of the join chain. Fixed once joined, so the caller keeps it with what it
    /// knows of the member: a poll finds it without the chains' lock, which a node catching up
    /// holds across backend calls.
    pub(super) async fn receipt(
        &self,
        slot: &SaleSlot,
        line: LineId,
    ) -> Result<Result<Option<Receipt>, LineRefused>, ServiceError> {
        let sale = slot.sale.id;
        let index = match self.backends.line.receipt(sale, line).await? {
            Ok(Some(index)) => index,
            Ok(None) => return Ok(Ok(None)),
            Err(refused) => return Ok(Err(refused)),
        };
        if let Err(refused) = self.catch_up(slot, Some(index)).await? {
            return Ok(Err(refused));
        }
        let guard = slot.shared.line.chains.0.lock().await;
        let hash = guard
            .as_ref()
            .and_then(|copy| copy.joins.hash(index))
            .expect("caught up to the receipt's index");
        Ok(Ok(Some(Receipt { index, hash })))
    }

    /// Keeps this node's copy of the chains current (after a refresh of the summary), so the
    /// status carries recent heads. Skipped while another task reads them.
    pub(super) async fn refresh_chains(&self, slot: &SaleSlot) {
        if slot.shared.line.chains.0.try_lock().is_err() {
            return;
        }
        if let Err(error) = self.catch_up(slot, None).await {
            tracing::warn!(sale_id = %slot.sale.id, %error, "could not read the line's chains");
        }
    }

    /// One page of a sale's published line log, once the sale has started.
    pub async fn line_log(
        &self,
        sale_id: SaleId,
        part: LogPart,
        from: u64,
        limit: u32,
    ) -> Result<LogOutcome, ServiceError> {
        assert!(from >= 1 && (1..=LOG_PAGE_RECORDS_MAX).contains(&limit));
        let Some(slot) = self.table.get(sale_id) else {
            return Ok(LogOutcome::Refused(LineOutcome::UnknownSale));
        };
        let Some(times) = slot.sale.line_times() else {
            return Ok(LogOutcome::Refused(LineOutcome::NoLine));
        };
        let now = self.now();
        if now < times.starts_at {
            return Ok(LogOutcome::NotStarted);
        }
        let summary = match self.line_summary_now(&slot, now).await? {
            Ok(summary) => summary,
            Err(outcome) => return Ok(LogOutcome::Refused(outcome)),
        };
        if let Err(refused) = self.catch_up(&slot, None).await? {
            return Ok(LogOutcome::Refused(self.refused(&slot, refused, now)));
        }
        let limit = limit as usize;
        let records = match part {
            LogPart::Positions => match self.backends.line.members(sale_id, from, limit).await? {
                Ok(members) => LogRecords::Positions(members),
                Err(refused) => {
                    return Ok(LogOutcome::Refused(self.refused(&slot, refused, now)));
                }
            },
            LogPart::Joins | LogPart::Events => {
                let guard = slot.shared.line.chains.0.lock().await;
                let copy = guard.as_ref().expect("caught up");
                if part == LogPart::Joins {
                    let joins = match self
                        .backends
                        .line
                        .join_records(sale_id, from, limit)
                        .await?
                    {
                        Ok(joins) => joins,
                        Err(refused) => {
                            return Ok(LogOutcome::Refused(self.refused(&slot, refused, now)));
                        }
                    };
                    LogRecords::Joins(published_joins(copy, from, &joins))
                } else {
                    LogRecords::Events(published_events(copy, from, limit))
                }
            }
        };
        let seed = self.line_signer.seed(sale_id);
        let guard = slot.shared.line.chains.0.lock().await;
        let (joins_head, events_head) = guard.as_ref().expect("caught up").heads();
        Ok(LogOutcome::Page {
            header: LogHeader {
                starts_at: times.starts_at,
                commitment: seed.commitment(),
                seed: seed.to_hex(),
                pre_queue: summary.pre_queue,
                joins_head,
                events_head,
            },
            records,
        })
    }
}

/// The join records from `from`, with the hashes this node computed (records past its copy,
/// which joined since it caught up, are left for the next page).
fn published_joins(copy: &ChainCopy, from: u64, joins: &[JoinRecord]) -> Vec<PublishedJoin> {
    joins
        .iter()
        .enumerate()
        .map_while(|(i, record)| {
            let index = from + i as u64;
            copy.joins.hash(index).map(|hash| PublishedJoin {
                index,
                record: *record,
                hash,
            })
        })
        .collect()
}

/// The events from `from`, with the hashes this node computed as it read them (a page never
/// rehashes the chain: the route is public and uncached).
fn published_events(copy: &ChainCopy, from: u64, limit: usize) -> Vec<PublishedEvent> {
    let skip = usize::try_from(from - 1).unwrap_or(usize::MAX);
    copy.event_records
        .iter()
        .zip(first_positions(&copy.event_records))
        .enumerate()
        .skip(skip)
        .take(limit)
        .map(|(i, (event, first))| {
            let index = i as u64 + 1;
            PublishedEvent {
                index,
                event: *event,
                from: first,
                hash: copy.events.hash(index).expect("hashed as read"),
            }
        })
        .collect()
}
