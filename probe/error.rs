//! The library's error type. Its variant decides the documented exit code.

use std::io;

/// Why a command could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something that cannot be done as asked (exit 2).
    #[error("{0}")]
    Usage(String),
    /// An input file or value the user named could not be read (exit 2).
    // The cause is part of the one-line message, not a separate source, so
    // a rendered error chain does not say it twice.
    #[error("{path}: {cause}")]
    Input { path: String, cause: io::Error },
    /// The probe itself could not run here: missing privilege, tool or kernel
    /// feature (exit 3).
    #[error("{0}")]
    Unavailable(String),
    /// An operating-system call failed while probing (exit 3).
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn unavailable(msg: impl Into<String>) -> Self {
        Error::Unavailable(msg.into())
    }

    pub fn io(context: impl Into<String>, cause: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }

    /// The exit code documented in the README for this kind of failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Input { .. } => crate::report::EXIT_USAGE,
            Error::Unavailable(_) | Error::Io { .. } => crate::report::EXIT_UNAVAILABLE,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
