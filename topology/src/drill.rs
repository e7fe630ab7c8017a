//! Drills: scripted failure scenarios kept in a topology file's `[drill]`
//! section, which `meridian drill run FILE` plays against the deployment the
//! same file describes.
//!
//! A drill runs load (built-in producers and consumers, plus official
//! RocketMQ clients run as commands) through one region's router, performs
//! its steps one after another (kill, stop, start or restart a process;
//! partition, heal or degrade a link between two regions), lets the load run
//! on for `tail_ms`, waits up to `drain_timeout_ms` for consumers, then checks
//! the invariants in [`DrillExpect`]. This crate only describes and validates
//! the scenario; running it is the cli's business.
//!
//! # Why steps are parsed through a flat form
//!
//! A step is written flat (`action = "partition"` next to `link = […]`) but
//! modelled as the typed [`StepAction`], so that the runner never meets a
//! partition without a link. Deserialization goes through the private
//! `RawStep` (`deny_unknown_fields`, every action field optional) and
//! converts it with [`DrillStep::try_from`]; serialization converts back. The
//! conversion refuses a field the action does not use, a missing field the
//! action needs, and a `degrade` that changes nothing. Serde can only report
//! such an error against the whole step, so the loader converts the failed
//! step again (`step_shape_error`) to name the exact key
//! (`drill.steps[1].role`); other deserializers see the same text in one
//! message.
//!
//! Values (that regions and the topic exist, ranges, names, placeholders) are
//! checked later by [`Topology::validate`](crate::Topology::validate), in
//! `validate_drill.rs`. Not checked anywhere: whether the steps make sense
//! in sequence (starting a process that runs, healing a link that is not
//! partitioned); the runner decides what those mean.

use crate::model::{saturating_option_u64, saturating_u64};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The placeholders a client's command may contain, substituted by the runner.
pub const CLIENT_PLACEHOLDERS: [&str; 3] = ["{endpoint}", "{topic}", "{group}"];

/// A scripted failure scenario (the `[drill]` section of a topology file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drill {
    /// What the drill shows, for people reading its report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Seeds link loss and jitter and the load's message bodies; the runner's
    /// `--seed` overrides it, and the runner picks one when neither is given.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "saturating_option_u64"
    )]
    pub seed: Option<u64>,
    /// How long the load keeps running after the last step, in milliseconds
    /// (default 3000).
    #[serde(default = "default_tail_ms", serialize_with = "saturating_u64")]
    pub tail_ms: u64,
    /// After the load stops, how long consumers may take to receive every
    /// acknowledged message, in milliseconds (default 30000).
    #[serde(
        default = "default_drain_timeout_ms",
        serialize_with = "saturating_u64"
    )]
    pub drain_timeout_ms: u64,
    /// The load the drill runs while it performs its steps.
    pub load: DrillLoad,
    /// What happens, in order (at least one step).
    #[serde(default)]
    pub steps: Vec<DrillStep>,
    /// The invariants checked at the end; the drill fails when one breaks.
    #[serde(default)]
    pub expect: DrillExpect,
}

/// The load a drill runs (`[drill.load]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillLoad {
    /// The region whose router every load client uses as its endpoint.
    pub region: String,
    /// The topic the load sends to and consumes from.
    pub topic: String,
    /// The consumer group of every consumer (default `drill`; RocketMQ's
    /// group name rule `[%|a-zA-Z0-9_-]{1,255}`).
    #[serde(default = "default_group")]
    pub group: String,
    /// Built-in producers (0..=64; default 1).
    #[serde(default = "default_client_count")]
    pub producers: u32,
    /// Built-in consumers (0..=64; default 1).
    #[serde(default = "default_client_count")]
    pub consumers: u32,
    /// Each built-in producer sends one message per interval, in
    /// milliseconds (1..=60000; default 100).
    #[serde(default = "default_send_interval_ms")]
    pub send_interval_ms: u32,
    /// Size of each built-in producer's message bodies, in bytes
    /// (1..=4194304; default 256).
    #[serde(default = "default_body_bytes")]
    pub body_bytes: u32,
    /// How long the load runs before the first step, in milliseconds
    /// (default 2000).
    #[serde(default = "default_warmup_ms", serialize_with = "saturating_u64")]
    pub warmup_ms: u64,
    /// Official RocketMQ clients run as commands besides the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<DrillClient>,
}

