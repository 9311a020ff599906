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
        // At no successes (or all) the bound is exactly 0 (or 1); the subtraction leaves
        // rounding dust there, which would rank a 0/24 above a 0/12 by 1e-17.
        Rate {
            successes,
            trials,
            rate: p,
            low: if successes == 0 {
                0.0
            } else {
                (centre - half).max(0.0)
            },
            high: if successes == trials {
                1.0
            } else {
                (centre + half).min(1.0)
            },
        }
    }
}

/// The mean of scores in `[0, 1]` (progress, partial credit) and its confidence interval.
///
/// The interval is Student's t on the sample: mean +- t(n-1) s / sqrt(n), clamped to `[0, 1]`.
/// Why t and not Wilson: Wilson's interval assumes the Bernoulli variance mean(1 - mean), the
/// largest a score in `[0, 1]` can have; progress scores vary far less than that (a harness
/// that reaches a third of the goal on every task has a tight mean), so Wilson would hide
/// real differences. With fewer than two scores there is no spread to measure and the
/// interval is the whole `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mean {
    /// Scores averaged.
    pub n: u64,
    /// Their mean, 0 with none.
    pub mean: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

impl Mean {
    /// The mean of `scores` with its 95% t interval.
    pub fn t95(scores: &[f64]) -> Mean {
        Mean::t(scores, 0.95)
    }

    /// The mean of `scores` (each in `[0, 1]`; others are clamped) with its two-sided t
    /// interval at `confidence` (in `(0, 1)`).
    pub fn t(scores: &[f64], confidence: f64) -> Mean {
        let n = scores.len();
        let clamped = || scores.iter().map(|x| x.clamp(0.0, 1.0));
        let mean = if n == 0 {
            0.0
        } else {
            clamped().sum::<f64>() / n as f64
        };
        if n < 2 {
            return Mean {
                n: n as u64,
                mean,
                low: 0.0,
                high: 1.0,
            };
        }
        let var = clamped().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half =
            student_t_quantile(0.5 + confidence / 2.0, (n - 1) as f64) * (var / n as f64).sqrt();
        Mean {
            n: n as u64,
            mean,
            low: (mean - half).max(0.0),
            high: (mean + half).min(1.0),
        }
    }
}

impl std::fmt::Display for Mean {
    /// `0.42 [0.31, 0.53] (n=24)`; the level is the caller's to state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} [{:.2}, {:.2}] (n={})",
            self.mean, self.low, self.high, self.n
        )
    }
}

/// A mean difference of paired scores (each difference in `[-1, 1]`: one harness's score on
/// a task minus another's on the same task) with its t interval, unclamped below 0.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Diff {
    /// Pairs.
    pub n: u64,
    /// The mean difference, 0 with none.
    pub mean: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

impl Diff {
    /// The mean of `diffs` with its 95% t interval (the whole `[-1, 1]` with fewer than two).
    pub fn t95(diffs: &[f64]) -> Diff {
        Diff::t(diffs, 0.95)
    }

    /// The mean of `diffs` with its two-sided t interval at `confidence` (the whole `[-1, 1]`
    /// with fewer than two).
    pub fn t(diffs: &[f64], confidence: f64) -> Diff {
        let n = diffs.len();
        let mean = if n == 0 {
            0.0
        } else {
            diffs.iter().sum::<f64>() / n as f64
        };
        if n < 2 {
            return Diff {
                n: n as u64,
                mean,
                low: -1.0,
                high: 1.0,
            };
        }
        let var = diffs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half =
            student_t_quantile(0.5 + confidence / 2.0, (n - 1) as f64) * (var / n as f64).sqrt();
        Diff {
            n: n as u64,
            mean,
            low: (mean - half).max(-1.0),
            high: (mean + half).min(1.0),
        }
    }

    /// Whether the interval leaves out zero.
    pub fn apart_from_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

impl std::fmt::Display for Diff {
    /// `+0.21 [+0.03, +0.39] (n=24)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:+.2} [{:+.2}, {:+.2}] (n={})",
            self.mean, self.low, self.high, self.n
        )
    }
}

