//! Receive attempts: a push consumer whose receive failed (the answer was
//! lost, the call timed out) sends it again with the same `attempt_id`
//! (Python's PushConsumer does), and must get the same messages: they are
//! invisible now, and without this they would wait out their invisible time
//! (60 s by default) before anyone got them again. The reference proxy does
//! the same.
//!
//! The answers of recent receives that carried an attempt id are kept, per
//! (group, topic, attempt id), until the messages' invisibility ends, at
//! most [`MAX_ENTRIES`] of them and [`MAX_BYTES`] of bodies (oldest dropped
//! first).

use meridian_proto::rocketmq::v2::Message;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most receive answers remembered.
const MAX_ENTRIES: usize = 1024;
/// Most body bytes remembered, over all answers.
const MAX_BYTES: usize = 64 * 1024 * 1024;

type Key = (String, String, String);

#[derive(Debug, Default)]
struct Remembered {
    answers: HashMap<Key, (Instant, Vec<Message>, usize)>,
    /// Keys, oldest first.
    order: VecDeque<Key>,
    bytes: usize,
}

/// Recent receive answers by attempt id.
#[derive(Debug, Default)]
pub struct ReceiveAttempts {
    remembered: Mutex<Remembered>,
}

impl ReceiveAttempts {
    /// The messages an earlier receive with this attempt id answered, if
    /// their invisibility has not ended.
    pub fn answered(&self, group: &str, topic: &str, attempt_id: &str) -> Option<Vec<Message>> {
        let key = (group.to_owned(), topic.to_owned(), attempt_id.to_owned());
        let remembered = self.remembered.lock();
        let (expires, messages, _) = remembered.answers.get(&key)?;
        (Instant::now() < *expires).then(|| messages.clone())
    }

    /// Remembers a receive's answer for `invisible` (the messages'
    /// invisible time); an answer larger than the whole budget is not kept.
    pub fn remember(
        &self,
        group: &str,
        topic: &str,
        attempt_id: &str,
        messages: &[Message],
        invisible: Duration,
    ) {
        let bytes: usize = messages.iter().map(|message| message.body.len()).sum();
        if messages.is_empty() || bytes > MAX_BYTES {
            return;
        }
        let key = (group.to_owned(), topic.to_owned(), attempt_id.to_owned());
        let mut remembered = self.remembered.lock();
        let now = Instant::now();
        while remembered.answers.len() >= MAX_ENTRIES || remembered.bytes + bytes > MAX_BYTES {
            let Some(oldest) = remembered.order.pop_front() else {
                break;
            };
            if let Some((_, _, dropped)) = remembered.answers.remove(&oldest) {
                remembered.bytes -= dropped;
            }
        }
        if let Some((_, _, replaced)) = remembered
            .answers
            .insert(key.clone(), (now + invisible, messages.to_vec(), bytes))
        {
            remembered.bytes -= replaced;
        } else {
            remembered.order.push_back(key);
        }
        remembered.bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> Message {
        Message {
            body: body.to_vec(),
            ..Message::default()
        }
    }

    #[test]
    fn the_same_attempt_gets_the_same_answer_until_it_expires() {
        let attempts = ReceiveAttempts::default();
        attempts.remember("g", "t", "a1", &[message(b"x")], Duration::from_secs(60));
        let again = attempts.answered("g", "t", "a1").expect("remembered");
        assert_eq!(again[0].body, b"x");
        assert!(attempts.answered("g", "t", "a2").is_none());
        assert!(attempts.answered("other", "t", "a1").is_none());
        attempts.remember("g", "t", "old", &[message(b"y")], Duration::ZERO);
        assert!(attempts.answered("g", "t", "old").is_none(), "expired");
    }

    #[test]
    fn the_oldest_answers_go_first_when_full() {
        let attempts = ReceiveAttempts::default();
        for index in 0..=MAX_ENTRIES {
            attempts.remember(
                "g",
                "t",
                &index.to_string(),
                &[message(b"x")],
                Duration::from_secs(60),
            );
        }
        assert!(attempts.answered("g", "t", "0").is_none());
        assert!(attempts.answered("g", "t", "1").is_some());
        assert!(
            attempts
                .answered("g", "t", &MAX_ENTRIES.to_string())
                .is_some()
        );
    }
}
