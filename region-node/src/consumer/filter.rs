//! Filter expressions of a receive, as RocketMQ defines them: TAG (`*`,
//! `TagA`, `TagA || TagB`) and SQL92 over user properties (see `sql`).
//! A message that does not match is finished for the group without being
//! delivered, on its first delivery and on any redelivery.

use super::sql::SqlFilter;
use meridian_proto::meridian::v1::Message;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every message (`*` or an empty TAG expression).
    All,
    /// Messages whose tag is one of these.
    AnyOf(Vec<String>),
    /// Messages whose user properties (and tag, as `TAGS`) satisfy the expression.
    Sql(SqlFilter),
}

/// Why a filter expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("tag filter expression `{expression}` is invalid: {reason}")]
    Invalid {
        expression: String,
        reason: &'static str,
    },
    #[error("SQL92 filter expression `{expression}` is invalid: {reason}")]
    InvalidSql { expression: String, reason: String },
}

impl Filter {
    /// Parses a TAG expression.
    pub fn parse_tags(expression: &str) -> Result<Self, FilterError> {
        let trimmed = expression.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(Self::All);
        }
        let mut tags = Vec::new();
        for tag in trimmed.split("||") {
            let tag = tag.trim();
            if tag.is_empty() {
                return Err(FilterError::Invalid {
                    expression: expression.to_owned(),
                    reason: "empty tag between `||`",
                });
            }
            if tag == "*" {
                return Ok(Self::All);
            }
            tags.push(tag.to_owned());
        }
        Ok(Self::AnyOf(tags))
    }

    /// Parses a SQL92 expression (RocketMQ's subset).
    pub fn parse_sql(expression: &str) -> Result<Self, FilterError> {
        SqlFilter::parse(expression)
            .map(Self::Sql)
            .map_err(|reason| FilterError::InvalidSql {
                expression: expression.chars().take(256).collect(),
                reason,
            })
    }

    /// Whether a message passes (a record without a message never does,
    /// unless everything passes).
    pub fn matches(&self, message: Option<&Message>) -> bool {
        match self {
            Self::All => true,
            Self::AnyOf(_) => self.matches_tag(message.and_then(|m| m.tag.as_deref())),
            Self::Sql(filter) => message.is_some_and(|message| {
                filter.matches(&message.user_properties, message.tag.as_deref())
            }),
        }
    }

    /// Whether a message with this tag passes a TAG filter.
    fn matches_tag(&self, tag: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::AnyOf(tags) => tag.is_some_and(|tag| tags.iter().any(|wanted| wanted == tag)),
            Self::Sql(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_empty_match_everything() {
        assert_eq!(Filter::parse_tags("*"), Ok(Filter::All));
        assert_eq!(Filter::parse_tags(" "), Ok(Filter::All));
        assert!(Filter::All.matches(None));
    }

    #[test]
    fn alternatives_match_only_listed_tags() {
        let filter = Filter::parse_tags("a || b").expect("valid");
        assert!(filter.matches_tag(Some("a")));
        assert!(filter.matches_tag(Some("b")));
        assert!(!filter.matches_tag(Some("c")));
        assert!(!filter.matches_tag(None));
    }

    #[test]
    fn empty_alternative_is_refused() {
        assert!(Filter::parse_tags("a||").is_err());
    }

    #[test]
    fn sql_filters_read_user_properties() {
        let filter = Filter::parse_sql("amount > 10").expect("valid");
        let mut message = Message::default();
        assert!(!filter.matches(Some(&message)));
        message
            .user_properties
            .insert("amount".to_owned(), "11".to_owned());
        assert!(filter.matches(Some(&message)));
        assert!(matches!(
            Filter::parse_sql("amount >"),
            Err(FilterError::InvalidSql { .. })
        ));
    }
}
