//! Trends formulas: arithmetic across series, such as `B / A * 100`.
//!
//! Owns the grammar, the parser (with errors that point at the column), and the
//! evaluator. Series are named by letter in query order: `A` is the first series, `B`
//! the second, up to `Z`; letters are case-insensitive.
//!
//! ```text
//! formula := sum
//! sum     := product (('+' | '-') product)*
//! product := unary (('*' | '/') unary)*
//! unary   := ('-' | '+') unary | atom
//! atom    := number | letter | '(' sum ')'
//! number  := digits ['.' digits] | '.' digits
//! ```
//!
//! Evaluation is per bucket over `Option<f64>`: a series without a value in a bucket
//! (an average over no events) makes the formula valueless there, and so do division
//! by zero and any non-finite result. Charts show a gap rather than an invented 0.

use std::fmt;

use crate::error::{QueryError, Result};

/// Longest accepted formula, in characters.
pub const MAX_FORMULA_LEN: usize = 1000;
/// Deepest accepted nesting of parentheses and unary signs.
pub const MAX_FORMULA_DEPTH: usize = 64;

/// A parsed formula.
#[derive(Debug, Clone, PartialEq)]
pub enum Formula {
    /// A literal.
    Number(f64),
    /// A series, by index (`A` = 0).
    Series(usize),
    /// Negation.
    Neg(Box<Formula>),
    /// Addition.
    Add(Box<Formula>, Box<Formula>),
    /// Subtraction.
    Sub(Box<Formula>, Box<Formula>),
    /// Multiplication.
    Mul(Box<Formula>, Box<Formula>),
    /// Division (no value when dividing by zero).
    Div(Box<Formula>, Box<Formula>),
}

impl Formula {
    /// Parses `text` for a query with `series_count` series.
    pub fn parse(text: &str, series_count: usize) -> Result<Formula> {
        let chars: Vec<char> = text.chars().collect();
        let mut parser = Parser {
            text,
            chars: &chars,
            pos: 0,
            series_count,
            depth: 0,
        };
        if chars.len() > MAX_FORMULA_LEN {
            return Err(parser.error(
                0,
                format!("the formula is longer than {MAX_FORMULA_LEN} characters"),
            ));
        }
        parser.skip_spaces();
        if parser.pos == chars.len() {
            return Err(parser.error(parser.pos, "the formula is empty".into()));
        }
        let formula = parser.sum()?;
        parser.skip_spaces();
        if parser.pos < chars.len() {
            let c = chars[parser.pos];
            let hint = if c == ')' {
                "a `)` without a matching `(`".to_string()
            } else {
                format!("unexpected `{c}`; expected an operator (+ - * /)")
            };
            return Err(parser.error(parser.pos, hint));
        }
        Ok(formula)
    }

    /// The value for one bucket, given each series' value there.
    pub fn eval(&self, series: &[Option<f64>]) -> Option<f64> {
        let value = match self {
            Formula::Number(n) => Some(*n),
            Formula::Series(i) => series.get(*i).copied().flatten(),
            Formula::Neg(a) => a.eval(series).map(|a| -a),
            Formula::Add(a, b) => Some(a.eval(series)? + b.eval(series)?),
            Formula::Sub(a, b) => Some(a.eval(series)? - b.eval(series)?),
            Formula::Mul(a, b) => Some(a.eval(series)? * b.eval(series)?),
            Formula::Div(a, b) => {
                let (a, b) = (a.eval(series)?, b.eval(series)?);
                if b == 0.0 { None } else { Some(a / b) }
            }
        };
        value.filter(|v| v.is_finite())
    }

