//! Task names. A task is `suite/split/seed` everywhere: in configs, on the wire, in the store
//! and in reports, so a result can always be traced back to the world it came from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A disjoint part of a suite's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// What the search evolves on.
    Train,
    /// What picks the final best harness.
    Validation,
    /// Held out: scored once, at the end, on the best harness only. Built-in suites draw it
    /// from layouts and kinds the other splits never show (out of distribution).
    Test,
    /// Held out in distribution: unseen seeds drawn like train's, scored only at the end, so
    /// in-distribution gain and out-of-distribution transfer are reported apart.
    Heldout,
}

impl Split {
    /// The name used in task names and files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
            Split::Heldout => "heldout",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "train" => Ok(Split::Train),
            "validation" | "valid" => Ok(Split::Validation),
            "test" => Ok(Split::Test),
            "heldout" | "held-out" => Ok(Split::Heldout),
            _ => Err(Error::Split(s.to_owned())),
        }
    }
}

/// A task name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not three `/`-separated parts.
    #[error("task name {0:?} is not of the form suite/split/seed")]
    Shape(String),
    /// Suite names are lowercase letters, digits and `-`.
    #[error("suite name {0:?} must be 1 to 32 characters of a-z, 0-9 and '-'")]
    Suite(String),
    /// Unknown split.
    #[error("split {0:?} is not one of train, validation, test, heldout")]
    Split(String),
    /// Seed is not a non-negative integer.
    #[error("seed {0:?} is not a non-negative integer")]
    Seed(String),
}

/// Checks a suite name: 1 to 32 characters of `a-z`, `0-9` and `-`.
pub fn check_suite_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Suite(name.to_owned()))
    }
}

/// One task: a world generated from `seed` in a suite's split.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    /// The suite, e.g. `household`.
    pub suite: String,
    /// The split.
    pub split: Split,
    /// The world's seed within the split.
    pub seed: u64,
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.suite, self.split, self.seed)
    }
}

impl FromStr for TaskRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut parts = s.split('/');
        let (Some(suite), Some(split), Some(seed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Shape(s.to_owned()));
        };
        check_suite_name(suite)?;
        Ok(TaskRef {
            suite: suite.to_owned(),
            split: split.parse()?,
            seed: seed.parse().map_err(|_| Error::Seed(seed.to_owned()))?,
        })
    }
}

/// Tasks of one suite and split, named by seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskBatch {
    /// The suite.
    pub suite: String,
    /// The split.
    pub split: Split,
    /// The seeds, in the order they are to be run.
    pub seeds: Vec<u64>,
}

impl TaskBatch {
    /// The batch's tasks, in order.
    pub fn tasks(&self) -> impl Iterator<Item = TaskRef> + '_ {
        self.seeds.iter().map(|&seed| TaskRef {
            suite: self.suite.clone(),
            split: self.split,
            seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_round_trip_and_reject_garbage() {
        let t: TaskRef = "household/test/42".parse().expect("parses");
        assert_eq!(t.split, Split::Test);
        assert_eq!(t.to_string(), "household/test/42");
        for bad in [
            "",
            "a/b",
            "household/dev/1",
            "household/train/-1",
            "Up/train/1",
            "a/train/1/2",
        ] {
            assert!(bad.parse::<TaskRef>().is_err(), "{bad}");
        }
    }
}
