//! The job file (TOML): what to run, over which parameters, with which
//! inputs and limits, and how to assemble the outputs.
//!
//! ```toml
//! name = "render-demo"
//! module = "builtin:render"     # or a .wasm / .wat path, relative to this file
//! args = ["--x", "{x}", "--y", "{y}"]
//! seed = 1
//! canonicalize_nans = false     # true: float results comparable across CPU architectures
//!
//! [inputs]                      # each becomes /in/NAME, read-only
//! "scene.gltf" = "scenes/demo.gltf"
//!
//! [tasks]                       # one task per combination (last key fastest)
//! x = { start = 0, end = 1280, step = 160 }
//! y = { start = 0, end = 720, step = 90 }
//!
//! [limits]
//! fuel = 100_000_000_000
//! memory_mib = 256
//! timeout_secs = 120
//! output_mib = 16
//!
//! [verification]              # the defaults: replicas agree unanimously,
//! mode = "replicate"            # a trusted provider is still spot-checked
//! floor = 0.1                   # at this share of its results
//! replicas = 2                  # executions of a replicated task
//! distinct_networks = false     # true: replicas never share an address range
//!
//! [requirements]                # which offers may take the tasks (all optional)
//! price_per_gfuel_max = 200     # credits per billion fuel, at most
//! memory_mib_min = 1024         # task memory a provider must allow (besides limits.memory_mib)
//! engine = "wasmtime-48.0.8..." # only providers of this engine identity
//! verified_min = 10             # only providers with this many verified results
//! budget = 5000                 # credits the whole job may cost, at most (needs price_per_gfuel_max)
//!
//! [assemble]
//! kind = "tiles-png"
//! file = "tile"
//! output = "render.png"
//! ```
//!
//! `{name}` in args and env values is replaced by the task's value of that
//! parameter, `{task}` by the task's index; `{{` and `}}` are literal braces.
//! Parsing is pure: the caller reads the file and passes its text and name,
//! and every error names the file, the line and the field.

use crate::Credits;
use crate::limits::{self, TaskLimits};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

/// Where a job's module comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleSource {
    /// A workload built into the `plexus` binary (`builtin:render`).
    Builtin(String),
    /// A `.wasm` or `.wat` file, as written in the job file (relative to it).
    Path(String),
}

/// The kinds of assemble step.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssembleKind {
    /// Stitch PXT1 tiles into one PNG.
    TilesPng,
    /// Keep every task's outputs, under `tasks/INDEX/`.
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assemble {
    pub kind: AssembleKind,
    /// The output file each task writes (for tiles-png).
    pub file: String,
    /// The name of the assembled result in the output directory.
    pub output: String,
}

/// One value of a task parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamValue {
    Int(i64),
    Text(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Text(s) => f.write_str(s),
        }
    }
}

#[derive(Clone, Debug)]
enum Sweep {
    Range { start: i64, step: i64, count: u64 },
    List(Vec<ParamValue>),
}

impl Sweep {
    fn len(&self) -> u64 {
        match self {
            Sweep::Range { count, .. } => *count,
            Sweep::List(v) => v.len() as u64,
        }
    }
    fn value(&self, i: u64) -> ParamValue {
        match self {
            // i < count, and start + step·(count-1) was checked to fit.
            Sweep::Range { start, step, .. } => ParamValue::Int(start + step * i as i64),
            Sweep::List(v) => v[i as usize].clone(),
        }
    }
}

/// A validated job. Tasks are produced on demand by index, so a job of a
/// million tasks costs no memory until its tasks run.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub module: ModuleSource,
    pub entry: Option<String>,
    pub seed: u64,
    /// Canonicalise NaNs so results can be compared across CPU architectures.
    pub canonicalize_nans: bool,
    /// Input name → path as written (relative to the job file).
    pub inputs: BTreeMap<String, String>,
    pub limits: TaskLimits,
    pub assemble: Assemble,
    pub verification: Verification,
    pub requirements: Requirements,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    params: Vec<(String, Sweep)>,
    task_count: u64,
}

