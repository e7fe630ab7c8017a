//! Tag filter expressions (`*`, `TagA`, `TagA || TagB`), as RocketMQ defines them.
//!
//! SQL92 filters are a later feature; asking for one gets a clear refusal.

/// A parsed tag filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// Every message (`*` or an empty expression).
    All,
    /// Messages whose tag is one of these.
    AnyOf(Vec<String>),
}

/// Why a filter expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("tag filter expression `{expression}` is invalid: {reason}")]
    Invalid {
        expression: String,
        reason: &'static str,
    },
    #[error("SQL92 filter expressions are not supported yet (expression `{expression}`)")]
    SqlUnsupported { expression: String },
}

impl TagFilter {
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

    /// Whether a message with this tag passes.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::AnyOf(tags) => tag.is_some_and(|tag| tags.iter().any(|wanted| wanted == tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_empty_match_everything() {
        assert_eq!(TagFilter::parse_tags("*"), Ok(TagFilter::All));
        assert_eq!(TagFilter::parse_tags(" "), Ok(TagFilter::All));
        assert!(TagFilter::All.matches(None));
    }

    #[test]
    fn alternatives_match_only_listed_tags() {
        let filter = TagFilter::parse_tags("a || b").expect("valid");
        assert!(filter.matches(Some("a")));
        assert!(filter.matches(Some("b")));
        assert!(!filter.matches(Some("c")));
        assert!(!filter.matches(None));
    }

    #[test]
    fn empty_alternative_is_refused() {
        assert!(TagFilter::parse_tags("a||").is_err());
    }
}
