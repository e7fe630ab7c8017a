//! The rules a drill must follow beyond its shape (which deserialization
//! already checked: see the `drill` module).
//!
//! Checked in file order — the drill's own durations and seed, the load,
//! its clients, the steps, the expectations — and the first broken rule is
//! reported.
//!
//! Choices made here:
//! - Every duration (`tail_ms`, `drain_timeout_ms`, `warmup_ms`, a step's
//!   `after_ms` and `within_ms`, `max_recovery_ms`) is at most an hour: a
//!   drill is an interactive test, and a longer value is a typo.
//! - The seed and the expected counts are at most `i64::MAX`, the largest
//!   TOML integer, so that the topology can be written back.
//! - A drill may run no load at all (zero producers, consumers and clients);
//!   its expectations then hold trivially.
//! - Process and link steps must name existing regions, but a partitioned
//!   pair need not have a declared link (traffic between any two regions
//!   can be cut).

use crate::error::{TopologyError, quoted};
use crate::validate::{
    check_bandwidth_kbps, check_jitter_ms, check_latency_ms, check_loss_percent,
};
use crate::{Drill, DrillClient, DrillExpect, DrillLoad, DrillStep, StepAction, Topology};
use std::collections::HashMap;

/// An hour: longer drill durations are typos.
const DRILL_DURATION_MS_MAX: u64 = 3_600_000;
/// Built-in producers, built-in consumers and command clients: each at most this many.
const DRILL_CLIENTS_MAX: usize = 64;
const DRILL_STEPS_MAX: usize = 1_000;
const SEND_INTERVAL_MS_MIN: u32 = 1;
const SEND_INTERVAL_MS_MAX: u32 = 60_000;
const BODY_BYTES_MIN: u32 = 1;
/// RocketMQ's default maximum message size, 4 MiB.
const BODY_BYTES_MAX: u32 = 4 * 1024 * 1024;
/// Consumer groups: RocketMQ's `^[%|a-zA-Z0-9_-]{1,255}$`.
const GROUP_NAME_LENGTH_MAX: usize = 255;
/// Client names: `[A-Za-z0-9_-]{1,64}`.
const CLIENT_NAME_LENGTH_MAX: usize = 64;
/// The largest integer TOML can hold.
const TOML_INTEGER_MAX: u64 = i64::MAX.unsigned_abs();

impl Topology {
    pub(crate) fn check_drill(&self, drill: &Drill) -> Result<(), TopologyError> {
        if let Some(seed) = drill.seed {
            check_toml_integer("drill.seed", seed)?;
        }
        check_duration_ms("drill.tail_ms", drill.tail_ms)?;
        check_duration_ms("drill.drain_timeout_ms", drill.drain_timeout_ms)?;
        self.check_drill_load(&drill.load)?;
        if drill.steps.is_empty() {
            return Err(TopologyError::invalid(
                "drill.steps",
                "[]",
                "a drill needs at least one step ([[drill.steps]])",
            ));
        }
        if drill.steps.len() > DRILL_STEPS_MAX {
            return Err(TopologyError::invalid(
                "drill.steps",
                format!("{} steps", drill.steps.len()),
                format!("a drill has at most {DRILL_STEPS_MAX} steps"),
            ));
        }
        for (index, step) in drill.steps.iter().enumerate() {
            self.check_drill_step(index, step)?;
        }
        check_expect(&drill.expect)
    }

