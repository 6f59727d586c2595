//! Rebuilding the lines from the log at open: each record applied as the change it records,
//! checked first against the line so far, so a log that does not fit is an error, never a
//! panic in `Line`'s assertions.
//!
//! Replay calls nothing that decides: joins land by the draw keys recorded, admissions, their
//! ends and the stock running out are `Line::apply_admission`, `apply_ended` and
//! `apply_sold_out` of what `advance` returned. What the log does not hold is the rate
//! bucket's credit: replay empties the bucket at each admission (`Line::empty_bucket_at`), so
//! after a restart the credit builds up again from the last admission, never more than the
//! rate allows (a line drawn but never admitted keeps the full bucket of the draw).

use super::record::Record;
use flashsale_core::SaleId;
use flashsale_core::line::{JoinProof, Line, LineTimes};
use std::collections::HashMap;

/// Applies one record to the lines rebuilt so far.
pub(crate) fn apply(lines: &mut HashMap<SaleId, Line>, record: Record) -> Result<(), String> {
    match record {
        Record::SetUp { sale, times } => set_up(lines, sale, times),
        Record::Draw { sale, at } => {
            let line = line_of(lines, sale)?;
            if line.is_drawn() || at < line.times().starts_at {
                return Err(format!("a draw at {at} that cannot happen"));
            }
            line.draw_if_due(at);
            Ok(())
        }
        Record::Join {
            sale,
            line: who,
            key,
            at,
            challenge,
        } => {
            let line = line_of(lines, sale)?;
            if line.is_member(&who) {
                return Err(format!("{who} joins a second time"));
            }
            if !line.is_drawn() && at >= line.times().starts_at {
                return Err(format!(
                    "{who} joins at {at}, after the start, before the draw"
                ));
            }
            let proof = challenge.map_or(JoinProof::NotAsked, JoinProof::Solved);
            line.join_with(who, key, at, proof)
                .map(|_| ())
                .map_err(|refused| format!("{who}'s join at {at} is refused: {refused}"))
        }
        Record::Admission { sale, up_to, at } => {
            let line = line_of(lines, sale)?;
            if !line.is_drawn() || up_to <= line.admitted_up_to() || up_to > line.len() {
                return Err(format!(
                    "admission up to {up_to} (admitted up to {}, {} members, drawn: {})",
                    line.admitted_up_to(),
                    line.len(),
                    line.is_drawn()
                ));
            }
            line.apply_admission(up_to, at);
            // The credit left after it is not logged: from here it builds up again.
            line.empty_bucket_at(at);
            Ok(())
        }
        Record::Bought { sale, position } => {
            line_of(lines, sale)?.record_bought(position);
            Ok(())
        }
        Record::Ended { sale, up_to } => {
            let line = line_of(lines, sale)?;
            if !line.is_running_admission_end(up_to) {
                return Err(format!(
                    "admissions ended up to {up_to}, where no running admission ends \
                     (admitted up to {})",
                    line.admitted_up_to()
                ));
            }
            line.apply_ended(up_to);
            Ok(())
        }
        Record::SoldOut { sale, after } => {
            let line = line_of(lines, sale)?;
            if after != line.admitted_up_to() || line.sold_out_after() == Some(after) {
                return Err(format!(
                    "out of units after {after} (admitted up to {}, last out after {:?})",
                    line.admitted_up_to(),
                    line.sold_out_after()
                ));
            }
            line.apply_sold_out(after);
            Ok(())
        }
        Record::Control { sale, control } => {
            line_of(lines, sale)?.set_control(control);
            Ok(())
        }
    }
}

fn line_of(lines: &mut HashMap<SaleId, Line>, sale: SaleId) -> Result<&mut Line, String> {
    lines
        .get_mut(&sale)
        .ok_or_else(|| format!("sale {sale} has no set-up before it"))
}

/// A set-up is logged only when it made or moved a line, which it does only while nobody has
/// joined.
fn set_up(lines: &mut HashMap<SaleId, Line>, sale: SaleId, times: LineTimes) -> Result<(), String> {
    if times.opens_at >= times.starts_at {
        return Err(format!("sale {sale}'s line opens at or after its start"));
    }
    match lines.get_mut(&sale) {
        // As when it was written: every time before the draw, the end and the admission
        // time after it.
        Some(line) => line.set_times(times),
        None => {
            lines.insert(sale, Line::new(times));
        }
    }
    Ok(())
}
