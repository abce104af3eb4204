//! Waits between tries: capped exponential backoff with full jitter, for every retry loop
//! (CloudWatch calls, engine reconnects, SQS receives).

use std::time::Duration;

/// Capped exponential backoff with full jitter: try `n` waits a random time in
/// `[0, min(cap, base * 2^n)]`, never less than `floor`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// First ceiling.
    base: Duration,
    /// Largest ceiling.
    cap: Duration,
    /// Shortest wait.
    floor: Duration,
    /// Tries so far.
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            floor: Duration::from_millis(10),
            attempt: 0,
        }
    }

    /// The wait before the next try.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let jittered = ceiling.mul_f64(rand::random::<f64>());
        jittered.max(self.floor)
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(10)));
        // Jitter: not all the late delays are the same.
        assert!(delays[10..].windows(2).any(|w| w[0] != w[1]));
        assert_eq!(b.attempts(), 50);
    }
}