/// An official RocketMQ client run as a command (`[[drill.load.clients]]`);
/// it prints one JSON event per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillClient {
    /// Unique among the drill's clients, `[A-Za-z0-9_-]{1,64}`; names the
    /// client in the report.
    pub name: String,
    /// Whether the client produces or consumes.
    pub kind: ClientKind,
    /// The program and its arguments. `{endpoint}`, `{topic}` and `{group}`
    /// stand for the router's endpoint, the load's topic and its group (see
    /// [`DrillClient::command_for`]); any other `{name}` is refused.
    pub command: Vec<String>,
}

impl DrillClient {
    /// The command with its placeholders replaced. Each placeholder is
    /// replaced once, left to right, so a value containing `{topic}` is not
    /// replaced again; braces that do not form `{word}` (JSON, `{}`) are kept
    /// as written.
    pub fn command_for(&self, endpoint: &str, topic: &str, group: &str) -> Vec<String> {
        self.command
            .iter()
            .map(|argument| {
                let mut out = String::with_capacity(argument.len());
                let mut rest = argument.as_str();
                while let Some((before, name, after)) = next_placeholder(rest) {
                    out.push_str(before);
                    match name {
                        "endpoint" => out.push_str(endpoint),
                        "topic" => out.push_str(topic),
                        "group" => out.push_str(group),
                        other => {
                            out.push('{');
                            out.push_str(other);
                            out.push('}');
                        }
                    }
                    rest = after;
                }
                out.push_str(rest);
                out
            })
            .collect()
    }
}

/// The first `{word}` in `text` (word: one or more ASCII letters, digits and
/// `_`), as the text before it, the word and the text after it. Other braces,
/// such as JSON's or an empty `{}`, are plain text.
pub(crate) fn next_placeholder(text: &str) -> Option<(&str, &str, &str)> {
    let mut search_from = 0;
    while let Some(open) = text[search_from..].find('{').map(|at| at + search_from) {
        let after_open = &text[open + 1..];
        let word_length = after_open
            .bytes()
            .take_while(|byte| byte.is_ascii_alphanumeric() || *byte == b'_')
            .count();
        if word_length > 0 && after_open.as_bytes().get(word_length) == Some(&b'}') {
            let word = &after_open[..word_length];
            return Some((&text[..open], word, &after_open[word_length + 1..]));
        }
        search_from = open + 1;
    }
    None
}

/// Whether a drill client produces or consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Producer,
    Consumer,
}

impl ClientKind {
    /// The name used in topology files (`producer`, `consumer`).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Producer => "producer",
            ClientKind::Consumer => "consumer",
        }
    }
}

/// One step of a drill (`[[drill.steps]]`): wait, then act.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawStep", into = "RawStep")]
pub struct DrillStep {
    /// How long to wait after the previous step finished (the first step:
    /// after the warm-up), in milliseconds (default 0).
    pub after_ms: u64,
    /// Then also wait until this holds, before acting.
    pub when: Option<StepCondition>,
    /// How long `when` may take to hold before the drill fails, in
    /// milliseconds (default 30000).
    pub within_ms: u64,
    /// What the step does.
    pub action: StepAction,
}

/// What a step waits for before acting (see [`DrillStep::when`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepCondition {
    /// Every load client has succeeded (sent, or received) since the last fault.
    Recovered,
    /// No replication link has a backlog.
    CaughtUp,
}