    fn check_drill_load(&self, load: &DrillLoad) -> Result<(), TopologyError> {
        if !self.regions.contains_key(&load.region) {
            return Err(TopologyError::unknown_region_at(
                "drill.load.region",
                &load.region,
                self.known_regions(),
            ));
        }
        if !self.topics.contains_key(&load.topic) {
            let topics: Vec<&str> = self.topics.keys().map(String::as_str).collect();
            let topics = if topics.is_empty() {
                "none".to_owned()
            } else {
                topics.join(", ")
            };
            return Err(TopologyError::invalid(
                "drill.load.topic",
                quoted(&load.topic),
                format!("no such topic; topics: {topics}"),
            ));
        }
        check_group_name(&load.group)?;
        for (field, count) in [("producers", load.producers), ("consumers", load.consumers)] {
            if !usize::try_from(count).is_ok_and(|count| count <= DRILL_CLIENTS_MAX) {
                return Err(TopologyError::invalid(
                    format!("drill.load.{field}"),
                    count.to_string(),
                    format!("must be between 0 and {DRILL_CLIENTS_MAX}"),
                ));
            }
        }
        if !(SEND_INTERVAL_MS_MIN..=SEND_INTERVAL_MS_MAX).contains(&load.send_interval_ms) {
            return Err(TopologyError::invalid(
                "drill.load.send_interval_ms",
                load.send_interval_ms.to_string(),
                format!("must be between {SEND_INTERVAL_MS_MIN} and {SEND_INTERVAL_MS_MAX}"),
            ));
        }
        if !(BODY_BYTES_MIN..=BODY_BYTES_MAX).contains(&load.body_bytes) {
            return Err(TopologyError::invalid(
                "drill.load.body_bytes",
                load.body_bytes.to_string(),
                format!("must be between {BODY_BYTES_MIN} and {BODY_BYTES_MAX} (4 MiB)"),
            ));
        }
        check_duration_ms("drill.load.warmup_ms", load.warmup_ms)?;
        if load.clients.len() > DRILL_CLIENTS_MAX {
            return Err(TopologyError::invalid(
                "drill.load.clients",
                format!("{} clients", load.clients.len()),
                format!("at most {DRILL_CLIENTS_MAX} clients"),
            ));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (index, client) in load.clients.iter().enumerate() {
            let key = format!("drill.load.clients[{index}]");
            check_client(&key, client)?;
            if let Some(first) = names.get(client.name.as_str()) {
                return Err(TopologyError::invalid(
                    format!("{key}.name"),
                    quoted(&client.name),
                    format!(
                        "already used by drill.load.clients[{first}]; client names must be unique"
                    ),
                ));
            }
            names.insert(&client.name, index);
        }
        Ok(())
    }

    fn check_drill_step(&self, index: usize, step: &DrillStep) -> Result<(), TopologyError> {
        let key = format!("drill.steps[{index}]");
        check_duration_ms(&format!("{key}.after_ms"), step.after_ms)?;
        check_duration_ms(&format!("{key}.within_ms"), step.within_ms)?;
        match &step.action {
            StepAction::Process { region, .. } => {
                if !self.regions.contains_key(region) {
                    return Err(TopologyError::unknown_region_at(
                        format!("{key}.region"),
                        region,
                        self.known_regions(),
                    ));
                }
            }
            StepAction::Partition { link, .. } | StepAction::Heal { link } => {
                self.check_step_link(&key, link)?;
            }
            StepAction::Degrade { link, change } => {
                self.check_step_link(&key, link)?;
                if let Some(latency_ms) = change.latency_ms {
                    check_latency_ms(&format!("{key}.latency_ms"), latency_ms)?;
                }
                if let Some(jitter_ms) = change.jitter_ms {
                    check_jitter_ms(&format!("{key}.jitter_ms"), jitter_ms)?;
                }
                if let Some(loss_percent) = change.loss_percent {
                    check_loss_percent(&format!("{key}.loss_percent"), loss_percent)?;
                }
                if let Some(bandwidth_kbps) = change.bandwidth_kbps {
                    check_bandwidth_kbps(&format!("{key}.bandwidth_kbps"), bandwidth_kbps)?;
                }
            }
        }
        Ok(())
    }

    fn check_step_link(&self, step_key: &str, link: &[String; 2]) -> Result<(), TopologyError> {
        for (end, name) in link.iter().enumerate() {
            if !self.regions.contains_key(name) {
                return Err(TopologyError::unknown_region_at(
                    format!("{step_key}.link[{end}]"),
                    name,
                    self.known_regions(),
                ));
            }
        }
        let [a, b] = link;
        if a == b {
            return Err(TopologyError::invalid(
                format!("{step_key}.link"),
                crate::drill::pair(link),
                "must name two different regions",
            ));
        }
        Ok(())
    }
}

fn check_duration_ms(key: &str, duration_ms: u64) -> Result<(), TopologyError> {
    if duration_ms > DRILL_DURATION_MS_MAX {
        return Err(TopologyError::invalid(
            key,
            duration_ms.to_string(),
            format!("must be at most {DRILL_DURATION_MS_MAX} (one hour)"),
        ));
    }
    Ok(())
}

fn check_toml_integer(key: &str, value: u64) -> Result<(), TopologyError> {
    if value > TOML_INTEGER_MAX {
        return Err(TopologyError::invalid(
            key,
            value.to_string(),
            format!("must be at most {TOML_INTEGER_MAX} (the largest TOML integer)"),
        ));
    }
    Ok(())
}

fn check_group_name(group: &str) -> Result<(), TopologyError> {
    let valid_chars = group
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'%' | b'|' | b'_' | b'-'));
    if group.is_empty() || group.len() > GROUP_NAME_LENGTH_MAX || !valid_chars {
        return Err(TopologyError::invalid(
            "drill.load.group",
            quoted(group),
            "group names must match ^[%|a-zA-Z0-9_-]{1,255}$ (RocketMQ's rule)",
        ));
    }
    Ok(())
}

fn check_client(key: &str, client: &DrillClient) -> Result<(), TopologyError> {
    let name = &client.name;
    let valid_chars = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-'));
    if name.is_empty() || name.len() > CLIENT_NAME_LENGTH_MAX || !valid_chars {
        return Err(TopologyError::invalid(
            format!("{key}.name"),
            quoted(name),
            "client names must match [A-Za-z0-9_-]{1,64}",
        ));
    }
    let Some(program) = client.command.first() else {
        return Err(TopologyError::invalid(
            format!("{key}.command"),
            "[]",
            "must name a program and its arguments, such as [\"python3\", \"client.py\"]",
        ));
    };
    if program.is_empty() {
        return Err(TopologyError::invalid(
            format!("{key}.command[0]"),
            "\"\"",
            "the program must not be empty",
        ));
    }
    for (index, argument) in client.command.iter().enumerate() {
        let mut rest = argument.as_str();
        while let Some((_, name, after)) = crate::drill::next_placeholder(rest) {
            if !matches!(name, "endpoint" | "topic" | "group") {
                return Err(TopologyError::invalid(
                    format!("{key}.command[{index}]"),
                    quoted(argument),
                    format!(
                        "unknown placeholder {{{name}}}; allowed placeholders: {}",
                        crate::CLIENT_PLACEHOLDERS.join(", ")
                    ),
                ));
            }
            rest = after;
        }
    }
    Ok(())
}

fn check_expect(expect: &DrillExpect) -> Result<(), TopologyError> {
    if let Some(max_lost) = expect.max_lost {
        check_toml_integer("drill.expect.max_lost", max_lost)?;
    }
    if let Some(max_duplicates) = expect.max_duplicates_after_ack {
        check_toml_integer("drill.expect.max_duplicates_after_ack", max_duplicates)?;
    }
    if let Some(max_recovery_ms) = expect.max_recovery_ms {
        check_duration_ms("drill.expect.max_recovery_ms", max_recovery_ms)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "validate_drill_tests.rs"]
mod tests;
