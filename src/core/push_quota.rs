//! The quota on unsolicited pushes (a FILE_DATA nobody asked for): how many
//! pushes, and how many of their bytes, each source and all sources
//! together may send within a sliding window.
//!
//! A push names no sender we could trust (its header carries no peerId), so
//! a source is the connection's remote IP address. Sans-IO: the time is
//! passed in. The driver asks [`PushQuota::admit`] before a push's first
//! data byte reaches the disk and [`PushQuota::add_bytes`] before each
//! later piece; a refusal closes the connection (its temp file is removed).

use crate::core::time::Time;
use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// The sliding window the quota counts over.
pub const PUSH_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Pushes one source may start per window: a peer pushing a few files of
/// its user's to us is well within it; a script filling our folder is not.
pub const PER_SOURCE_PUSHES: usize = 16;

/// Bytes one source may push per window (256 MiB: several large files).
pub const PER_SOURCE_BYTES: u64 = 256 * 1024 * 1024;

/// Pushes all sources together may start per window (four busy sources).
pub const TOTAL_PUSHES: usize = 64;

/// Bytes all sources together may push per window (1 GiB: what a user
/// notices on a disk, at most 144 GiB a day).
pub const TOTAL_BYTES: u64 = 1024 * 1024 * 1024;

/// Refusals are logged at most once per this long (the line says how many).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Why a push was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The source started [`PER_SOURCE_PUSHES`] pushes within the window.
    SourcePushes,
    /// The source pushed [`PER_SOURCE_BYTES`] within the window.
    SourceBytes,
    /// All sources started [`TOTAL_PUSHES`] within the window.
    TotalPushes,
    /// All sources pushed [`TOTAL_BYTES`] within the window.
    TotalBytes,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mins = PUSH_WINDOW.as_secs() / 60;
        match self {
            Refusal::SourcePushes => {
                write!(
                    f,
                    "{PER_SOURCE_PUSHES} pushes from one address in {mins} min"
                )
            }
            Refusal::SourceBytes => write!(
                f,
                "{} MiB pushed from one address in {mins} min",
                PER_SOURCE_BYTES >> 20
            ),
            Refusal::TotalPushes => write!(f, "{TOTAL_PUSHES} pushes in {mins} min"),
            Refusal::TotalBytes => {
                write!(f, "{} MiB pushed in {mins} min", TOTAL_BYTES >> 20)
            }
        }
    }
}

/// One admitted push, as [`PushQuota::admit`] numbered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushTicket(u64);

/// One admitted push in the window.
#[derive(Debug)]
struct Push {
    ticket: u64,
    source: IpAddr,
    bytes: u64,
    /// Its last byte (a push still streaming stays in the window).
    last: Time,
}

/// Pushes admitted within the window. At most [`TOTAL_PUSHES`] are
/// remembered, so its memory is bounded whatever arrives.
#[derive(Debug, Default)]
pub struct PushQuota {
    pushes: VecDeque<Push>,
    next_ticket: u64,
    /// Refusals since the last log line, and when that line was written.
    unlogged: u64,
    logged_at: Option<Time>,
    last_refusal: Option<Refusal>,
    /// Refusals since start (for `/metrics`).
    refused_total: u64,
}

impl PushQuota {
    /// An empty quota.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets pushes whose last byte is older than the window.
    fn expire(&mut self, now: Time) {
        self.pushes.retain(|p| now.since(p.last) < PUSH_WINDOW);
    }

