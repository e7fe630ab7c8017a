//! Consumers' filter expressions (region-node/src/consumer/filter.rs and
//! sql.rs): `Filter::parse_tags`, `Filter::parse_sql` (`SqlFilter::parse`)
//! and `Filter::matches` on an expression and a message the input chooses.
//!
//! Input: a nesting byte, a message byte, then UTF-8 text split at NUL
//! bytes: the expression, the message's tag, then user properties as
//! `name=value` (no `=`: an empty value). Message byte: bit 0, the message
//! has no tag; bit 1, there is no message at all (a record without one).
//! Nesting byte: the low two bits pick a wrapping of the SQL expression
//! `e` (0 none, 1 `NOT (…)`, 2 `(…)`, 3 `(e) AND (e) AND …`), the other six
//! bits how many levels (times 4), so mutations reach deep nesting at once.
//!
//! Nothing may panic or overflow the stack, and:
//! * a TAG filter matches exactly the messages whose tag it lists (all for
//!   `*`), as the SQL filter `TAGS IN ('a', …)` does for a message without
//!   a `TAGS` property;
//! * an SQL filter never matches a missing message, and for a parsed `e`
//!   (three-valued logic: unknown is not a match, even negated): `e` and
//!   `NOT (e)` never both match; `(e)`, `(e) AND (e)`, `(e) OR (e)` match
//!   exactly as `e`; `e` wrapped in n `NOT (…)` matches as `e` (n even) or
//!   `NOT (e)` (n odd); the other wrappings match as `e`;
//! * a wrapped expression that is refused is refused for its nesting depth,
//!   operator count or length, with an error saying so (never "recursion
//!   limit exceeded" from sqlparser, nor something else).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_proto::meridian::v1::Message;
use meridian_region_node::fuzzing::{Filter, FilterError};
use std::collections::HashMap;

/// Whether a refusal names the nesting or length limits.
fn refused_for_size(error: &FilterError) -> bool {
    let reason = match error {
        FilterError::InvalidSql { reason, .. } => reason.as_str(),
        FilterError::Invalid { reason, .. } => reason,
    };
    [
        "nested more than",
        "nested too deep",
        "operators and keywords",
        "longer than",
    ]
    .iter()
    .any(|limit| reason.contains(limit))
}

/// Parses an expression built from a parsed one: it must parse, or be
/// refused only for its size. `None` when refused.
fn parse_built(expression: &str) -> Option<Filter> {
    match Filter::parse_sql(expression) {
        Ok(filter) => Some(filter),
        Err(error) => {
            assert!(refused_for_size(&error), "{error}");
            None
        }
    }
}

/// `text` between parentheses, on lines of its own (so that a `--`
/// comment at its end cannot swallow the closing parenthesis).
fn parenthesized(text: &str) -> String {
    format!("(\n{text}\n)")
}

fn tag_filter(expression: &str, message: Option<&Message>) {
    let filter = match Filter::parse_tags(expression) {
        Ok(filter) => filter,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let tag = message.and_then(|message| message.tag.as_deref());
    match &filter {
        Filter::All => assert!(filter.matches(message)),
        Filter::AnyOf(tags) => {
            assert!(!tags.is_empty());
            for listed in tags {
                assert!(!listed.is_empty() && listed.trim() == listed && !listed.contains("||"));
            }
            let listed = tag.is_some_and(|tag| tags.iter().any(|listed| listed == tag));
            assert_eq!(filter.matches(message), listed);
            // The same filter in SQL92, unless a `TAGS` property hides the tag.
            if message.is_none_or(|message| !message.user_properties.contains_key("TAGS")) {
                let quoted: Vec<String> = tags
                    .iter()
                    .map(|tag| format!("'{}'", tag.replace('\'', "''")))
                    .collect();
                let sql = format!("TAGS IN ({})", quoted.join(", "));
                if let Some(sql_filter) = parse_built(&sql) {
                    assert_eq!(sql_filter.matches(message), listed, "{sql}");
                }
            }
        }
        Filter::Sql(_) => panic!("a TAG expression parsed as SQL92"),
    }
}

fn sql_filter(expression: &str, nesting: u8, message: Option<&Message>) {
    let filter = match Filter::parse_sql(expression) {
        Ok(filter) => filter,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(matches!(filter, Filter::Sql(_)));
    assert!(!filter.matches(None));
    let matched = filter.matches(message);
    let inner = parenthesized(expression);
    let negated = parse_built(&format!("NOT {inner}")).map(|negated| negated.matches(message));
    if let Some(negated) = negated {
        assert!(!(matched && negated), "both `e` and `NOT (e)` match");
    }
    for built in [
        inner.clone(),
        format!("{inner} AND {inner}"),
        format!("{inner} OR {inner}"),
    ] {
        if let Some(same) = parse_built(&built) {
            assert_eq!(same.matches(message), matched, "{built}");
        }
    }
    let levels = usize::from(nesting >> 2) * 4;
    let (wrapped, expected) = match nesting & 3 {
        0 => return,
        1 => (
            format!(
                "{}{expression}{}",
                "NOT (\n".repeat(levels),
                "\n)".repeat(levels)
            ),
            if levels % 2 == 0 {
                Some(matched)
            } else {
                negated
            },
        ),
        2 => (
            format!(
                "{}{expression}{}",
                "(\n".repeat(levels),
                "\n)".repeat(levels)
            ),
            Some(matched),
        ),
        _ => (
            format!("{inner}{}", format!(" AND {inner}").repeat(levels)),
            Some(matched),
        ),
    };
    if let (Some(filter), Some(expected)) = (parse_built(&wrapped), expected) {
        assert_eq!(filter.matches(message), expected, "{wrapped}");
    }
}

fuzz_target!(|data: &[u8]| {
    let [nesting, message_flags, text @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let mut fields = text.split('\0');
    let expression = fields.next().unwrap_or_default();
    let tag = fields.next().unwrap_or_default();
    let user_properties: HashMap<String, String> = fields
        .map(|field| {
            let (name, value) = field.split_once('=').unwrap_or((field, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let message = Message {
        tag: (message_flags & 1 == 0).then(|| tag.to_owned()),
        user_properties,
        ..Message::default()
    };
    let message = (message_flags & 2 == 0).then_some(&message);
    tag_filter(expression, message);
    sql_filter(expression, *nesting, message);
});
