//! SQL92 filter expressions, RocketMQ's subset, over a message's user
//! properties (and its tag as the property `TAGS`).
//!
//! The grammar is SQL's: [`sqlparser`] parses the text, and this module
//! accepts what RocketMQ's SQL92 filter documents and refuses the rest,
//! naming it: comparisons (`=`, `<>`, `!=`, `<`, `<=`, `>`, `>=`) of a
//! property with a literal, `[NOT] BETWEEN`, `[NOT] IN`, `IS [NOT] NULL`,
//! `AND`, `OR`, `NOT`, parentheses; literals are numbers (`3`, `-1.5`),
//! strings in single quotes and `TRUE` / `FALSE`. Strings compare only with
//! `=`, `<>` and `IN`.
//!
//! Evaluation uses SQL's three-valued logic: a comparison with a missing
//! property, or a numeric comparison with a property that is not a number,
//! is unknown, and a message matches only when the whole expression is
//! true (so `NOT (a > 1)` does not match a message without `a`).
//!
//! Expressions come from clients, so their size is bounded before anything
//! recurses over them: at most [`MAX_EXPRESSION_BYTES`], [`MAX_OPERATORS`]
//! operators and keywords (which bounds chains such as `1 + 1 + …`, which
//! sqlparser builds in a loop but formats and drops recursively), and
//! sqlparser's own recursion stops at [`PARSER_RECURSION_LIMIT`]. Within
//! these, parsing an expression fits a 2 MiB thread stack (tokio's worker
//! default) even in an unoptimized build, where sqlparser's functions take
//! tens of KiB of stack per level.

use sqlparser::ast::{BinaryOperator, Expr, Ident, InTarget, UnaryOperator, Value, ValueWithSpan};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};
use std::collections::HashMap;

/// Longest expression accepted, in bytes.
const MAX_EXPRESSION_BYTES: usize = 4096;
/// Most operators and keywords accepted (see [`counts_as_operator`]).
const MAX_OPERATORS: usize = 128;
/// sqlparser's recursion limit: each parenthesis, bracket, `NOT` or
/// operand nested in another takes one or two levels.
const PARSER_RECURSION_LIMIT: usize = 24;
/// Most `NOT`s in a row: sqlparser reads a keyword whose expression fails
/// to parse (here: past its recursion limit) as a name, which would refuse
/// a long run of `NOT`s with a misleading message.
const MAX_NOTS_IN_A_ROW: usize = PARSER_RECURSION_LIMIT / 2;
/// Deepest nesting of the parsed condition accepted (AND/OR chains, NOT,
/// parentheses).
const MAX_DEPTH: usize = 64;
/// The pseudo-property that stands for the message's tag.
const TAG_PROPERTY: &str = "TAGS";

/// A parsed SQL92 filter.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    condition: Condition,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Constant(bool),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    Compare {
        property: String,
        op: Comparison,
        literal: Literal,
    },
    Between {
        property: String,
        low: f64,
        high: f64,
        negated: bool,
    },
    In {
        property: String,
        values: Vec<Literal>,
        negated: bool,
    },
    IsNull {
        property: String,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl SqlFilter {
    /// Parses `expression`; the error says what is wrong or not supported.
    pub fn parse(expression: &str) -> Result<SqlFilter, String> {
        if expression.trim().is_empty() {
            return Err("the expression is empty".to_owned());
        }
        if expression.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "the expression is longer than {MAX_EXPRESSION_BYTES} bytes"
            ));
        }
        let dialect = GenericDialect {};
        let tokens = Tokenizer::new(&dialect, expression)
            .tokenize_with_location()
            .map_err(|error| error.to_string())?;
        let mut operators = 0;
        let mut nots_in_a_row = 0;
        for token in &tokens {
            operators += usize::from(counts_as_operator(&token.token));
            match &token.token {
                Token::Word(word) if word.keyword == Keyword::NOT && word.quote_style.is_none() => {
                    nots_in_a_row += 1;
                }
                Token::Whitespace(_) => {}
                _ => nots_in_a_row = 0,
            }
            if nots_in_a_row > MAX_NOTS_IN_A_ROW {
                return Err(format!(
                    "nested too deep: more than {MAX_NOTS_IN_A_ROW} NOTs in a row"
                ));
            }
        }
        if operators > MAX_OPERATORS {
            return Err(format!(
                "the expression has {operators} operators and keywords, more than {MAX_OPERATORS}"
            ));
        }
        let mut parser = Parser::new(&dialect)
            .with_recursion_limit(PARSER_RECURSION_LIMIT)
            .with_tokens_with_locations(tokens);
        let tree = parser.parse_expr().map_err(|error| match error {
            ParserError::RecursionLimitExceeded => format!(
                "nested too deep for the SQL parser (its limit is {PARSER_RECURSION_LIMIT} \
                 levels; each parenthesis, bracket or NOT takes one or two)"
            ),
            other => other.to_string(),
        })?;
        let rest = parser.peek_token();
        if rest.token != Token::EOF {
            return Err(format!("unexpected `{}` after the expression", rest.token));
        }
        Ok(SqlFilter {
            condition: condition(&tree, 0)?,
        })
    }

    /// Whether a message with these user properties and tag matches.
    pub fn matches(&self, properties: &HashMap<String, String>, tag: Option<&str>) -> bool {
        let lookup = |name: &str| -> Option<&str> {
            properties
                .get(name)
                .map(String::as_str)
                .or_else(|| (name == TAG_PROPERTY).then_some(tag).flatten())
        };
        evaluate(&self.condition, &lookup) == Some(true)
    }
}