impl StepCondition {
    /// The name used in topology files (`recovered`, `caught-up`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepCondition::Recovered => "recovered",
            StepCondition::CaughtUp => "caught-up",
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    /// Signals or starts one process of a region.
    Process {
        signal: ProcessAction,
        region: String,
        role: ProcessRole,
    },
    /// Cuts the link between two regions (they need not share a declared
    /// link): both directions, or with `one_way` only what `link[0]` sends
    /// towards `link[1]`.
    Partition { link: [String; 2], one_way: bool },
    /// Restores a partitioned link, both directions.
    Heal { link: [String; 2] },
    /// Changes the emulated properties of a link, both directions; the
    /// properties not given keep their values.
    Degrade {
        link: [String; 2],
        change: LinkChange,
    },
}

impl StepAction {
    /// The `action` value of the step in a topology file (`kill`, …, `degrade`).
    pub fn name(&self) -> &'static str {
        match self {
            StepAction::Process { signal, .. } => signal.as_str(),
            StepAction::Partition { .. } => "partition",
            StepAction::Heal { .. } => "heal",
            StepAction::Degrade { .. } => "degrade",
        }
    }
}

/// What a process action does. A killed or stopped process stays down until
/// a `start` or `restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessAction {
    /// SIGKILL.
    Kill,
    /// SIGTERM: a graceful shutdown.
    Stop,
    /// Starts a process that is down.
    Start,
    /// Stops the process gracefully, then starts it again.
    Restart,
}

impl ProcessAction {
    /// The `action` value in topology files (`kill`, `stop`, `start`, `restart`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessAction::Kill => "kill",
            ProcessAction::Stop => "stop",
            ProcessAction::Start => "start",
            ProcessAction::Restart => "restart",
        }
    }
}

/// Which of a region's processes a process action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessRole {
    Node,
    Replicator,
    Router,
}

impl ProcessRole {
    /// The name used in topology files (`node`, `replicator`, `router`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessRole::Node => "node",
            ProcessRole::Replicator => "replicator",
            ProcessRole::Router => "router",
        }
    }
}

/// New one-way values for a degraded link; `None` keeps the current value.
/// At least one is set. Units and ranges as in [`Link`](crate::Link).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkChange {
    pub latency_ms: Option<u32>,
    pub jitter_ms: Option<u32>,
    pub loss_percent: Option<f64>,
    pub bandwidth_kbps: Option<u64>,
}

impl LinkChange {
    fn is_empty(&self) -> bool {
        self.latency_ms.is_none()
            && self.jitter_ms.is_none()
            && self.loss_percent.is_none()
            && self.bandwidth_kbps.is_none()
    }
}

/// The invariants a drill checks at the end (`[drill.expect]`); a broken
/// one makes the drill fail. `None` means "report only".
///
/// A TOML file cannot say `None` for `max_lost`: left out, it is `Some(0)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillExpect {
    /// Most acknowledged sends that may never reach the group (default 0).
    #[serde(
        default = "default_max_lost",
        skip_serializing_if = "Option::is_none",
        serialize_with = "saturating_option_u64"
    )]
    pub max_lost: Option<u64>,
    /// Most deliveries of a message after the group acknowledged it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "saturating_option_u64"
    )]
    pub max_duplicates_after_ack: Option<u64>,
    /// Longest time, per client and fault, from the fault to the client's
    /// first success, in milliseconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "saturating_option_u64"
    )]
    pub max_recovery_ms: Option<u64>,
}

impl Default for DrillExpect {
    fn default() -> Self {
        DrillExpect {
            max_lost: default_max_lost(),
            max_duplicates_after_ack: None,
            max_recovery_ms: None,
        }
    }
}

fn default_tail_ms() -> u64 {
    3_000
}

fn default_drain_timeout_ms() -> u64 {
    30_000
}

fn default_group() -> String {
    "drill".to_owned()
}

fn default_client_count() -> u32 {
    1
}

fn default_send_interval_ms() -> u32 {
    100
}

fn default_body_bytes() -> u32 {
    256
}

fn default_warmup_ms() -> u64 {
    2_000
}

fn default_within_ms() -> u64 {
    30_000
}

fn default_max_lost() -> Option<u64> {
    Some(0)
}

