//! `node.conntrack` evidence as metrics (`watch --node`). Reads only the
//! evidence keys the README documents.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::metrics::{evidence, Family, Sample};
use crate::report::Check;

#[derive(Deserialize)]
struct Conntrack {
    count: u64,
    max: u64,
    increases: BTreeMap<String, u64>,
}

/// The table's fill as gauges; insert_failed as a counter of the events
/// seen in each cycle's sampling window.
pub fn samples(check: &Check) -> Vec<Sample> {
    match check.id.as_str() {
        "node.conntrack" => evidence::<Conntrack>(check)
            .map(|e| {
                vec![
                    Sample::new(Family::ConntrackEntries, &[], e.count as f64),
                    Sample::new(Family::ConntrackMax, &[], e.max as f64),
                    Sample::new(
                        Family::ConntrackInsertFailed,
                        &[],
                        e.increases.get("insert_failed").copied().unwrap_or(0) as f64,
                    ),
                ]
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::measure::ConntrackEvidence;
    use crate::report::Status;

    #[test]
    fn conntrack_fill_and_insert_failures_become_samples() {
        let mut e = ConntrackEvidence {
            count: 200,
            max: 262_144,
            ..Default::default()
        };
        e.increases.insert("insert_failed".into(), 3);
        let check = Check::new("node.conntrack", "t", Status::Warn, "s", &e);
        let samples = samples(&check);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].value, 200.0);
        assert_eq!(samples[2].family, Family::ConntrackInsertFailed);
        assert_eq!(samples[2].value, 3.0);
        let other = Check::new("node.snat", "t", Status::Pass, "s", &serde_json::json!({}));
        assert!(super::samples(&other).is_empty());
    }
}
