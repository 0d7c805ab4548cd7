//! Why one source of a download failed, typed: the driver builds a
//! [`SourceFailure`] where the attempt ends, the core words it for the
//! menu and the events, and `/metrics` counts it by [`SourceFailure::label`].

use super::downloads::BadReply;
use crate::units;
use std::fmt;

/// How one attempt at one source failed. Its `Display` is a verb phrase
/// that follows the source's name: "carol closed mid-transfer at 111.0 MiB".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceFailure {
    /// The connection could not be made (the OS's reason).
    Connect(String),
    /// The source answered that it does not have the file.
    NotFound,
    /// Not one byte of the reply came within the idle timeout.
    Timeout,
    /// The reply stopped moving after `at` data bytes.
    Stalled {
        /// Data bytes received before it went silent.
        at: u64,
    },
    /// The connection closed (or was reset) after `at` data bytes.
    Closed {
        /// Data bytes received before the close.
        at: u64,
    },
    /// The whole reply holds a size other than the advertised one.
    WrongSize {
        /// Bytes sent.
        sent: u64,
        /// The size as the catalog knows it (integer bytes or the peer's
        /// float figure), as shown.
        advertised: String,
        /// Both are shown in exact bytes (in binary units they would read
        /// the same: 307 199 and 307 200 are both 300.0 KiB).
        exact: bool,
    },
    /// A complete copy whose bytes don't match the file id.
    Mismatch,
    /// The reply holds more bytes than allowed.
    TooLarge,
    /// The reply is not a FILE_DATA for the file (the decoder's or the
    /// parser's sentence).
    Malformed(String),
    /// Our side could not write or store the bytes (kept short).
    Disk(String),
    /// The source is no longer tracked: it was not tried.
    Untracked,
}

impl SourceFailure {
    /// The reason as a snake_case label, for `/metrics`.
    pub fn label(&self) -> &'static str {
        match self {
            SourceFailure::Connect(_) => "connect",
            SourceFailure::NotFound => "not_found",
            SourceFailure::Timeout => "timeout",
            SourceFailure::Stalled { .. } => "stalled",
            SourceFailure::Closed { .. } => "closed",
            SourceFailure::WrongSize { .. } => "wrong_size",
            SourceFailure::Mismatch => "mismatch",
            SourceFailure::TooLarge => "too_large",
            SourceFailure::Malformed(_) => "malformed",
            SourceFailure::Disk(_) => "disk",
            SourceFailure::Untracked => "untracked",
        }
    }
}

impl fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceFailure::Connect(why) => write!(f, "could not be reached ({why})"),
            SourceFailure::NotFound => write!(f, "does not have the file"),
            SourceFailure::Timeout => write!(f, "timed out before the first byte"),
            SourceFailure::Stalled { at } => write!(f, "went silent at {}", units::bytes(*at)),
            SourceFailure::Closed { at: 0 } => {
                write!(f, "closed the connection before sending any data")
            }
            SourceFailure::Closed { at } => {
                write!(f, "closed mid-transfer at {}", units::bytes(*at))
            }
            SourceFailure::WrongSize {
                sent,
                advertised,
                exact: true,
            } => write!(f, "sent {sent} bytes, not the advertised {advertised}"),
            SourceFailure::WrongSize {
                sent, advertised, ..
            } => write!(
                f,
                "sent {}, not the advertised {advertised}",
                units::bytes(*sent)
            ),
            SourceFailure::Mismatch => write!(f, "sent bytes that don't match the id"),
            SourceFailure::TooLarge => write!(
                f,
                "sent more bytes than allowed (the advertised size or --max-file-size)"
            ),
            SourceFailure::Malformed(why) => write!(f, "sent a malformed reply ({why})"),
            SourceFailure::Disk(why) => write!(f, "could not be stored here ({why})"),
            SourceFailure::Untracked => write!(f, "is no longer tracked"),
        }
    }
}

impl SourceFailure {
    /// Whether bytes a source sent before failing so are as good as any:
    /// the transfer broke (closed, stalled, timed out, unreachable), not
    /// the source's reply (which makes everything it sent suspect).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            SourceFailure::Connect(_)
                | SourceFailure::Timeout
                | SourceFailure::Stalled { .. }
                | SourceFailure::Closed { .. }
        )
    }
}

impl From<BadReply> for SourceFailure {
    fn from(bad: BadReply) -> Self {
        match bad {
            BadReply::NotFound => SourceFailure::NotFound,
            BadReply::WrongSize { sent, advertised } => {
                let exact = units::bytes(sent) == units::bytes(advertised);
                SourceFailure::WrongSize {
                    sent,
                    advertised: if exact {
                        advertised.to_string()
                    } else {
                        units::bytes(advertised)
                    },
                    exact,
                }
            }
            BadReply::BeyondRounding { sent, advertised } => SourceFailure::WrongSize {
                sent,
                advertised: advertised.to_string(),
                exact: false,
            },
            BadReply::Malformed(e) => SourceFailure::Malformed(e.to_string()),
            other @ (BadReply::NotFileData(_)
            | BadReply::OtherFile(_)
            | BadReply::NoData
            | BadReply::WrongRange { .. }
            | BadReply::NotThePiece { .. }) => SourceFailure::Malformed(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_byte_position_where_it_helps() {
        let mib = 1024 * 1024;
        assert_eq!(
            SourceFailure::Closed { at: 111 * mib }.to_string(),
            "closed mid-transfer at 111.0 MiB"
        );
        assert_eq!(
            SourceFailure::Stalled { at: 5 * mib }.to_string(),
            "went silent at 5.0 MiB"
        );
        assert_eq!(
            SourceFailure::Closed { at: 0 }.to_string(),
            "closed the connection before sending any data"
        );
        assert_eq!(
            SourceFailure::WrongSize {
                sent: 10,
                advertised: "12 B".into(),
                exact: false,
            }
            .to_string(),
            "sent 10 B, not the advertised 12 B"
        );
        let near: SourceFailure = BadReply::WrongSize {
            sent: 307_199,
            advertised: 307_200,
        }
        .into();
        assert_eq!(
            near.to_string(),
            "sent 307199 bytes, not the advertised 307200",
            "sizes that would read the same are shown exactly"
        );
    }

    #[test]
    fn every_failure_reads_as_a_phrase_after_the_source_name() {
        let all = [
            SourceFailure::Connect("Connection refused (os error 111)".into()),
            SourceFailure::NotFound,
            SourceFailure::Timeout,
            SourceFailure::Mismatch,
            SourceFailure::TooLarge,
            SourceFailure::Malformed("not JSON".into()),
            SourceFailure::Disk("No space left on device".into()),
            SourceFailure::Untracked,
        ];
        for f in all {
            let s = f.to_string();
            assert!(
                s.chars().next().is_some_and(|c| c.is_ascii_lowercase()),
                "{s}"
            );
            assert!(!s.ends_with('.'), "{s}");
        }
    }

    #[test]
    fn labels_are_the_metrics_reasons() {
        assert_eq!(SourceFailure::Timeout.label(), "timeout");
        assert_eq!(SourceFailure::Stalled { at: 1 }.label(), "stalled");
        assert_eq!(SourceFailure::Closed { at: 1 }.label(), "closed");
        assert_eq!(SourceFailure::Mismatch.label(), "mismatch");
        assert_eq!(SourceFailure::NotFound.label(), "not_found");
        assert_eq!(SourceFailure::Disk(String::new()).label(), "disk");
    }
}