/// A step as written in the file: the action and every field any action
/// might use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    #[serde(default, serialize_with = "saturating_u64")]
    after_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    when: Option<StepCondition>,
    #[serde(default = "default_within_ms", serialize_with = "saturating_u64")]
    within_ms: u64,
    action: RawAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<ProcessRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<[String; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    one_way: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jitter_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_percent: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "saturating_option_u64"
    )]
    bandwidth_kbps: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAction {
    Kill,
    Stop,
    Start,
    Restart,
    Partition,
    Heal,
    Degrade,
}

impl RawAction {
    fn as_str(self) -> &'static str {
        match self {
            RawAction::Kill => "kill",
            RawAction::Stop => "stop",
            RawAction::Start => "start",
            RawAction::Restart => "restart",
            RawAction::Partition => "partition",
            RawAction::Heal => "heal",
            RawAction::Degrade => "degrade",
        }
    }
}

/// Why a flat step does not fit its action: the field (`None` for the step
/// as a whole), its value as written in TOML when it has one, and what is
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepShapeError {
    pub(crate) field: Option<&'static str>,
    pub(crate) value: Option<String>,
    pub(crate) message: String,
}

impl fmt::Display for StepShapeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(field) = self.field {
            write!(formatter, "{field}")?;
            if let Some(value) = &self.value {
                write!(formatter, " = {value}")?;
            }
            write!(formatter, ": ")?;
        }
        write!(formatter, "{}", self.message)
    }
}

/// The step fields that belong to a particular action, in file order.
const ACTION_FIELDS: [&str; 8] = [
    "region",
    "role",
    "link",
    "one_way",
    "latency_ms",
    "jitter_ms",
    "loss_percent",
    "bandwidth_kbps",
];
/// The fields a degrade may change.
const CHANGE_FIELDS: [&str; 4] = ["latency_ms", "jitter_ms", "loss_percent", "bandwidth_kbps"];

impl RawStep {
    /// The action fields that are set, with their values as written in TOML.
    fn set_fields(&self) -> Vec<(&'static str, String)> {
        let quoted = crate::error::quoted;
        let values = [
            self.region.as_deref().map(quoted),
            self.role.map(|role| quoted(role.as_str())),
            self.link.as_ref().map(pair),
            self.one_way.map(|one_way| one_way.to_string()),
            self.latency_ms.map(|value| value.to_string()),
            self.jitter_ms.map(|value| value.to_string()),
            self.loss_percent.map(crate::validate::float_value),
            self.bandwidth_kbps.map(|value| value.to_string()),
        ];
        ACTION_FIELDS
            .into_iter()
            .zip(values)
            .filter_map(|(field, value)| Some((field, value?)))
            .collect()
    }
}

impl TryFrom<RawStep> for DrillStep {
    type Error = StepShapeError;

