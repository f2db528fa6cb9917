//! Action and resource names, and the patterns that match them
//! (spec/token.md §4.1).
//!
//! A name is a non-empty list of segments joined by a separator: `.` for
//! actions (`refund.issue`), `:` for resources (`customer:4821`). A pattern
//! is `*`, an exact name, or a name followed by `SEP*`, which matches every
//! name with at least one more segment. Matching and covering work on whole
//! segments, so `crm.*` matches `crm.read` but never `crmx.read`.
//!
//! Both types can only be built by parsing, so a value always satisfies the
//! grammar.

use std::fmt;

use crate::limits::{MAX_SEGMENTS, MAX_STRING_BYTES};

/// Why a name or pattern was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// Empty, or longer than [`MAX_STRING_BYTES`] or [`MAX_SEGMENTS`].
    #[error("empty or too long")]
    Length,
    /// A segment is empty or has a character outside the grammar.
    #[error("bad segment")]
    Segment,
    /// `*` appears anywhere but as the whole pattern or its last segment.
    #[error("misplaced wildcard")]
    Wildcard,
}

impl PatternError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Length => "pattern or name empty or too long",
            Self::Segment => "pattern or name has an empty segment or a bad character",
            Self::Wildcard => "wildcard is only allowed as a whole last segment",
        }
    }
}

/// The separator between segments: `.` for actions, `:` for resources.
pub trait Namespace: Copy + Eq + Ord + fmt::Debug + 'static {
    /// The separator character.
    const SEP: u8;
    /// Whether `b` may appear inside a segment.
    fn segment_byte(b: u8) -> bool;
}

/// Action names: lower-case ASCII letters, digits, `_` and `-`, joined by `.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actions;
impl Namespace for Actions {
    const SEP: u8 = b'.';
    fn segment_byte(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
    }
}

/// Resource names: ASCII letters, digits and `_ - . @ + / =`, joined by `:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources;
impl Namespace for Resources {
    const SEP: u8 = b':';
    fn segment_byte(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b'+' | b'/' | b'=')
    }
}

fn check_segments<N: Namespace>(s: &str) -> Result<(), PatternError> {
    if s.is_empty() || s.len() > MAX_STRING_BYTES {
        return Err(PatternError::Length);
    }
    let mut count = 0;
    for seg in s.as_bytes().split(|&b| b == N::SEP) {
        count += 1;
        if seg.is_empty() || !seg.iter().all(|&b| N::segment_byte(b)) {
            return Err(if seg.contains(&b'*') {
                PatternError::Wildcard
            } else {
                PatternError::Segment
            });
        }
    }
    if count > MAX_SEGMENTS {
        return Err(PatternError::Length);
    }
    Ok(())
}

/// A concrete action or resource name, such as `refund.issue`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name<N: Namespace> {
    text: String,
    ns: std::marker::PhantomData<N>,
}

impl<N: Namespace> Name<N> {
    /// Parses a name; wildcards are not allowed.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        check_segments::<N>(s)?;
        Ok(Self {
            text: s.to_owned(),
            ns: std::marker::PhantomData,
        })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<N: Namespace> fmt::Display for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl<N: Namespace> fmt::Debug for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// A pattern over names: `*`, an exact name, or `prefix.*`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pattern<N: Namespace> {
    text: String,
    ns: std::marker::PhantomData<N>,
}

/// An action pattern such as `crm.*`.
pub type ActionPattern = Pattern<Actions>;
/// A resource pattern such as `customer:*`.
pub type ResourcePattern = Pattern<Resources>;
/// An action name such as `refund.issue`.
pub type ActionName = Name<Actions>;
/// A resource name such as `customer:4821`.
pub type ResourceName = Name<Resources>;

