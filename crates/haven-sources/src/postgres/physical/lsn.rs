//! Write-ahead log positions and file names.
//!
//! An [`Lsn`] is a byte position in the WAL, written `X/Y` (two hexadecimal halves of a
//! 64-bit number). The WAL is cut into segments of `wal_segment_size` bytes (16 MiB by
//! default); a segment file is named by its timeline and segment number as
//! `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the segment number divided by the number of
//! segments per 4 GiB, then the remainder), a timeline's history file
//! `TTTTTTTT.history`, and a segment streamed before it was complete `<segment>.partial`.

use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad = || format!("{s:?} is not an LSN (two hexadecimal numbers like 3/5A0012C8)");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// What a file of the WAL archive is, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// A complete segment: timeline and segment number.
    Segment { timeline: u32, segno: u64 },
    /// A segment received before it was complete (`.partial`).
    Partial { timeline: u32, segno: u64 },
    /// A timeline's history (`TTTTTTTT.history`): which timelines it branched from, where.
    History { timeline: u32 },
    /// A backup history file (`<segment>.XXXXXXXX.backup`): the start and end of a base
    /// backup, informational.
    Backup {
        timeline: u32,
        segno: u64,
        offset: u32,
    },
}

impl WalFile {
    /// Parse an archive file name; `None` when it is none of the three kinds.
    pub fn parse(name: &str, segment_size: u64) -> Option<WalFile> {
        let hex = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(tli) = name.strip_suffix(".history") {
            return hex(tli).then(|| WalFile::History {
                timeline: u32::from_str_radix(tli, 16).unwrap_or(0),
            });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.rsplit_once('.')?;
            let offset = hex(offset).then(|| u32::from_str_radix(offset, 16).ok())??;
            return match WalFile::parse(segment, segment_size)? {
                WalFile::Segment { timeline, segno } => Some(WalFile::Backup {
                    timeline,
                    segno,
                    offset,
                }),
                _ => None,
            };
        }
        let (base, partial) = match name.strip_suffix(".partial") {
            Some(b) => (b, true),
            None => (name, false),
        };
        if base.len() != 24 || !(hex(&base[..8]) && hex(&base[8..16]) && hex(&base[16..])) {
            return None;
        }
        let num = |r: std::ops::Range<usize>| u64::from_str_radix(&base[r], 16).unwrap_or(0);
        let timeline = num(0..8) as u32;
        let per_xlogid = segments_per_xlogid(segment_size);
        let low = num(16..24);
        if low >= per_xlogid {
            return None;
        }
        let segno = num(8..16) * per_xlogid + low;
        Some(if partial {
            WalFile::Partial { timeline, segno }
        } else {
            WalFile::Segment { timeline, segno }
        })
    }

    /// The file name of this WAL file.
    pub fn name(&self, segment_size: u64) -> String {
        match *self {
            WalFile::Segment { timeline, segno } => segment_name(timeline, segno, segment_size),
            WalFile::Partial { timeline, segno } => {
                format!("{}.partial", segment_name(timeline, segno, segment_size))
            }
            WalFile::History { timeline } => format!("{timeline:08X}.history"),
            WalFile::Backup {
                timeline,
                segno,
                offset,
            } => format!(
                "{}.{offset:08X}.backup",
                segment_name(timeline, segno, segment_size)
            ),
        }
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalFile::Segment { timeline, .. }
            | WalFile::Partial { timeline, .. }
            | WalFile::History { timeline }
            | WalFile::Backup { timeline, .. } => timeline,
        }
    }

    /// The segment number, for segments and partial segments.
    pub fn segno(&self) -> Option<u64> {
        match *self {
            WalFile::Segment { segno, .. } | WalFile::Partial { segno, .. } => Some(segno),
            WalFile::History { .. } | WalFile::Backup { .. } => None,
        }
    }
}

fn segments_per_xlogid(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size.max(1)
}

/// The name of segment `segno` of `timeline`.
pub fn segment_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per = segments_per_xlogid(segment_size);
    format!("{timeline:08X}{:08X}{:08X}", segno / per, segno % per)
}

/// The segment holding `lsn`.
pub fn segment_of(lsn: Lsn, segment_size: u64) -> u64 {
    lsn.0 / segment_size.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    #[test]
    fn lsns_parse_and_print_like_postgres() {
        let l: Lsn = "3/5A0012C8".parse().unwrap();
        assert_eq!(l.0, 0x3_5A00_12C8);
        assert_eq!(l.to_string(), "3/5A0012C8");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("35A0012C8".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn segment_names_round_trip() {
        let lsn: Lsn = "3/5A0012C8".parse().unwrap();
        let segno = segment_of(lsn, MB16);
        let name = segment_name(1, segno, MB16);
        assert_eq!(name, "00000001000000030000005A");
        assert_eq!(
            WalFile::parse(&name, MB16),
            Some(WalFile::Segment { timeline: 1, segno })
        );
        let partial = format!("{name}.partial");
        assert_eq!(WalFile::parse(&partial, MB16).unwrap().name(MB16), partial);
        assert_eq!(
            WalFile::parse("0000000A.history", MB16),
            Some(WalFile::History { timeline: 10 })
        );
        // 1 GiB segments: four per 4 GiB, so the low part stops at 3.
        assert!(WalFile::parse("000000010000000000000004", 1 << 30).is_none());
        assert!(WalFile::parse("00000001000000000000000G", MB16).is_none());
        assert!(WalFile::parse("000000010000000000000001.backup", MB16).is_none());
        let backup = "000000010000000000000002.00000028.backup";
        assert_eq!(
            WalFile::parse(backup, MB16),
            Some(WalFile::Backup {
                timeline: 1,
                segno: 2,
                offset: 0x28
            })
        );
        assert_eq!(WalFile::parse(backup, MB16).unwrap().name(MB16), backup);
    }
}

/// What the first page of a WAL segment says (its long page header): the cluster it
/// belongs to, the segment size, the timeline and where the segment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub system_identifier: u64,
    pub segment_size: u32,
    pub timeline: u32,
    pub start: Lsn,
}

/// Read a segment's long page header (`XLogLongPageHeaderData`, little-endian: magic u16,
/// info u16, timeline u32, page address u64, remaining length u32, padding, system
/// identifier u64 at 24, segment size u32 at 32, block size u32 at 36). `None` when the
/// bytes are no segment start (a zeroed, recycled or foreign file).
pub fn segment_header(first_page: &[u8]) -> Option<SegmentHeader> {
    const XLP_LONG_HEADER: u16 = 0x0002;
    if first_page.len() < 40 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([first_page[o], first_page[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(first_page[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(first_page[o..o + 8].try_into().unwrap());
    let magic = u16_at(0);
    // Every WAL format since PostgreSQL 9.x has its magic at 0xD0xx.
    if magic & 0xFF00 != 0xD100 || u16_at(2) & XLP_LONG_HEADER == 0 {
        return None;
    }
    let segment_size = u32_at(32);
    if !segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&segment_size) {
        return None;
    }
    Some(SegmentHeader {
        system_identifier: u64_at(24),
        segment_size,
        timeline: u32_at(4),
        start: Lsn(u64_at(8)),
    })
}
