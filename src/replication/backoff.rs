//! Reconnect delays: exponential with jitter, so many bridges restarted together do not
//! reconnect in lockstep.

use std::time::Duration;

/// First delay: short, because most interruptions (a restart, a failover) heal quickly.
pub(super) const INITIAL: Duration = Duration::from_millis(100);
/// Longest delay: a PostgreSQL that is down for long is retried twice a minute.
pub(super) const MAX: Duration = Duration::from_secs(30);

/// Doubling delays from [`INITIAL`] to [`MAX`]; each returned delay is drawn from the upper
/// half of the current step ("equal jitter"), so it is never shorter than half the step.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { step: INITIAL }
    }
}

impl Backoff {
    /// The current step, before jitter.
    #[cfg(test)]
    pub(super) fn step(&self) -> Duration {
        self.step
    }

    /// The next delay; doubles the step up to [`MAX`].
    pub(super) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(MAX);
        let half = step / 2;
        let jitter_micros = rand::random_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter_micros)
    }

    /// Back to [`INITIAL`], after a session that streamed for a while.
    pub(super) fn reset(&mut self) {
        self.step = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let mut b = Backoff::default();
        let mut step = INITIAL;
        for _ in 0..20 {
            let delay = b.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(MAX);
            assert_eq!(b.step(), step);
        }
        assert_eq!(b.step(), MAX);
        b.reset();
        assert_eq!(b.step(), INITIAL);
    }

    #[test]
    fn schedule_reaches_the_cap_after_nine_steps() {
        let mut b = Backoff::default();
        let steps: Vec<_> = (0..10)
            .map(|_| {
                let s = b.step();
                b.next_delay();
                s.as_millis()
            })
            .collect();
        assert_eq!(
            steps,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000]
        );
    }
}