    /// Checks, in this order: no field the action does not use (in file
    /// order), every field it needs, and for `degrade` at least one change.
    fn try_from(raw: RawStep) -> Result<Self, Self::Error> {
        let action_name = raw.action.as_str();
        let used: &[&str] = match raw.action {
            RawAction::Kill | RawAction::Stop | RawAction::Start | RawAction::Restart => {
                &["region", "role"]
            }
            RawAction::Partition => &["link", "one_way"],
            RawAction::Heal => &["link"],
            RawAction::Degrade => &[
                "link",
                "latency_ms",
                "jitter_ms",
                "loss_percent",
                "bandwidth_kbps",
            ],
        };
        if let Some((field, value)) = raw
            .set_fields()
            .into_iter()
            .find(|(field, _)| !used.contains(field))
        {
            return Err(StepShapeError {
                field: Some(field),
                value: Some(value),
                message: format!(
                    "not used by action {}; it uses {}",
                    crate::error::quoted(action_name),
                    used.join(", ")
                ),
            });
        }
        let missing = |field: &'static str| StepShapeError {
            field: Some(field),
            value: None,
            message: format!(
                "required key is missing; action {} needs it",
                crate::error::quoted(action_name)
            ),
        };
        let signal = match raw.action {
            RawAction::Kill => Some(ProcessAction::Kill),
            RawAction::Stop => Some(ProcessAction::Stop),
            RawAction::Start => Some(ProcessAction::Start),
            RawAction::Restart => Some(ProcessAction::Restart),
            RawAction::Partition | RawAction::Heal | RawAction::Degrade => None,
        };
        let action = if let Some(signal) = signal {
            StepAction::Process {
                signal,
                region: raw.region.ok_or_else(|| missing("region"))?,
                role: raw.role.ok_or_else(|| missing("role"))?,
            }
        } else {
            let link = raw.link.ok_or_else(|| missing("link"))?;
            match raw.action {
                RawAction::Partition => StepAction::Partition {
                    link,
                    one_way: raw.one_way.unwrap_or(false),
                },
                RawAction::Heal => StepAction::Heal { link },
                _ => {
                    let change = LinkChange {
                        latency_ms: raw.latency_ms,
                        jitter_ms: raw.jitter_ms,
                        loss_percent: raw.loss_percent,
                        bandwidth_kbps: raw.bandwidth_kbps,
                    };
                    if change.is_empty() {
                        return Err(StepShapeError {
                            field: None,
                            value: None,
                            message: format!(
                                "action \"degrade\" needs at least one of {}",
                                CHANGE_FIELDS.join(", ")
                            ),
                        });
                    }
                    StepAction::Degrade { link, change }
                }
            }
        };
        Ok(DrillStep {
            after_ms: raw.after_ms,
            when: raw.when,
            within_ms: raw.within_ms,
            action,
        })
    }
}

impl From<DrillStep> for RawStep {
    fn from(step: DrillStep) -> Self {
        let mut raw = RawStep {
            after_ms: step.after_ms,
            when: step.when,
            within_ms: step.within_ms,
            action: RawAction::Heal,
            region: None,
            role: None,
            link: None,
            one_way: None,
            latency_ms: None,
            jitter_ms: None,
            loss_percent: None,
            bandwidth_kbps: None,
        };
        match step.action {
            StepAction::Process {
                signal,
                region,
                role,
            } => {
                raw.action = match signal {
                    ProcessAction::Kill => RawAction::Kill,
                    ProcessAction::Stop => RawAction::Stop,
                    ProcessAction::Start => RawAction::Start,
                    ProcessAction::Restart => RawAction::Restart,
                };
                raw.region = Some(region);
                raw.role = Some(role);
            }
            StepAction::Partition { link, one_way } => {
                raw.action = RawAction::Partition;
                raw.link = Some(link);
                raw.one_way = one_way.then_some(true);
            }
            StepAction::Heal { link } => {
                raw.action = RawAction::Heal;
                raw.link = Some(link);
            }
            StepAction::Degrade { link, change } => {
                raw.action = RawAction::Degrade;
                raw.link = Some(link);
                raw.latency_ms = change.latency_ms;
                raw.jitter_ms = change.jitter_ms;
                raw.loss_percent = change.loss_percent;
                raw.bandwidth_kbps = change.bandwidth_kbps;
            }
        }
        raw
    }
}

/// Why the step deserialized by `step` (anything figment, toml or another
/// format can deserialize a [`RawStep`] from) does not fit its action, if
/// it does not. The loader calls this to name the exact key.
pub(crate) fn step_shape_error<'de, D>(step: D) -> Option<StepShapeError>
where
    D: serde::Deserializer<'de>,
{
    let raw = RawStep::deserialize(step).ok()?;
    DrillStep::try_from(raw).err()
}

/// `["eu-west", "us-east"]`, as in the file.
pub(crate) fn pair(link: &[String; 2]) -> String {
    let [a, b] = link;
    format!("[{}, {}]", crate::error::quoted(a), crate::error::quoted(b))
}

#[cfg(test)]
#[path = "drill_tests.rs"]
pub(crate) mod tests;