/// Whether a token counts towards [`MAX_OPERATORS`]: everything but
/// whitespace, commas, brackets (sqlparser's recursion limit bounds those),
/// names that are not keywords, numbers and plain string literals.
fn counts_as_operator(token: &Token) -> bool {
    match token {
        Token::Word(word) => word.keyword != Keyword::NoKeyword && word.quote_style.is_none(),
        Token::EOF
        | Token::Whitespace(_)
        | Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::LBracket
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace
        | Token::Number(..)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_) => false,
        _ => true,
    }
}

fn condition(expr: &Expr, depth: usize) -> Result<Condition, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested more than {MAX_DEPTH} deep"));
    }
    let depth = depth + 1;
    match expr {
        Expr::Nested(inner) => condition(inner, depth),
        Expr::Value(ValueWithSpan {
            value: Value::Boolean(value),
            ..
        }) => Ok(Condition::Constant(*value)),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Ok(Condition::Not(Box::new(condition(expr, depth)?))),
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And => Ok(Condition::And(
                Box::new(condition(left, depth)?),
                Box::new(condition(right, depth)?),
            )),
            BinaryOperator::Or => Ok(Condition::Or(
                Box::new(condition(left, depth)?),
                Box::new(condition(right, depth)?),
            )),
            _ => comparison(left, op, right),
        },
        Expr::IsNull(inner) => Ok(Condition::IsNull {
            property: property(inner)?,
            negated: false,
        }),
        Expr::IsNotNull(inner) => Ok(Condition::IsNull {
            property: property(inner)?,
            negated: true,
        }),
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let number = |bound: &Expr| match literal(bound)? {
                Literal::Number(value) => Ok(value),
                _ => Err(format!("BETWEEN takes numbers, not `{bound}`")),
            };
            Ok(Condition::Between {
                property: property(expr)?,
                low: number(low)?,
                high: number(high)?,
                negated: *negated,
            })
        }
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated,
            ..
        } => Ok(Condition::In {
            property: property(expr)?,
            values: list.iter().map(literal).collect::<Result<_, _>>()?,
            negated: *negated,
        }),
        other => Err(format!(
            "`{other}` is not supported: use comparisons, BETWEEN, IN, IS [NOT] NULL, AND, OR and NOT"
        )),
    }
}

/// `property op literal`, or `literal op property` (turned around).
fn comparison(left: &Expr, op: &BinaryOperator, right: &Expr) -> Result<Condition, String> {
    let op_of = |op: &BinaryOperator| match op {
        BinaryOperator::Eq => Ok(Comparison::Equal),
        BinaryOperator::NotEq => Ok(Comparison::NotEqual),
        BinaryOperator::Lt => Ok(Comparison::Less),
        BinaryOperator::LtEq => Ok(Comparison::LessOrEqual),
        BinaryOperator::Gt => Ok(Comparison::Greater),
        BinaryOperator::GtEq => Ok(Comparison::GreaterOrEqual),
        other => Err(format!("the operator `{other}` is not supported")),
    };
    let (property_side, literal_side, op) = match (property(left), property(right)) {
        (Ok(name), _) => (name, right, op_of(op)?),
        (Err(_), Ok(name)) => (name, left, flipped(op_of(op)?)),
        (Err(error), Err(_)) => return Err(error),
    };
    let literal = literal(literal_side)?;
    if matches!(literal, Literal::Text(_) | Literal::Bool(_))
        && !matches!(op, Comparison::Equal | Comparison::NotEqual)
    {
        return Err(format!(
            "`{literal_side}` can only be compared with = and <> (strings and booleans are not ordered)"
        ));
    }
    Ok(Condition::Compare {
        property: property_side,
        op,
        literal,
    })
}

