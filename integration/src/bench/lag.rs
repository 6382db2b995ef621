//! Read-side lag: what the load generator wrote, matched by entity id and revision with what the read handler
//! received. Two lags per event, both on the wall clock the two processes share:
//!
//! - *after the reply*: handler receive time minus the arrival of the command's reply. The commit precedes the
//!   reply, so this understates commit→handler by the reply's trip back (a fraction of a millisecond); it is
//!   what a client sees: how long after its write succeeded the read model has it. A delivery that beats the
//!   reply counts as 0 and is counted.
//! - *after `revision_date`*: handler receive time minus the event's `revision_date`, which Chief of State sets
//!   before the write handler's `HandleEvent` and the commit; it overstates commit→handler by that much.
//!
//! The true commit→handler lag lies between the two.

use std::collections::HashMap;
use std::time::Duration;

use super::load::percentile_of;
use super::read_handler::Delivery;

/// One command the load generator saw succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub entity_id: String,
    /// The revision the reply's meta reported (the command's one event).
    pub revision: u32,
    /// Wall clock when the reply arrived.
    pub reply_micros: u64,
}

/// The lags of a run and what did not match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagSummary {
    /// Written events.
    pub written: usize,
    /// Written events the handler received (at least once).
    pub delivered: usize,
    /// Delivered events whose first delivery came before their command's reply arrived (lag counted as 0).
    pub before_reply: usize,
    /// Deliveries of an event after its first one (at-least-once delivery).
    pub redelivered: usize,
    /// Lag after the reply of every delivered event, in microseconds, sorted.
    pub after_reply_micros: Vec<u64>,
    /// Lag after `revision_date` of every delivered event, in microseconds, sorted.
    pub after_revision_date_micros: Vec<u64>,
    /// Wall clock of the last first delivery of a written event (0 if none was delivered).
    pub last_delivery_micros: u64,
    /// Wall clock of the last reply (0 without writes).
    pub last_reply_micros: u64,
}

impl LagSummary {
    /// Matches deliveries to writes by (entity id, revision); deliveries of other events are ignored.
    pub fn of(written: &[Written], deliveries: &[Delivery]) -> Self {
        let mut first_deliveries: HashMap<(&str, u32), &Delivery> = HashMap::new();
        let mut redelivered = 0;
        for delivery in deliveries {
            let key = (delivery.entity_id.as_str(), delivery.revision);
            match first_deliveries.get(&key) {
                Some(earlier) => {
                    redelivered += 1;
                    if delivery.received_micros < earlier.received_micros {
                        first_deliveries.insert(key, delivery);
                    }
                }
                None => {
                    first_deliveries.insert(key, delivery);
                }
            }
        }
        let mut summary = Self {
            written: written.len(),
            redelivered,
            ..Self::default()
        };
        for write in written {
            summary.last_reply_micros = summary.last_reply_micros.max(write.reply_micros);
            let Some(delivery) = first_deliveries.get(&(write.entity_id.as_str(), write.revision))
            else {
                continue;
            };
            summary.delivered += 1;
            if delivery.received_micros < write.reply_micros {
                summary.before_reply += 1;
            }
            summary
                .after_reply_micros
                .push(delivery.received_micros.saturating_sub(write.reply_micros));
            summary.after_revision_date_micros.push(
                delivery
                    .received_micros
                    .saturating_sub(delivery.revision_date_micros),
            );
            summary.last_delivery_micros =
                summary.last_delivery_micros.max(delivery.received_micros);
        }
        summary.after_reply_micros.sort_unstable();
        summary.after_revision_date_micros.sort_unstable();
        summary
    }

    /// Lag after the reply below which `quantile` of the delivered events lie.
    pub fn after_reply(&self, quantile: f64) -> Duration {
        percentile_of(&self.after_reply_micros, quantile)
    }

    /// Lag after `revision_date` below which `quantile` of the delivered events lie.
    pub fn after_revision_date(&self, quantile: f64) -> Duration {
        percentile_of(&self.after_revision_date_micros, quantile)
    }

    /// Written events never delivered while the benchmark waited.
    pub fn missing(&self) -> usize {
        self.written - self.delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(entity_id: &str, revision: u32, reply_micros: u64) -> Written {
        Written {
            entity_id: entity_id.into(),
            revision,
            reply_micros,
        }
    }

    fn delivered(entity_id: &str, revision: u32, received: u64, revision_date: u64) -> Delivery {
        Delivery {
            received_micros: received,
            revision_date_micros: revision_date,
            revision,
            read_side_id: "lag".into(),
            entity_id: entity_id.into(),
        }
    }

    #[test]
    fn lags_match_by_entity_and_revision_and_clamp_early_deliveries_to_zero() {
        let writes = [
            written("a", 1, 1_000),
            written("a", 2, 2_000),
            written("b", 1, 3_000),
            written("c", 1, 4_000),
        ];
        let deliveries = [
            delivered("a", 1, 1_500, 900),
            delivered("b", 1, 2_900, 2_800),
            delivered("a", 2, 2_300, 1_800),
            delivered("a", 2, 9_000, 1_800),
            delivered("warm-up", 1, 100, 50),
        ];
        let summary = LagSummary::of(&writes, &deliveries);
        assert_eq!(summary.written, 4);
        assert_eq!(summary.delivered, 3);
        assert_eq!(summary.missing(), 1);
        assert_eq!(summary.before_reply, 1);
        assert_eq!(summary.redelivered, 1);
        assert_eq!(summary.after_reply_micros, vec![0, 300, 500]);
        assert_eq!(summary.after_revision_date_micros, vec![100, 500, 600]);
        assert_eq!(summary.last_delivery_micros, 2_900);
        assert_eq!(summary.last_reply_micros, 4_000);
        assert_eq!(summary.after_reply(1.0), Duration::from_micros(500));
    }
}