/// Student's t quantile with `df` degrees of freedom, for `p` in `(0, 1)`: exact for one and
/// two degrees of freedom, else the Cornish-Fisher expansion around the normal quantile
/// (Abramowitz and Stegun 26.7.5, four terms; within 0.1% of tables from three degrees up).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    if df <= 1.0 {
        return (std::f64::consts::PI * (p - 0.5)).tan();
    }
    if df <= 2.0 {
        return (2.0 * p - 1.0) / (2.0 * p * (1.0 - p)).sqrt();
    }
    let z = normal_quantile(p);
    let (z2, v) = (z * z, df);
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92_160.0;
    z + g1 / v + g2 / (v * v) + g3 / (v * v * v) + g4 / (v * v * v * v)
}

/// The standard normal quantile: the `z` with `P(Z <= z) = p`, for `p` in `(0, 1)` (Acklam's
/// rational approximation, relative error below 1.2e-9). `normal_quantile(0.975)` is the 1.96
/// of a 95% interval.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
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
    fn normal_quantiles_match_tables() {
        for (p, z) in [
            (0.975, 1.959_963_985),
            (0.95, 1.644_853_627),
            (0.995, 2.575_829_304),
            (0.5, 0.0),
            (0.01, -2.326_347_874),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-6,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    #[test]
    fn t_quantiles_match_tables() {
        // Two-sided 95% critical values (any statistics table).
        for (df, t) in [
            (1.0, 12.706),
            (2.0, 4.303),
            (3.0, 3.182),
            (5.0, 2.571),
            (10.0, 2.228),
            (23.0, 2.069),
            (100.0, 1.984),
        ] {
            let q = student_t_quantile(0.975, df);
            assert!((q - t).abs() / t < 1.5e-3, "df {df}: {q} vs {t}");
        }
    }

    #[test]
    fn paired_differences_have_signed_t_intervals() {
        // Differences +1, 0, +1, +1, 0, 0, +1, +1: mean 0.625, sd 0.518, t(7) 2.365.
        let d = Diff::t95(&[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(d.n, 8);
        assert!((d.mean - 0.625).abs() < 1e-12);
        assert!(
            (d.low - 0.192).abs() < 0.01 && (d.high - 1.0).abs() < 0.06,
            "{d}"
        );
        assert!(d.apart_from_zero());
        // A negative mean keeps its sign, and an interval across zero is not apart from it.
        let d = Diff::t95(&[-1.0, 0.0, 1.0, -1.0]);
        assert!(d.mean < 0.0 && d.low < 0.0 && d.high > 0.0 && !d.apart_from_zero());
        assert_eq!(Diff::t95(&[0.5]).low, -1.0);
        assert_eq!(
            format!("{}", Diff::t95(&[0.25, 0.25])),
            "+0.25 [+0.25, +0.25] (n=2)"
        );
    }

    #[test]
    fn means_have_t_intervals_inside_the_unit_range() {
        // 0.2, 0.4, 0.6: mean 0.4, s 0.2, half-width 4.303 * 0.2 / sqrt(3) = 0.4969.
        let m = Mean::t95(&[0.2, 0.4, 0.6]);
        assert!((m.mean - 0.4).abs() < 1e-12);
        assert_eq!(m.low, 0.0);
        assert!((m.high - 0.8969).abs() < 1e-3, "{m:?}");
        // Equal scores: no spread, the interval is the point.
        let m = Mean::t95(&[0.25; 6]);
        assert_eq!((m.low, m.high), (0.25, 0.25));
        // Too few to measure spread: the whole range.
        assert_eq!(Mean::t95(&[0.5]).low, 0.0);
        assert_eq!(Mean::t95(&[]).high, 1.0);
        // Tight scores separate where Wilson on the same mean would not.
        let a = Mean::t95(&[0.30, 0.35, 0.30, 0.32, 0.33, 0.31]);
        let b = Mean::t95(&[0.20, 0.22, 0.18, 0.21, 0.19, 0.20]);
        assert!(a.low > b.high, "{a} vs {b}");
        assert_eq!(a.to_string(), "0.32 [0.30, 0.34] (n=6)");
    }

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
        // Exactly 0 (or 1) at the ends, for every size: racing compares these bounds.
        for n in 1..=500 {
            assert_eq!(Rate::wilson95(0, n).low, 0.0, "0/{n}");
            assert_eq!(Rate::wilson95(n, n).high, 1.0, "{n}/{n}");
        }
        assert_eq!(
            Rate::wilson95(12, 50).to_string(),
            "12/50 = 24.0% [14.3%, 37.4%]"
        );
    }
}