    /// A push from `source` is about to write its first byte: admitted
    /// (counted) or refused.
    pub fn admit(&mut self, now: Time, source: IpAddr) -> Result<PushTicket, Refusal> {
        let source = source_of(source);
        self.expire(now);
        let (n, bytes) = self.used_by(Some(source));
        let (total_n, total_bytes) = self.used_by(None);
        if n >= PER_SOURCE_PUSHES {
            return Err(self.refused(Refusal::SourcePushes));
        }
        if bytes >= PER_SOURCE_BYTES {
            return Err(self.refused(Refusal::SourceBytes));
        }
        if total_n >= TOTAL_PUSHES {
            return Err(self.refused(Refusal::TotalPushes));
        }
        if total_bytes >= TOTAL_BYTES {
            return Err(self.refused(Refusal::TotalBytes));
        }
        self.next_ticket += 1;
        self.pushes.push_back(Push {
            ticket: self.next_ticket,
            source,
            bytes: 0,
            last: now,
        });
        Ok(PushTicket(self.next_ticket))
    }

    /// `n` more bytes of an admitted push are about to be written: counted,
    /// or refused if they would take its source or everyone past the
    /// byte quota (then the push ends: nothing more of it is counted).
    pub fn add_bytes(&mut self, now: Time, ticket: PushTicket, n: u64) -> Result<(), Refusal> {
        let Some(i) = self.pushes.iter().position(|p| p.ticket == ticket.0) else {
            // Only a push idle for a whole window is forgotten, and the
            // driver closes idle connections long before that.
            return Err(self.refused(Refusal::TotalBytes));
        };
        let source = self.pushes[i].source;
        let (_, bytes) = self.used_by(Some(source));
        let (_, total_bytes) = self.used_by(None);
        if bytes.saturating_add(n) > PER_SOURCE_BYTES {
            return Err(self.refused(Refusal::SourceBytes));
        }
        if total_bytes.saturating_add(n) > TOTAL_BYTES {
            return Err(self.refused(Refusal::TotalBytes));
        }
        let p = &mut self.pushes[i];
        p.bytes += n;
        p.last = now;
        Ok(())
    }

    /// Pushes and bytes within the window, of one source or of all.
    fn used_by(&self, source: Option<IpAddr>) -> (usize, u64) {
        self.pushes
            .iter()
            .filter(|p| source.is_none_or(|s| p.source == s))
            .fold((0, 0), |(n, b), p| (n + 1, b.saturating_add(p.bytes)))
    }

    fn refused(&mut self, why: Refusal) -> Refusal {
        self.unlogged += 1;
        self.refused_total += 1;
        self.last_refusal = Some(why);
        why
    }

    /// Pushes refused since start.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }

    /// Whether a refusal line is due now (the first, then at most one per
    /// [`REFUSAL_LOG_EVERY`]): the number of refusals it covers and the
    /// latest one's reason.
    pub fn refusals_to_log(&mut self, now: Time) -> Option<(u64, Refusal)> {
        let why = self.last_refusal?;
        if self.unlogged == 0 {
            return None;
        }
        if self
            .logged_at
            .is_some_and(|t| now.since(t) < REFUSAL_LOG_EVERY)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some((std::mem::take(&mut self.unlogged), why))
    }
}

