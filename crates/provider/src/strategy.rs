//! The ways a provider may lie, as one concept. The node's adversary build
//! (`plexus node --misbehave MODE`), the simulation of the real cores
//! (`sim`) and the verification policy's own simulation (`sim::verification`)
//! all take a [`Strategy`], parse it from the same text, and decide on which
//! tasks to lie through the same [`Strategy::forgery`], so a mode means the
//! same thing in a test, a simulated network and a real one.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// How a provider behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Strategy {
    Honest,
    /// A wrong output of its own (signed, well-formed) on this share of
    /// tasks, drawn per task and provider.
    Wrong {
        percent: u8,
    },
    /// After its first `after` tasks, the same wrong output as every other
    /// colluder on the tasks whose draw falls in this share (every colluder
    /// draws alike, so they lie on the same tasks).
    Collude {
        after: u64,
        percent: u8,
    },
    /// Honest for its first `after` tasks (to earn trust), then wrong, with
    /// an output of its own, on this share.
    Intermittent {
        after: u64,
        percent: u8,
    },
    /// Claims more fuel than the task used.
    FuelLie,
    /// Answers with the signed result of the task it ran before.
    Replay,
    /// Accepts tasks and never answers.
    Silent,
    /// Honest, and each task takes this many times as long.
    Slow {
        factor: u32,
    },
    /// Results whose signature does not verify.
    BadSignature,
    /// Output blobs whose bytes do not match their hash.
    BadOutput,
    /// Results over the control message limit.
    Oversized,
    /// A coalition that lies (the same wrong output) exactly when it holds
    /// every replica of a task sent to several providers at once. Only a
    /// simulation knows who holds a task, so only the simulations play it;
    /// the node refuses it.
    Selective,
}

/// Which wrong output a lie gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// One of its own: no other provider gives it.
    Own,
    /// The one every colluder gives for this task.
    Shared,
}

/// A draw in 0..100 for a task, the same wherever it is made with the same
/// salt (a provider's own name, or the colluders' shared one).
pub fn draw_percent(salt: &str, job: &str, task: u64) -> u8 {
    let h = types::BlobHash::of(format!("{salt}:{job}:{task}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.0[..8]);
    (u64::from_le_bytes(first) % 100) as u8
}

/// The salt every colluder draws with.
const COLLUDERS: &str = "collude";

impl Strategy {
    /// Whether its results are ever wrong (for the simulations' tallies).
    pub fn cheats(self) -> bool {
        matches!(
            self,
            Strategy::Wrong { .. }
                | Strategy::Collude { .. }
                | Strategy::Intermittent { .. }
                | Strategy::FuelLie
                | Strategy::Replay
                | Strategy::BadSignature
                | Strategy::BadOutput
                | Strategy::Oversized
                | Strategy::Selective
        )
    }

    /// Each task's run time is multiplied by this.
    pub fn slowdown(self) -> u32 {
        match self {
            Strategy::Slow { factor } => factor.max(1),
            _ => 1,
        }
    }

    /// Whether the provider `own` lies about `task` of `job`, the
    /// `executed`-th task it ran (from 1), and with which output.
    pub fn forgery(self, executed: u64, own: &str, job: &str, task: u64) -> Option<Forgery> {
        match self {
            Strategy::Wrong { percent } => {
                (draw_percent(own, job, task) < percent).then_some(Forgery::Own)
            }
            Strategy::Collude { after, percent } => (executed > after
                && draw_percent(COLLUDERS, job, task) < percent)
                .then_some(Forgery::Shared),
            Strategy::Intermittent { after, percent } => {
                (executed > after && draw_percent(own, job, task) < percent).then_some(Forgery::Own)
            }
            _ => None,
        }
    }

    /// The kind, without its numbers.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Honest => "honest",
            Strategy::Wrong { .. } => "wrong",
            Strategy::Collude { .. } => "collude",
            Strategy::Intermittent { .. } => "intermittent",
            Strategy::FuelLie => "fuel",
            Strategy::Replay => "replay",
            Strategy::Silent => "silent",
            Strategy::Slow { .. } => "slow",
            Strategy::BadSignature => "bad-signature",
            Strategy::BadOutput => "bad-output",
            Strategy::Oversized => "oversized",
            Strategy::Selective => "selective",
        }
    }
}

/// The text [`FromStr`] reads back.
impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Wrong { percent } => write!(f, "wrong:{percent}"),
            Strategy::Collude { after, percent } => write!(f, "collude:{after}:{percent}"),
            Strategy::Intermittent { after, percent } => {
                write!(f, "intermittent:{after}:{percent}")
            }
            Strategy::Slow { factor } => write!(f, "slow:{factor}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Why a strategy's text is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrategyError(pub String);

impl fmt::Display for StrategyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StrategyError {}

impl FromStr for Strategy {
    type Err = StrategyError;

    fn from_str(s: &str) -> Result<Self, StrategyError> {
        let expected = "expected honest, wrong:PERCENT, collude:[AFTER:]PERCENT, \
                        intermittent:AFTER:PERCENT, fuel, replay, silent, slow:FACTOR, \
                        bad-signature, bad-output, oversized or selective";
        let percent = |p: &str| -> Result<u8, StrategyError> {
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| StrategyError(format!("{p:?} is not a percentage")))
        };
        let tasks = |n: &str| -> Result<u64, StrategyError> {
            n.parse()
                .map_err(|_| StrategyError(format!("{n:?} is not a number of tasks")))
        };
        let parts: Vec<&str> = s.split(':').collect();
        Ok(match parts.as_slice() {
            ["honest"] => Strategy::Honest,
            ["wrong", p] => Strategy::Wrong {
                percent: percent(p)?,
            },
            ["collude", p] => Strategy::Collude {
                after: 0,
                percent: percent(p)?,
            },
            ["collude", after, p] => Strategy::Collude {
                after: tasks(after)?,
                percent: percent(p)?,
            },
            ["intermittent", after, p] => Strategy::Intermittent {
                after: tasks(after)?,
                percent: percent(p)?,
            },
            ["fuel"] => Strategy::FuelLie,
            ["replay"] => Strategy::Replay,
            ["silent"] => Strategy::Silent,
            ["slow", factor] => Strategy::Slow {
                factor: factor.parse().ok().filter(|f| *f >= 1).ok_or_else(|| {
                    StrategyError(format!("{factor:?} is not a factor (1 or more)"))
                })?,
            },
            ["bad-signature"] => Strategy::BadSignature,
            ["bad-output"] => Strategy::BadOutput,
            ["oversized"] => Strategy::Oversized,
            ["selective"] => Strategy::Selective,
            _ => return Err(StrategyError(expected.into())),
        })
    }
}
