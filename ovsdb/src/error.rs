//! OVSDB errors as RFC 7047 names them: a tag (`"syntax error"`,
//! `"constraint violation"`, ...) and details. On the wire they are
//! `{"error": TAG, "details": DETAILS}`.
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{tag}: {details}")]
pub struct OvsdbError {
    pub tag: &'static str,
    pub details: String,
    /// For syntax errors, the JSON text that was wrong (OVS's "syntax" member).
    pub syntax: Option<String>,
}

impl OvsdbError {
    pub fn new(tag: &'static str, details: impl Into<String>) -> Self {
        OvsdbError { tag, details: details.into(), syntax: None }
    }
    pub fn syntax(details: impl Into<String>) -> Self {
        Self::new("syntax error", details)
    }
    pub fn constraint(details: impl Into<String>) -> Self {
        Self::new("constraint violation", details)
    }
    /// Records the offending JSON, as OVS reports it.
    pub fn with_syntax(mut self, v: &Value) -> Self {
        self.syntax = Some(v.to_string());
        self
    }

    pub fn to_json(&self) -> Value {
        match &self.syntax {
            Some(s) => json!({"error": self.tag, "details": self.details, "syntax": s}),
            None => json!({"error": self.tag, "details": self.details}),
        }
    }
}

pub type Result<T> = std::result::Result<T, OvsdbError>;

/// A short rendering of a JSON value for error messages.
pub fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 { format!("{}...", &s[..s.floor_char_boundary(77)]) } else { s }
}