/// The source a quota counts for an address: an IPv4 address as itself
/// (IPv4-mapped IPv6 included), an IPv6 address by its /64, since one host
/// usually holds a whole /64 and could otherwise take a fresh address per
/// push.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ipv6_host_counts_as_one_source_for_its_whole_64() {
        let mut q = PushQuota::new();
        let t = Time(0);
        for i in 0..PER_SOURCE_PUSHES as u16 {
            let ip: IpAddr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, i).into();
            assert!(q.admit(t, ip).is_ok());
        }
        let next: IpAddr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 7, 7, 7, 7).into();
        assert_eq!(q.admit(t, next).err(), Some(Refusal::SourcePushes));
        let other: IpAddr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1).into();
        assert!(q.admit(t, other).is_ok());
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_same_source_as_the_ipv4_one() {
        let mut q = PushQuota::new();
        let v4: IpAddr = std::net::Ipv4Addr::new(127, 0, 0, 1).into();
        let mapped: IpAddr = std::net::Ipv4Addr::new(127, 0, 0, 1)
            .to_ipv6_mapped()
            .into();
        for _ in 0..PER_SOURCE_PUSHES / 2 {
            assert!(q.admit(Time(0), v4).is_ok());
            assert!(q.admit(Time(0), mapped).is_ok());
        }
        assert_eq!(q.admit(Time(0), mapped).err(), Some(Refusal::SourcePushes));
    }

    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn one_source_gets_its_count_then_is_refused_until_the_window_passes() {
        let mut q = PushQuota::new();
        let t = Time(1000);
        for _ in 0..PER_SOURCE_PUSHES {
            assert!(q.admit(t, ip(1)).is_ok());
        }
        assert_eq!(q.admit(t, ip(1)), Err(Refusal::SourcePushes));
        // Another source is not affected.
        assert!(q.admit(t, ip(2)).is_ok());
        assert_eq!(
            q.admit(t.plus(PUSH_WINDOW / 2), ip(1)),
            Err(Refusal::SourcePushes)
        );
        assert!(q.admit(t.plus(PUSH_WINDOW), ip(1)).is_ok());
    }

    #[test]
    fn the_total_count_binds_many_sources() {
        let mut q = PushQuota::new();
        let t = Time(0);
        let mut admitted = 0;
        for s in 0..=255u8 {
            while q.admit(t, ip(s)).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, TOTAL_PUSHES);
        assert_eq!(q.admit(t, ip(7)), Err(Refusal::TotalPushes));
    }

    #[test]
    fn bytes_past_the_source_quota_are_refused_and_a_new_push_too() {
        let mut q = PushQuota::new();
        let t = Time(0);
        let a = q.admit(t, ip(1)).unwrap();
        assert!(q.add_bytes(t, a, PER_SOURCE_BYTES - 10).is_ok());
        assert_eq!(q.add_bytes(t, a, 11), Err(Refusal::SourceBytes));
        assert!(q.add_bytes(t, a, 10).is_ok());
        assert_eq!(q.admit(t, ip(1)), Err(Refusal::SourceBytes));
        assert!(q.admit(t, ip(2)).is_ok());
    }

    #[test]
    fn total_bytes_bind_all_sources_together() {
        let mut q = PushQuota::new();
        let t = Time(0);
        let per = PER_SOURCE_BYTES;
        for s in 0..(TOTAL_BYTES / per) as u8 {
            let k = q.admit(t, ip(s)).unwrap();
            assert!(q.add_bytes(t, k, per).is_ok());
        }
        assert_eq!(q.admit(t, ip(200)), Err(Refusal::TotalBytes));
    }

    #[test]
    fn a_push_still_streaming_stays_counted_past_the_window() {
        let mut q = PushQuota::new();
        let a = q.admit(Time(0), ip(1)).unwrap();
        let mut t = Time(0);
        for _ in 0..4 {
            t = t.plus(PUSH_WINDOW / 2);
            assert!(q.add_bytes(t, a, 1).is_ok());
        }
        assert_eq!(q.used_by(Some(ip(1))), (1, 4));
    }

    #[test]
    fn refusals_are_logged_once_a_minute_with_their_count() {
        let mut q = PushQuota::new();
        let t = Time(0);
        for _ in 0..PER_SOURCE_PUSHES {
            q.admit(t, ip(1)).unwrap();
        }
        assert_eq!(q.refusals_to_log(t), None);
        for _ in 0..5 {
            let _ = q.admit(t, ip(1));
        }
        assert_eq!(q.refusals_to_log(t), Some((5, Refusal::SourcePushes)));
        let _ = q.admit(t, ip(1));
        assert_eq!(q.refusals_to_log(t.plus(Duration::from_secs(1))), None);
        assert_eq!(
            q.refusals_to_log(t.plus(REFUSAL_LOG_EVERY)),
            Some((1, Refusal::SourcePushes))
        );
        assert_eq!(q.refusals_to_log(t.plus(REFUSAL_LOG_EVERY * 3)), None);
    }
}