fn flipped(op: Comparison) -> Comparison {
    match op {
        Comparison::Less => Comparison::Greater,
        Comparison::LessOrEqual => Comparison::GreaterOrEqual,
        Comparison::Greater => Comparison::Less,
        Comparison::GreaterOrEqual => Comparison::LessOrEqual,
        same => same,
    }
}

fn property(expr: &Expr) -> Result<String, String> {
    match expr {
        Expr::Nested(inner) => property(inner),
        Expr::Identifier(Ident { value, .. }) => Ok(value.clone()),
        Expr::CompoundIdentifier(parts) => Ok(parts
            .iter()
            .map(|part| part.value.as_str())
            .collect::<Vec<_>>()
            .join(".")),
        other => Err(format!("expected a property name, found `{other}`")),
    }
}

fn literal(expr: &Expr) -> Result<Literal, String> {
    match expr {
        Expr::Nested(inner) => literal(inner),
        Expr::Value(ValueWithSpan { value, .. }) => match value {
            Value::Number(text, _) => text
                .parse::<f64>()
                .map(Literal::Number)
                .map_err(|_| format!("`{text}` is not a number")),
            Value::SingleQuotedString(text) => Ok(Literal::Text(text.clone())),
            Value::Boolean(value) => Ok(Literal::Bool(*value)),
            other => Err(format!(
                "the literal `{other}` is not supported: use numbers, 'strings', TRUE or FALSE"
            )),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Literal::Number(value) => Ok(Literal::Number(-value)),
            _ => Err(format!("`-{expr}` is not a number")),
        },
        other => Err(format!("expected a literal, found `{other}`")),
    }
}

