//! The members' 202s and the winners who will pay: shared by the line's crowd (`member.rs`)
//! and the same crowd rushing a sale without a line (`rush.rs`).

use crate::client::Answer;
use crate::crowd::{Accepted, CrowdShape};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct Wins {
    accepted: Mutex<Vec<Accepted>>,
    /// Winners who will pay, for the payer tasks; taken (closed) once the crowd is done.
    payments: Mutex<Option<mpsc::Sender<(u64, String)>>>,
}

impl Wins {
    pub fn new(payments: mpsc::Sender<(u64, String)>) -> Self {
        Wins {
            accepted: Mutex::default(),
            payments: Mutex::new(Some(payments)),
        }
    }

    /// A 202 to `member`'s own buy, `at` after the crowd's zero: kept for the verdict, and
    /// handed to the payers when this member is one who pays.
    pub fn accepted(&self, shape: &CrowdShape, member: u64, answer: &Answer, at: Duration) {
        let order_id = answer
            .json()
            .ok()
            .and_then(|v| v["order_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if shape.pays(member)
            && let Some(payments) = &*self.payments.lock().unwrap_or_else(|p| p.into_inner())
        {
            // A full payment queue means this winner gives up paying: the reaper covers it.
            let _ = payments.try_send((member, order_id.clone()));
        }
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Accepted {
                buyer: member,
                click: 0,
                order_id,
                at,
            });
    }

    /// No more winners: the payers finish what is queued and stop.
    pub fn close_payments(&self) {
        drop(
            self.payments
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }

    /// Every 202 seen, once the crowd is done.
    pub fn take(&self) -> Vec<Accepted> {
        std::mem::take(&mut *self.accepted.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