    /// The series indexes the formula reads.
    pub fn series_used(&self) -> Vec<usize> {
        let mut out = Vec::new();
        fn walk(f: &Formula, out: &mut Vec<usize>) {
            match f {
                Formula::Number(_) => {}
                Formula::Series(i) => {
                    if !out.contains(i) {
                        out.push(*i)
                    }
                }
                Formula::Neg(a) => walk(a, out),
                Formula::Add(a, b)
                | Formula::Sub(a, b)
                | Formula::Mul(a, b)
                | Formula::Div(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        walk(self, &mut out);
        out
    }
}

/// Prints the formula fully parenthesised, so that printing and re-parsing yields the
/// same tree.
impl fmt::Display for Formula {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Formula::Number(n) => write!(f, "{n}"),
            Formula::Series(i) => write!(f, "{}", series_letter(*i)),
            Formula::Neg(a) => write!(f, "(-{a})"),
            Formula::Add(a, b) => write!(f, "({a} + {b})"),
            Formula::Sub(a, b) => write!(f, "({a} - {b})"),
            Formula::Mul(a, b) => write!(f, "({a} * {b})"),
            Formula::Div(a, b) => write!(f, "({a} / {b})"),
        }
    }
}

/// The letter naming series `index` (`0` → `A`).
pub fn series_letter(index: usize) -> char {
    u8::try_from(index)
        .ok()
        .filter(|i| *i < 26)
        .map(|i| char::from(b'A' + i))
        .unwrap_or('?')
}

struct Parser<'a> {
    text: &'a str,
    chars: &'a [char],
    pos: usize,
    series_count: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, pos: usize, reason: String) -> QueryError {
        QueryError::Formula {
            formula: self.text.to_string(),
            position: pos + 1,
            reason,
        }
    }

    fn skip_spaces(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_spaces();
        self.chars.get(self.pos).copied()
    }

    fn sum(&mut self) -> Result<Formula> {
        let mut left = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.pos += 1;
            let right = self.product()?;
            left = if op == '+' {
                Formula::Add(Box::new(left), Box::new(right))
            } else {
                Formula::Sub(Box::new(left), Box::new(right))
            };
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Formula> {
        let mut left = self.unary()?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.pos += 1;
            let right = self.unary()?;
            left = if op == '*' {
                Formula::Mul(Box::new(left), Box::new(right))
            } else {
                Formula::Div(Box::new(left), Box::new(right))
            };
        }
        Ok(left)
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_FORMULA_DEPTH {
            return Err(self.error(
                self.pos,
                format!("nested deeper than {MAX_FORMULA_DEPTH} levels"),
            ));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn unary(&mut self) -> Result<Formula> {
        match self.peek() {
            Some('-') => {
                self.pos += 1;
                self.nested(|p| p.unary())
                    .map(|a| Formula::Neg(Box::new(a)))
            }
            Some('+') => {
                self.pos += 1;
                self.nested(|p| p.unary())
            }
            _ => self.atom(),
        }
    }

    fn atom(&mut self) -> Result<Formula> {
        let start = self.pos;
        match self.peek() {
            None => Err(self.error(
                self.pos,
                "the formula ends too early; expected a series letter, a number or `(`".into(),
            )),
            Some('(') => {
                let open = self.pos;
                self.pos += 1;
                let inner = self.nested(|p| p.sum())?;
                match self.peek() {
                    Some(')') => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => Err(self.error(open, "this `(` is never closed".into())),
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                self.pos += 1;
                if self
                    .chars
                    .get(self.pos)
                    .is_some_and(|c| c.is_alphanumeric())
                {
                    return Err(self.error(
                        start,
                        "series are single letters (A, B, ...); a name is not a series".into(),
                    ));
                }
                let index = usize::from(c.to_ascii_uppercase() as u8 - b'A');
                if index >= self.series_count {
                    let available = match self.series_count {
                        0 => "the query has no series".to_string(),
                        1 => "the query has one series, A".to_string(),
                        n => format!("the query has {n} series, A to {}", series_letter(n - 1)),
                    };
                    return Err(self.error(
                        start,
                        format!(
                            "series {} does not exist: {available}",
                            c.to_ascii_uppercase()
                        ),
                    ));
                }
                Ok(Formula::Series(index))
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                while self
                    .chars
                    .get(self.pos)
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    self.pos += 1;
                }
                let literal: String = self.chars[start..self.pos].iter().collect();
                literal
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && literal.chars().any(|c| c.is_ascii_digit()))
                    .map(Formula::Number)
                    .ok_or_else(|| self.error(start, format!("`{literal}` is not a number")))
            }
            Some(c) => Err(self.error(
                self.pos,
                format!("unexpected `{c}`; expected a series letter, a number or `(`"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn eval(text: &str, series: &[Option<f64>]) -> Option<f64> {
        Formula::parse(text, series.len()).unwrap().eval(series)
    }

    fn position(text: &str, series: usize) -> (usize, String) {
        match Formula::parse(text, series).unwrap_err() {
            QueryError::Formula {
                position, reason, ..
            } => (position, reason),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn precedence_associativity_and_case() {
        assert_eq!(eval("B / A * 100", &[Some(4.0), Some(1.0)]), Some(25.0));
        assert_eq!(eval("a - b - 1", &[Some(10.0), Some(3.0)]), Some(6.0));
        assert_eq!(eval("A / B / 2", &[Some(8.0), Some(2.0)]), Some(2.0));
        assert_eq!(eval("-(A + B) * 2", &[Some(1.0), Some(2.0)]), Some(-6.0));
        assert_eq!(eval("A + B * 2", &[Some(1.0), Some(2.0)]), Some(5.0));
        assert_eq!(eval(" .5*A ", &[Some(3.0)]), Some(1.5));
    }

    #[test]
    fn missing_values_and_division_by_zero_give_no_value() {
        assert_eq!(eval("A / B", &[Some(1.0), Some(0.0)]), None);
        assert_eq!(eval("A + B", &[Some(1.0), None]), None);
        assert_eq!(eval("A * 0", &[None]), None);
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let (pos, reason) = position("B / C", 2);
        assert_eq!(pos, 5);
        assert!(reason.contains("A to B"), "{reason}");
        let (pos, reason) = position("(A + B", 2);
        assert_eq!(pos, 1);
        assert!(reason.contains("never closed"), "{reason}");
        let (pos, _) = position("A +", 1);
        assert_eq!(pos, 4);
        let (pos, reason) = position("A B", 2);
        assert_eq!(pos, 3);
        assert!(reason.contains("operator"), "{reason}");
        let (_, reason) = position("AB", 2);
        assert!(reason.contains("single letters"), "{reason}");
        let (_, reason) = position("1.2.3", 1);
        assert!(reason.contains("not a number"), "{reason}");
        let (_, reason) = position("A)", 1);
        assert!(reason.contains("without a matching"), "{reason}");
        let (_, reason) = position("", 1);
        assert!(reason.contains("empty"), "{reason}");
        let (_, reason) = position(&format!("{}A", "-".repeat(100)), 1);
        assert!(reason.contains("nested deeper"), "{reason}");
        let (_, reason) = position("A % 2", 1);
        assert!(reason.contains("unexpected `%`"), "{reason}");
    }

    fn arb_formula() -> impl Strategy<Value = Formula> {
        let leaf = prop_oneof![
            (0u32..1000).prop_map(|n| Formula::Number(f64::from(n) / 4.0)),
            (0usize..3).prop_map(Formula::Series),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|a| Formula::Neg(Box::new(a))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Formula::Add(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Formula::Sub(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Formula::Mul(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Formula::Div(Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest! {
        #[test]
        fn printing_and_parsing_round_trips(f in arb_formula()) {
            let printed = f.to_string();
            prop_assert_eq!(Formula::parse(&printed, 3).unwrap(), f);
        }

        #[test]
        fn parser_never_panics(text in "[AB0-9.+*/() -]{0,30}") {
            let _ = Formula::parse(&text, 2);
        }
    }
}