/// How the requester checks a job's results (DESIGN.md, "Verification policy").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verification {
    /// `false` (`mode = "none"`): every result accepted as it comes; for
    /// one's own machines and for benchmarks of dispatch alone.
    pub enabled: bool,
    /// Lowest share of a trusted provider's results still replicated.
    pub floor: f64,
    /// Executions of a replicated task, each on a different provider.
    pub replicas: u8,
    /// Replicas of one task never go to providers in the same address range
    /// (IPv4 /24, IPv6 /48).
    pub distinct_networks: bool,
}

impl Default for Verification {
    fn default() -> Self {
        Verification {
            enabled: true,
            floor: 0.1,
            replicas: 2,
            distinct_networks: false,
        }
    }
}

/// What a provider's offer must meet to take a job's tasks (the job file's
/// `[requirements]`; the market matches offers against it and counts, per
/// reason, the offers that fall short). Every field is optional: a job
/// without the table takes any offer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// The highest price, in credits per billion fuel.
    pub price_per_gfuel_max: Option<u64>,
    /// The task memory a provider must allow at least; a task's own memory
    /// limit (`limits.memory_mib`) must fit in any case.
    pub memory_bytes_min: Option<u64>,
    /// Only providers of exactly this engine identity.
    pub engine: Option<String>,
    /// Only providers with at least this many results verified by this
    /// requester.
    pub verified_min: Option<u64>,
    /// The most the whole job may cost, in credits: no task is sent whose
    /// worst case (its fuel limit at its provider's price) would take what
    /// the job has committed past it. Needs `price_per_gfuel_max`, so that
    /// what settled tasks cost is bounded after a restart too.
    pub budget: Option<Credits>,
}

/// One task of a job, with its arguments filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpandedTask {
    pub index: u64,
    pub params: Vec<(String, ParamValue)>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Seeds the guest's random source; derived from the job seed and index.
    pub seed: u64,
}

impl Job {
    /// Parses and validates a job file. `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Job, JobError> {
        let ctx = Ctx { file, text };
        let raw: RawJob = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        ctx.validate(raw)
    }

    pub fn task_count(&self) -> u64 {
        self.task_count
    }

    /// The task at `index` (< `task_count()`).
    pub fn task(&self, index: u64) -> ExpandedTask {
        assert!(index < self.task_count, "task index {index} out of range");
        // Mixed-radix decomposition, the last parameter varying fastest.
        let mut rest = index;
        let mut params = vec![(String::new(), ParamValue::Int(0)); self.params.len()];
        for (slot, (name, sweep)) in params.iter_mut().zip(&self.params).rev() {
            let n = sweep.len();
            *slot = (name.clone(), sweep.value(rest % n));
            rest /= n;
        }
        let lookup = |key: &str| -> Option<String> {
            if key == "task" {
                return Some(index.to_string());
            }
            params
                .iter()
                .find(|(n, _)| n == key)
                .map(|(_, v)| v.to_string())
        };
        let fill = |t: &str| template(t, &lookup).unwrap_or_else(|e| e);
        ExpandedTask {
            index,
            args: self.args.iter().map(|a| fill(a)).collect(),
            env: self.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
            seed: task_seed(self.seed, index),
            params,
        }
    }
}

