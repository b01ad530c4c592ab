//! The retry budget: how many failed canary requests may be retried on stable. Every
//! request deposits a fraction of a token and every retry takes a whole one, so retries
//! stay a bounded share of recent traffic and a failing canary can never double the load
//! on stable. Lock-free: one atomic add per request.

use std::sync::atomic::{AtomicI64, Ordering};

/// Tokens are counted in thousandths.
const UNIT: i64 = 1000;
/// The most a quiet service can save up: enough for a burst, never an unbounded one.
const CAP: i64 = 100 * UNIT;

#[derive(Debug)]
pub struct RetryBudget {
    balance: AtomicI64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        // A new service may retry a few requests before it has deposited anything.
        RetryBudget {
            balance: AtomicI64::new(10 * UNIT),
        }
    }
}

impl RetryBudget {
    /// Called once per request; `ratio` is the share of requests that may be retries.
    #[inline]
    pub fn deposit(&self, ratio: f64) {
        if self.balance.load(Ordering::Relaxed) < CAP {
            self.balance
                .fetch_add((ratio * UNIT as f64) as i64, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget, if there is one.
    pub fn try_withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance >= UNIT).then_some(balance - UNIT)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_the_share_of_traffic() {
        let budget = RetryBudget::default();
        let mut retried = 0;
        for _ in 0..10_000 {
            budget.deposit(0.2);
            if budget.try_withdraw() {
                retried += 1;
            }
        }
        // 20% of 10,000 plus the starting allowance of 10.
        assert!((2000..=2010).contains(&retried), "{retried} retries");
    }

    #[test]
    fn a_quiet_service_cannot_save_up_an_unbounded_burst() {
        let budget = RetryBudget::default();
        for _ in 0..1_000_000 {
            budget.deposit(0.2);
        }
        let burst = (0..1000).take_while(|_| budget.try_withdraw()).count();
        assert!(burst <= 101, "burst of {burst}");
    }
}