enum Form<'a> {
    Any,
    Exact(&'a str),
    Prefix(&'a str),
}

/// Whether `name` lies strictly under `prefix` (has it as whole leading segments).
fn under(name: &str, prefix: &str, sep: u8) -> bool {
    name.len() > prefix.len() && name.starts_with(prefix) && name.as_bytes()[prefix.len()] == sep
}

impl<N: Namespace> Pattern<N> {
    /// Parses a pattern.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s != "*" {
            let body = match s.strip_suffix('*') {
                Some(rest) => rest
                    .strip_suffix(N::SEP as char)
                    .ok_or(PatternError::Wildcard)?,
                None => s,
            };
            if s.len() > MAX_STRING_BYTES {
                return Err(PatternError::Length);
            }
            check_segments::<N>(body)?;
        }
        Ok(Self {
            text: s.to_owned(),
            ns: std::marker::PhantomData,
        })
    }

    /// The pattern matching every name.
    pub fn any() -> Self {
        Self {
            text: "*".to_owned(),
            ns: std::marker::PhantomData,
        }
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn form(&self) -> Form<'_> {
        if self.text == "*" {
            Form::Any
        } else if let Some(p) = self.text.strip_suffix('*') {
            Form::Prefix(&p[..p.len() - 1])
        } else {
            Form::Exact(&self.text)
        }
    }

    /// Whether this pattern matches `name`.
    pub fn matches(&self, name: &Name<N>) -> bool {
        match self.form() {
            Form::Any => true,
            Form::Exact(p) => p == name.text,
            Form::Prefix(p) => under(&name.text, p, N::SEP),
        }
    }

    /// Whether every name matched by `other` is matched by `self`.
    pub fn covers(&self, other: &Self) -> bool {
        match (self.form(), other.form()) {
            (Form::Any, _) => true,
            (_, Form::Any) => false,
            (Form::Exact(p), Form::Exact(q)) => p == q,
            (Form::Exact(_), Form::Prefix(_)) => false,
            (Form::Prefix(p), Form::Exact(q)) => under(q, p, N::SEP),
            (Form::Prefix(p), Form::Prefix(q)) => p == q || under(q, p, N::SEP),
        }
    }

    /// Whether some name is matched by both patterns. In this grammar two
    /// patterns overlap exactly when one covers the other.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl<N: Namespace> fmt::Display for Pattern<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl<N: Namespace> fmt::Debug for Pattern<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ap(s: &str) -> ActionPattern {
        ActionPattern::parse(s).unwrap()
    }
    fn an(s: &str) -> ActionName {
        ActionName::parse(s).unwrap()
    }

    #[test]
    fn segment_matching() {
        assert!(ap("crm.*").matches(&an("crm.read")));
        assert!(ap("crm.*").matches(&an("crm.read.deep")));
        assert!(!ap("crm.*").matches(&an("crmx.read")));
        assert!(!ap("crm.*").matches(&an("crm")));
        assert!(ap("crm.read").matches(&an("crm.read")));
        assert!(!ap("crm.read").matches(&an("crm.reader")));
        assert!(ap("*").matches(&an("anything.at.all")));
    }

    #[test]
    fn covering() {
        assert!(ap("crm.*").covers(&ap("crm.read")));
        assert!(ap("crm.*").covers(&ap("crm.x.*")));
        assert!(ap("crm.*").covers(&ap("crm.*")));
        assert!(!ap("crm.*").covers(&ap("crmx.*")));
        assert!(!ap("crm.read").covers(&ap("crm.*")));
        assert!(!ap("crm.*").covers(&ap("*")));
        assert!(ap("*").covers(&ap("*")));
    }

    #[test]
    fn grammar() {
        for bad in [
            "", ".", "a..b", "a.", ".a", "a*", "a.*.b", "*.a", "A.b", "a b", "a.**",
        ] {
            assert!(ActionPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ActionName::parse("a.*").is_err());
        assert!(ResourcePattern::parse("customer:*").is_ok());
        assert!(ResourceName::parse("doc:report.pdf").is_ok());
        assert!(ResourceName::parse("doc::x").is_err());
        assert!(ActionPattern::parse(&"a".repeat(MAX_STRING_BYTES + 1)).is_err());
    }

    fn arb_pattern() -> impl Strategy<Value = ActionPattern> {
        prop_oneof![
            Just(ap("*")),
            "[ab]{1,2}(\\.[ab]{1,2}){0,2}".prop_map(|s| ap(&s)),
            "[ab]{1,2}(\\.[ab]{1,2}){0,2}".prop_map(|s| ap(&format!("{s}.*"))),
        ]
    }

    proptest! {
        /// Covering is sound: if p covers q, every name q matches, p matches.
        #[test]
        fn covers_is_sound(p in arb_pattern(), q in arb_pattern(), n in "[ab]{1,2}(\\.[ab]{1,2}){0,3}") {
            let n = an(&n);
            if p.covers(&q) && q.matches(&n) {
                prop_assert!(p.matches(&n));
            }
        }
    }
}
