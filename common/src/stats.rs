//! Statistics for honest scores: success rates come with intervals, because a harness evaluated
//! on 20 tasks has a noisy rate.

/// A success rate and its confidence interval, all in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    /// Successes.
    pub successes: u64,
    /// Trials.
    pub trials: u64,
    /// `successes / trials`, 0 with no trials.
    pub rate: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

impl Rate {
    /// The rate with its 95% Wilson score interval.
    pub fn wilson95(successes: u64, trials: u64) -> Rate {
        Rate::wilson(successes, trials, 1.959_963_984_540_054)
    }

    /// The rate with its Wilson score interval for the normal quantile `z`. Unlike the normal
    /// approximation it stays inside `[0, 1]` and is sensible at 0 or `trials` successes.
    pub fn wilson(successes: u64, trials: u64, z: f64) -> Rate {
        assert!(
            successes <= trials,
            "{successes} successes in {trials} trials"
        );
        if trials == 0 {
            return Rate {
                successes,
                trials,
                rate: 0.0,
                low: 0.0,
                high: 1.0,
            };
        }
        let n = trials as f64;
        let p = successes as f64 / n;
        let z2 = z * z;
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
        Rate {
            successes,
            trials,
            rate: p,
            low: (centre - half).max(0.0),
            high: (centre + half).min(1.0),
        }
    }
}

impl std::fmt::Display for Rate {
    /// `12/50 = 24.0% [14.3%, 37.4%]`; the level is the caller's to state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} = {:.1}% [{:.1}%, {:.1}%]",
            self.successes,
            self.trials,
            100.0 * self.rate,
            100.0 * self.low,
            100.0 * self.high
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 8 of 10 at 95%: 0.4902 to 0.9433 (Wilson 1927; Newcombe 1998, table I).
        let r = Rate::wilson95(8, 10);
        assert!((r.low - 0.4902).abs() < 1e-4, "{r:?}");
        assert!((r.high - 0.9433).abs() < 1e-4, "{r:?}");
        let r = Rate::wilson95(0, 20);
        assert_eq!(r.low, 0.0);
        assert!((r.high - 0.1611).abs() < 1e-4, "{r:?}");
        assert_eq!(Rate::wilson95(0, 0).high, 1.0);
        assert_eq!(
            Rate::wilson95(12, 50).to_string(),
            "12/50 = 24.0% [14.3%, 37.4%]"
        );
    }
}