/// Three-valued: `None` is SQL's unknown.
fn evaluate<'a>(condition: &Condition, lookup: &impl Fn(&str) -> Option<&'a str>) -> Option<bool> {
    match condition {
        Condition::Constant(value) => Some(*value),
        Condition::Not(inner) => evaluate(inner, lookup).map(|value| !value),
        Condition::And(left, right) => match (evaluate(left, lookup), evaluate(right, lookup)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Condition::Or(left, right) => match (evaluate(left, lookup), evaluate(right, lookup)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Condition::IsNull { property, negated } => Some(lookup(property).is_none() != *negated),
        Condition::Compare {
            property,
            op,
            literal,
        } => compare(lookup(property)?, *op, literal),
        Condition::Between {
            property,
            low,
            high,
            negated,
        } => {
            let value: f64 = lookup(property)?.trim().parse().ok()?;
            Some((*low <= value && value <= *high) != *negated)
        }
        Condition::In {
            property,
            values,
            negated,
        } => {
            let value = lookup(property)?;
            let mut unknown = false;
            for candidate in values {
                match compare(value, Comparison::Equal, candidate) {
                    Some(true) => return Some(!*negated),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            if unknown { None } else { Some(*negated) }
        }
    }
}

fn compare(value: &str, op: Comparison, literal: &Literal) -> Option<bool> {
    let ordering = match literal {
        Literal::Number(number) => {
            let value: f64 = value.trim().parse().ok()?;
            value.partial_cmp(number)?
        }
        Literal::Text(text) => value.cmp(text.as_str()),
        Literal::Bool(flag) => {
            let value: bool = value.trim().to_ascii_lowercase().parse().ok()?;
            value.cmp(flag)
        }
    };
    Some(match op {
        Comparison::Equal => ordering.is_eq(),
        Comparison::NotEqual => ordering.is_ne(),
        Comparison::Less => ordering.is_lt(),
        Comparison::LessOrEqual => ordering.is_le(),
        Comparison::Greater => ordering.is_gt(),
        Comparison::GreaterOrEqual => ordering.is_ge(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn matches(expression: &str, pairs: &[(&str, &str)]) -> bool {
        SqlFilter::parse(expression)
            .unwrap_or_else(|error| panic!("{expression}: {error}"))
            .matches(&props(pairs), Some("paid"))
    }

    #[test]
    fn comparisons_between_in_and_null_checks() {
        let order = [("region", "eu"), ("amount", "250"), ("vip", "true")];
        assert!(matches("amount > 100", &order));
        assert!(matches("100 < amount", &order));
        assert!(!matches("amount >= 251", &order));
        assert!(matches("amount BETWEEN 200 AND 300", &order));
        assert!(matches("amount NOT BETWEEN 1 AND 2", &order));
        assert!(matches("region IN ('eu', 'us')", &order));
        assert!(!matches("region NOT IN ('eu')", &order));
        assert!(matches(
            "region = 'eu' AND (amount < 10 OR vip = TRUE)",
            &order
        ));
        assert!(matches("region <> 'us'", &order));
        assert!(matches("region != 'us'", &order));
        assert!(matches("missing IS NULL AND region IS NOT NULL", &order));
        assert!(matches("TAGS = 'paid'", &order));
        assert!(matches("amount = 250.0", &order));
        assert!(matches("amount > -1", &order));
    }

    #[test]
    fn unknown_is_not_a_match_even_negated() {
        assert!(!matches("missing > 1", &[]));
        assert!(!matches("NOT (missing > 1)", &[]));
        assert!(!matches("text > 1", &[("text", "abc")]));
        assert!(matches("missing > 1 OR TRUE", &[]));
        assert!(!matches("missing > 1 AND TRUE", &[]));
    }

    #[test]
    fn refusals_name_the_problem() {
        for (expression, expected) in [
            ("", "empty"),
            ("a >", "Expected"),
            ("a > 1 b", "after the expression"),
            ("a LIKE 'x%'", "not supported"),
            ("a > 'x'", "only be compared with = and <>"),
            ("a + 1 > 2", "expected a property name"),
            ("a = b", "expected a literal"),
            ("a BETWEEN 'x' AND 'y'", "BETWEEN takes numbers"),
        ] {
            let error = SqlFilter::parse(expression).expect_err(expression);
            assert!(error.contains(expected), "{expression}: {error}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(200), ")".repeat(200));
        assert!(SqlFilter::parse(&deep).is_err());
    }

    /// Nesting and chains up to the length limit, of every kind sqlparser
    /// recurses into (or formats recursively in an error), on a thread with
    /// tokio's default worker stack. Before the operator limit and the lower
    /// recursion limit, an unoptimized build overflowed this stack from 30
    /// `NOT`s, 20 `NOT (`, 25 nested `[`, or a 300-term `1 + 1 + …` (whose
    /// error message formats it).
    #[test]
    fn deep_expressions_are_refused_without_overflowing_a_worker_stack() {
        // Nesting of what filters may use is refused for its size; other
        // SQL may be refused for what it is (sqlparser reads a keyword it
        // cannot parse on as a name, and then stumbles on what follows).
        let supported = [
            ("(", "a = 1", ")"),
            ("NOT ", "a = 1", ""),
            ("NOT (", "a = 1", ")"),
            ("- ", "1 = a", ""),
            ("", "a = 1", " OR a = 1"),
            ("", "a IS NULL", " AND a IS NULL"),
            ("", "a = 1", " + 1"),
        ];
        let other_sql = [
            ("a IN ([", "1", "])"),
            ("a = f(", "1", ")"),
            ("a = CASE WHEN ", "1", " THEN 1 END"),
            ("a = (SELECT ", "1", ")"),
            ("a = {'k': ", "1", "}"),
        ];
        let cases = supported
            .map(|case| (case, true))
            .into_iter()
            .chain(other_sql.map(|case| (case, false)));
        let limits = ["longer than", "operators and keywords", "nested too deep"];
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                for ((open, inner, close), size_only) in cases {
                    // As deep as 4096 bytes allow, and just past the limits.
                    let most = (MAX_EXPRESSION_BYTES - inner.len()) / (open.len() + close.len());
                    for levels in [most, MAX_OPERATORS + 1] {
                        let text =
                            format!("{}{inner}{}", open.repeat(levels), close.repeat(levels));
                        let error = SqlFilter::parse(&text).expect_err(&text);
                        let size = limits.iter().any(|limit| error.contains(limit));
                        let depth = error.contains("nested more than");
                        assert!(size || depth || !size_only, "{open}…: {error}");
                    }
                }
                // What real filters nest stays accepted.
                let nested = format!("{}a = 1{}", "NOT (".repeat(10), ")".repeat(10));
                let parenthesized = format!("{}a = 1{}", "(".repeat(20), ")".repeat(20));
                let chain = vec!["a = 1"; 60].join(" OR ");
                for text in [nested, parenthesized, chain] {
                    SqlFilter::parse(&text).unwrap_or_else(|error| panic!("{text}: {error}"));
                }
            })
            .expect("spawn a thread")
            .join()
            .expect("no stack overflow, no failed check");
    }

    proptest! {
        /// Whatever the text, parsing answers (no panic), and a parsed
        /// filter evaluates without panicking.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,80}") {
            if let Ok(filter) = SqlFilter::parse(&text) {
                let _ = filter.matches(&props(&[("a", "1")]), None);
            }
        }

        /// A numeric comparison agrees with f64's.
        #[test]
        fn numeric_comparisons_agree_with_numbers(value in -1e6f64..1e6, bound in -1e6f64..1e6) {
            let pairs = [("n", value.to_string())];
            let properties: HashMap<String, String> =
                pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
            let filter = SqlFilter::parse(&format!("n > {bound}")).expect("valid");
            prop_assert_eq!(filter.matches(&properties, None), value > bound);
        }
    }
}