/// The seed of a task's random source: BLAKE3 of the job seed and task index,
/// so tasks draw unrelated streams and reruns draw the same ones.
pub fn task_seed(job_seed: u64, index: u64) -> u64 {
    let mut hasher = blake3::Hasher::new_derive_key("plexus task seed v1");
    hasher.update(&job_seed.to_le_bytes());
    hasher.update(&index.to_le_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Fills `{name}` placeholders. Returns Err(name) of an unknown placeholder.
fn template(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut key = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(k) => key.push(k),
                        None => return Err(format!("{{{key}")),
                    }
                }
                out.push_str(&lookup(&key).ok_or(key)?);
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    module: Spanned<String>,
    entry: Option<Spanned<String>>,
    args: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    canonicalize_nans: bool,
    #[serde(default)]
    inputs: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    tasks: BTreeMap<Spanned<String>, Spanned<RawSweep>>,
    #[serde(default)]
    limits: RawLimits,
    assemble: Option<RawAssemble>,
    verification: Option<RawVerification>,
    #[serde(default)]
    requirements: RawRequirements,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRequirements {
    price_per_gfuel_max: Option<u64>,
    memory_mib_min: Option<Spanned<u64>>,
    engine: Option<Spanned<String>>,
    verified_min: Option<u64>,
    budget: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerification {
    mode: Option<Spanned<String>>,
    floor: Option<Spanned<f64>>,
    replicas: Option<Spanned<u64>>,
    #[serde(default)]
    distinct_networks: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSweep {
    Range {
        start: i64,
        end: i64,
        step: Option<i64>,
    },
    List(Vec<RawValue>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Int(i64),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<Spanned<u64>>,
    #[serde(default)]
    unmetered: bool,
    memory_mib: Option<Spanned<u64>>,
    timeout_secs: Option<Spanned<u64>>,
    output_mib: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssemble {
    kind: Spanned<AssembleKind>,
    file: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> JobError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        JobError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> JobError {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => self.at(span, message),
            None => JobError::File {
                file: self.file.to_owned(),
                message,
            },
        }
    }

    fn validate(&self, raw: RawJob) -> Result<Job, JobError> {
        let name = raw.name.get_ref().trim().to_owned();
        if name.is_empty() || name.len() > limits::NAME_BYTES_MAX {
            return Err(self.at(
                raw.name.span(),
                format!("`name` must be 1 to {} bytes", limits::NAME_BYTES_MAX),
            ));
        }
        let module = match raw.module.get_ref().strip_prefix("builtin:") {
            Some(b) => ModuleSource::Builtin(b.to_owned()),
            None if raw.module.get_ref().is_empty() => {
                return Err(self.at(
                    raw.module.span(),
                    "`module` is empty: give a .wasm/.wat path or builtin:NAME",
                ));
            }
            None => ModuleSource::Path(raw.module.get_ref().clone()),
        };

        let mut params = Vec::new();
        let mut task_count: u128 = 1;
        for (key, sweep) in &raw.tasks {
            let span = key.span();
            let key_name = key.get_ref();
            if !is_identifier(key_name) || key_name == "task" {
                return Err(self.at(span, format!("`tasks.{key_name}`: parameter names are letters, digits and _ (and not `task`)")));
            }
            let field = format!("tasks.{key_name}");
            let sweep = match sweep.get_ref() {
                RawSweep::Range { start, end, step } => {
                    let step = step.unwrap_or(1);
                    if step <= 0 {
                        return Err(self.at(
                            sweep.span(),
                            format!("`{field}`: step must be positive, not {step}"),
                        ));
                    }
                    if end <= start {
                        return Err(self.at(
                            sweep.span(),
                            format!("`{field}`: the range {start}..{end} is empty"),
                        ));
                    }
                    let count = ((*end as i128 - *start as i128) + step as i128 - 1) / step as i128;
                    Sweep::Range {
                        start: *start,
                        step,
                        count: count as u64,
                    }
                }
                RawSweep::List(values) => {
                    if values.is_empty() || values.len() > limits::SWEEP_VALUES_MAX {
                        return Err(self.at(
                            sweep.span(),
                            format!("`{field}`: give 1 to {} values", limits::SWEEP_VALUES_MAX),
                        ));
                    }
                    Sweep::List(
                        values
                            .iter()
                            .map(|v| match v {
                                RawValue::Int(i) => ParamValue::Int(*i),
                                RawValue::Text(s) => ParamValue::Text(s.clone()),
                            })
                            .collect(),
                    )
                }
            };
            task_count = task_count.saturating_mul(sweep.len() as u128);
            if task_count > limits::TASKS_PER_JOB_MAX as u128 {
                return Err(self.at(
                    span,
                    format!(
                        "`tasks`: the sweep expands to more than the maximum of {} tasks per job",
                        limits::TASKS_PER_JOB_MAX
                    ),
                ));
            }
            params.push((key_name.clone(), sweep));
        }

        let args: Vec<Spanned<String>> = match raw.args {
            Some(a) if a.get_ref().len() > limits::ARGS_PER_TASK_MAX => {
                return Err(self.at(
                    a.span(),
                    format!("`args`: more than {} arguments", limits::ARGS_PER_TASK_MAX),
                ));
            }
            Some(a) => a.into_inner(),
            None => Vec::new(),
        };
        let known = |k: &str| k == "task" || params.iter().any(|(n, _)| n == k);
        let check_template = |value: &Spanned<String>, field: &str| -> Result<(), JobError> {
            if value.get_ref().len() > limits::ARG_BYTES_MAX {
                return Err(self.at(
                    value.span(),
                    format!("`{field}` is longer than {} bytes", limits::ARG_BYTES_MAX),
                ));
            }
            template(value.get_ref(), &|k| known(k).then(String::new))
                .map(|_| ())
                .map_err(|key| {
                    self.at(
                        value.span(),
                        format!(
                            "`{field}`: unknown placeholder {{{key}}} (parameters: {})",
                            param_names(&params)
                        ),
                    )
                })
        };
        for arg in &args {
            check_template(arg, "args")?;
        }
        if raw.env.len() > limits::ENV_VARS_MAX {
            return Err(self.at(
                0..0,
                format!("`env`: more than {} variables", limits::ENV_VARS_MAX),
            ));
        }
        for (k, v) in &raw.env {
            if k.get_ref().is_empty() || k.get_ref().contains('=') {
                return Err(self.at(
                    k.span(),
                    format!("`env`: {:?} is not a variable name", k.get_ref()),
                ));
            }
            check_template(v, &format!("env.{}", k.get_ref()))?;
        }

        if raw.inputs.len() > limits::INPUTS_PER_JOB_MAX {
            return Err(self.at(
                0..0,
                format!("`inputs`: more than {} inputs", limits::INPUTS_PER_JOB_MAX),
            ));
        }
        for (k, v) in &raw.inputs {
            if !is_file_name(k.get_ref()) {
                return Err(self.at(
                    k.span(),
                    format!("`inputs`: {:?} is not a plain file name", k.get_ref()),
                ));
            }
            if v.get_ref().is_empty() {
                return Err(self.at(v.span(), format!("`inputs.{}`: empty path", k.get_ref())));
            }
        }

        let l = &raw.limits;
        let mut task_limits = TaskLimits::default();
        if let Some(fuel) = &l.fuel {
            if *fuel.get_ref() == 0 {
                return Err(self.at(fuel.span(), "`limits.fuel` must be positive"));
            }
            task_limits.fuel = Some(*fuel.get_ref());
        }
        if l.unmetered {
            task_limits.fuel = None;
        }
        if let Some(m) = &l.memory_mib {
            let bytes = m.get_ref().saturating_mul(limits::MIB);
            if bytes == 0 || bytes > limits::TASK_MEMORY_BYTES_MAX {
                return Err(self.at(
                    m.span(),
                    format!(
                        "`limits.memory_mib` must be 1 to {}",
                        limits::TASK_MEMORY_BYTES_MAX / limits::MIB
                    ),
                ));
            }
            task_limits.memory_bytes_max = bytes;
        }
        if let Some(t) = &l.timeout_secs {
            if *t.get_ref() == 0 || *t.get_ref() > 86_400 {
                return Err(self.at(t.span(), "`limits.timeout_secs` must be 1 to 86400"));
            }
            task_limits.deadline_ms = t.get_ref() * 1000;
        }
        if let Some(o) = &l.output_mib {
            if *o.get_ref() == 0 || *o.get_ref() > 4096 {
                return Err(self.at(o.span(), "`limits.output_mib` must be 1 to 4096"));
            }
            task_limits.output_bytes_max = o.get_ref() * limits::MIB;
        }

        let assemble = match raw.assemble {
            None => Assemble {
                kind: AssembleKind::None,
                file: String::new(),
                output: String::new(),
            },
            Some(a) => {
                let kind = a.kind.get_ref().clone();
                let file = a
                    .file
                    .as_ref()
                    .map(|f| f.get_ref().clone())
                    .unwrap_or_else(|| "tile".into());
                let output = a
                    .output
                    .as_ref()
                    .map(|f| f.get_ref().clone())
                    .unwrap_or_else(|| format!("{name}.png"));
                if kind == AssembleKind::TilesPng {
                    if let Some(f) = &a.file
                        && !is_file_name(f.get_ref())
                    {
                        return Err(self.at(f.span(), "`assemble.file` must be a plain file name"));
                    }
                    if !is_file_name(&output) {
                        let span = a.output.as_ref().map_or(a.kind.span(), |o| o.span());
                        return Err(self.at(span, "`assemble.output` must be a plain file name"));
                    }
                }
                Assemble { kind, file, output }
            }
        };

        let mut verification = Verification::default();
        if let Some(v) = raw.verification {
            if let Some(mode) = &v.mode {
                verification.enabled = match mode.get_ref().as_str() {
                    "replicate" => true,
                    "none" => false,
                    other => {
                        return Err(self.at(
                            mode.span(),
                            format!(
                                "`verification.mode` is \"replicate\" or \"none\", not {other:?}"
                            ),
                        ));
                    }
                };
            }
            if let Some(floor) = &v.floor {
                if !(0.0..=1.0).contains(floor.get_ref()) {
                    return Err(self.at(
                        floor.span(),
                        "`verification.floor` is a share between 0 and 1",
                    ));
                }
                verification.floor = *floor.get_ref();
            }
            if let Some(replicas) = &v.replicas {
                let n = *replicas.get_ref();
                if !(2..=u64::from(limits::REPLICAS_MAX)).contains(&n) {
                    return Err(self.at(
                        replicas.span(),
                        format!(
                            "`verification.replicas` is between 2 and {} (REPLICAS_MAX)",
                            limits::REPLICAS_MAX
                        ),
                    ));
                }
                verification.replicas = n as u8;
            }
            verification.distinct_networks = v.distinct_networks;
        }

        let r = raw.requirements;
        let memory_bytes_min = match r.memory_mib_min {
            Some(mib) => Some(mib.get_ref().checked_mul(limits::MIB).ok_or_else(|| {
                self.at(mib.span(), "`requirements.memory_mib_min` is too large")
            })?),
            None => None,
        };
        if let Some(engine) = &r.engine
            && engine.get_ref().trim().is_empty()
        {
            return Err(self.at(engine.span(), "`requirements.engine` is empty"));
        }
        if let Some(budget) = &r.budget {
            if *budget.get_ref() == 0 {
                return Err(self.at(
                    budget.span(),
                    "`requirements.budget` must be at least 1 credit",
                ));
            }
            if task_limits.fuel.is_none() {
                return Err(self.at(
                    budget.span(),
                    "`requirements.budget` needs metered tasks (`limits.unmetered` is on)",
                ));
            }
            if r.price_per_gfuel_max.is_none() {
                return Err(self.at(
                    budget.span(),
                    "`requirements.budget` needs `requirements.price_per_gfuel_max` (the escrow's price)",
                ));
            }
        }
        let requirements = Requirements {
            price_per_gfuel_max: r.price_per_gfuel_max,
            memory_bytes_min,
            engine: r.engine.map(Spanned::into_inner),
            verified_min: r.verified_min,
            budget: r.budget.map(|b| Credits(b.into_inner())),
        };

        Ok(Job {
            name,
            module,
            entry: raw.entry.map(|e| e.into_inner()),
            seed: raw.seed,
            canonicalize_nans: raw.canonicalize_nans,
            inputs: raw
                .inputs
                .into_iter()
                .map(|(k, v)| (k.into_inner(), v.into_inner()))
                .collect(),
            limits: task_limits,
            assemble,
            verification,
            requirements,
            args: args.into_iter().map(Spanned::into_inner).collect(),
            env: raw
                .env
                .into_iter()
                .map(|(k, v)| (k.into_inner(), v.into_inner()))
                .collect(),
            params,
            task_count: task_count as u64,
        })
    }
}

fn param_names(params: &[(String, Sweep)]) -> String {
    let mut names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    names.push("task");
    names.join(", ")
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A name that stays inside its directory: no separators, not `.` or `..`.
pub fn is_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= limits::NAME_BYTES_MAX
        && s != "."
        && s != ".."
        && !s.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests;
