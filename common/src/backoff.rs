//! Exponential backoff: the one retry schedule hx uses, for HTTP model calls and for
//! publishing jobs and results until the NATS server has stored them. Each caller sleeps in
//! its own way (a thread or a task); the schedule is this.

use std::time::Duration;

/// Waits between tries: `first`, then doubling, never above `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A schedule that starts at `first` and doubles up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first.min(max),
            max,
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    /// The wait before the next try. Never ends: callers decide when to give up.
    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let ms = |v: u64| Duration::from_millis(v);
        let got: Vec<Duration> = Backoff::new(ms(100), ms(1000)).take(6).collect();
        assert_eq!(
            got,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // No overflow however long it runs.
        let mut b = Backoff::new(ms(1), Duration::MAX);
        assert!(b.nth(200).is_some_and(|d| d == Duration::MAX));
    }
}
