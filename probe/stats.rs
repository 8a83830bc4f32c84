//! Small statistics shared by the areas that time things (DNS, gRPC,
//! capture): nearest-rank percentiles over millisecond samples.

/// The nearest-rank percentile `p` (0 < p <= 100) of `samples`: the
/// smallest sample such that at least p% of the samples are at or below it.
/// `None` for no samples. Order of `samples` does not matter.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p = p.clamp(0.0, 100.0);
    // Nearest rank: ceil(p/100 * n), at least 1.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// The largest sample, `None` for none.
pub fn max(samples: &[f64]) -> Option<f64> {
    samples.iter().copied().reduce(f64::max)
}

/// One-sided Fisher exact test: the probability of seeing `a` or more
/// events among `n1` trials of group 1 if groups 1 (`a` of `n1`) and 2 (`b`
/// of `n2`) had the same rate. Small values say group 1's rate is higher.
pub fn fisher_greater(a: u32, n1: u32, b: u32, n2: u32) -> f64 {
    let (a, n1, b, n2) = (a.min(n1), n1, b.min(n2), n2);
    let (total, events) = (n1 + n2, a + b);
    let ln_choose = |n: u32, k: u32| ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k);
    let denominator = ln_choose(total, n1);
    let p: f64 = (a..=events.min(n1))
        .filter(|&x| events - x <= n2)
        .map(|x| (ln_choose(events, x) + ln_choose(total - events, n1 - x) - denominator).exp())
        .sum();
    p.min(1.0)
}

fn ln_factorial(n: u32) -> f64 {
    (2..=n).map(|k| f64::from(k).ln()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert_eq!(percentile(&s, 5.0), Some(15.0));
        assert_eq!(percentile(&s, 30.0), Some(20.0));
        assert_eq!(percentile(&s, 40.0), Some(20.0));
        assert_eq!(percentile(&s, 50.0), Some(35.0));
        assert_eq!(percentile(&s, 100.0), Some(50.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
        assert_eq!(percentile(&hundred, 90.0), Some(90.0));
        assert_eq!(max(&s), Some(50.0));
        assert_eq!(max(&[]), None);
    }

    #[test]
    fn fisher_exact_one_sided() {
        // 6 of 20 against 0 of 20: C(20,6) / C(40,6).
        assert!((fisher_greater(6, 20, 0, 20) - 38760.0 / 3838380.0).abs() < 1e-9);
        assert!(fisher_greater(20, 20, 0, 20) < 1e-10);
        assert!((fisher_greater(0, 20, 3, 20) - 1.0).abs() < 1e-9);
        assert!(fisher_greater(2, 20, 2, 20) > 0.5);
        assert!((fisher_greater(0, 0, 0, 0) - 1.0).abs() < 1e-9);
    }
}
