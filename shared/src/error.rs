//! The library's error type. Every variant names what was wrong and where, so a
//! binary can print it as one line.

use thiserror::Error;

/// Errors from the shared crate. Messages read as sentences that name the
/// offending file, tensor, field or argument.
#[derive(Debug, Error)]
pub enum AtopError {
    /// A configuration value is outside its allowed range.
    #[error("invalid configuration `{field}`: {reason}")]
    Config { field: String, reason: String },

    /// An image batch or tensor has the wrong shape for the operation.
    #[error("wrong shape for {what}: expected {expected}, got {got:?}")]
    Shape {
        what: String,
        expected: String,
        got: Vec<usize>,
    },

    /// An artifact could not be read or does not match what it claims to hold.
    #[error("artifact {source_name}: {reason}")]
    Artifact { source_name: String, reason: String },

    /// A data file's bytes are not in the format they claim.
    #[error("{source_name}: {reason}")]
    Format { source_name: String, reason: String },

    /// Tensor data could not be converted (dtype or length mismatch).
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
}

impl AtopError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AtopError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl Into<String>,
        got: &[usize],
    ) -> Self {
        AtopError::Shape {
            what: what.into(),
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    pub(crate) fn artifact(source_name: impl Into<String>, reason: impl Into<String>) -> Self {
        AtopError::Artifact {
            source_name: source_name.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor(name: impl Into<String>, reason: impl Into<String>) -> Self {
        AtopError::Tensor {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for the shared crate.
pub type Result<T, E = AtopError> = std::result::Result<T, E>;
