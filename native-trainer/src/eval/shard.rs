//! Shards: `--shard i/n` evaluates the batches b with b % n == i; `atop eval
//! merge` puts the shards' per-point counts back in subset order, giving the
//! report one run would have written (every unit is seeded by its batch).

use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{EvalReport, sanity, worst_case_rows};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn owns(self, batch: usize) -> bool {
        batch % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("--shard {s}: expected i/n with 0 <= i < n, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// Combines shard reports of one protocol into the whole run's report.
/// `names` label the reports in errors (their files).
pub fn merge(parts: &[EvalReport], names: &[String]) -> Result<EvalReport> {
    let Some(first) = parts.first() else {
        bail!("nothing to merge");
    };
    let n = first.indices.len();
    let mut owner = vec![None::<usize>; n];
    for (p, (part, name)) in parts.iter().zip(names).enumerate() {
        if part.indices != first.indices || part.subset_seed != first.subset_seed {
            bail!("{name}: another test subset than {}", names[0]);
        }
        let keys = |r: &EvalReport| -> Vec<(String, String, String, u64)> {
            r.rows
                .iter()
                .map(|x| {
                    (
                        x.model.clone(),
                        x.attack.clone(),
                        x.mode.clone(),
                        x.eps.to_bits(),
                    )
                })
                .collect()
        };
        if keys(part) != keys(first) {
            bail!("{name}: another protocol (rows differ from {})", names[0]);
        }
        for &pos in &part.positions {
            if pos >= n {
                bail!("{name}: position {pos} outside the subset of {n}");
            }
            if let Some(other) = owner[pos] {
                bail!("{name}: point {pos} also in {}", names[other]);
            }
            owner[pos] = Some(p);
        }
    }
    if let Some(missing) = owner.iter().position(Option::is_none) {
        bail!("the shards do not cover the subset: point {missing} is in none of them");
    }
    let mut rows: Vec<_> = first
        .rows
        .iter()
        .filter(|r| r.attack != "worst case")
        .cloned()
        .collect();
    for (r, row) in rows.iter_mut().enumerate() {
        let mut counts = vec![0usize; n];
        for part in parts {
            for (k, &pos) in part.positions.iter().enumerate() {
                counts[pos] = part.rows[r].correct_counts[k];
            }
        }
        row.correct_counts = counts;
        row.recount();
    }
    let worst = worst_case_rows(&rows);
    rows.extend(worst);
    // Only the shard with batch 0 ran the gradient checks; the table checks
    // are redone on the merged table.
    let gradient_warnings: Vec<String> = parts
        .iter()
        .flat_map(|p| p.gradient_warnings.iter().cloned())
        .collect();
    let tuning_probes = parts
        .iter()
        .flat_map(|p| p.tuning_probes.iter().cloned())
        .collect();
    let mut warnings = gradient_warnings.clone();
    warnings.extend(sanity::row_warnings(&rows));
    Ok(EvalReport {
        subset_seed: first.subset_seed,
        indices: first.indices.clone(),
        positions: (0..n).collect(),
        shard: None,
        rows,
        warnings,
        gradient_warnings,
        tuning_probes,
    })
}
