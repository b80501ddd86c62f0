//! Tests of `wire.rs` (kept apart: the module is long enough on its own).
use super::*;
use proptest::prelude::*;

fn frame_of(bytes: &[u8]) -> Result<Frame, FrameError> {
    read_frame(&mut &bytes[..])
}

fn stamp() -> impl Strategy<Value = WriteStamp> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(epoch, gen, seq, settled)| WriteStamp {
            epoch,
            gen,
            seq,
            settled,
        },
    )
}

fn map() -> impl Strategy<Value = Option<RegionMap>> {
    proptest::option::of(
        proptest::collection::vec(any::<u64>(), 0..8).prop_map(|words| {
            RegionMap::from_bytes(
                &words
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect::<Vec<_>>(),
            )
        }),
    )
}

fn request() -> impl Strategy<Value = Request> {
    let name = "[a-z0-9._-]{0,20}";
    prop_oneof![
        Just(Request::Info),
        (name, any::<u64>()).prop_map(|(name, size)| Request::CreateVolume { name, size }),
        name.prop_map(|name| Request::DeleteVolume { name }),
        (name, any::<u64>(), any::<u64>()).prop_map(|(volume, epoch, session)| {
            Request::Hello {
                volume,
                epoch,
                session,
            }
        }),
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(epoch, offset, len)| Request::Read {
            epoch,
            offset,
            len
        }),
        (
            stamp(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>()
        )
            .prop_map(|(stamp, offset, data, fua)| Request::Write {
                stamp,
                offset,
                data,
                fua
            }),
        (stamp(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(stamp, offset, len, fua)| Request::WriteZeroes {
                stamp,
                offset,
                len,
                fua
            }
        ),
        (stamp(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(stamp, offset, len, fua)| Request::Trim {
                stamp,
                offset,
                len,
                fua
            }
        ),
        any::<u64>().prop_map(|epoch| Request::Flush { epoch }),
        (any::<u64>(), any::<u64>()).prop_map(|(epoch, gen)| Request::DirtySince { epoch, gen }),
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(epoch, first, count)| {
            Request::RegionChecksums {
                epoch,
                first,
                count,
            }
        }),
        any::<u64>().prop_map(|epoch| Request::SettleAll { epoch }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let name = "[a-zé0-9._-]{0,12}";
    let code = prop_oneof![
        Just(ErrorCode::Fenced),
        Just(ErrorCode::NoSpace),
        Just(ErrorCode::NoVolume),
        Just(ErrorCode::Exists),
        Just(ErrorCode::Invalid),
        Just(ErrorCode::Io),
        Just(ErrorCode::Superseded),
    ];
    prop_oneof![
        (
            name,
            name,
            any::<u64>(),
            proptest::collection::vec(name, 0..4)
        )
            .prop_map(
                |(site, node, free_bytes, volumes)| Response::Info(ReplicaInfo {
                    site,
                    node,
                    free_bytes,
                    volumes
                })
            ),
        (any::<u64>(), any::<u128>(), any::<u64>(), map()).prop_map(
            |(size, instance, epoch, unsettled)| Response::Volume(VolumeState {
                size,
                instance,
                epoch,
                unsettled
            })
        ),
        Just(Response::Done),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Response::Data),
        map().prop_map(Response::Dirty),
        proptest::collection::vec(any::<[u8; 32]>(), 0..5).prop_map(Response::Checksums),
        (code, any::<u64>(), name).prop_map(|(code, seen, message)| Response::Error(WireError {
            code,
            seen,
            message
        })),
    ]
}

proptest! {
    #[test]
    fn every_request_round_trips(req in request(), id in any::<u64>()) {
        let bytes = req.encode(id);
        let frame = frame_of(&bytes).unwrap();
        prop_assert_eq!(frame.id, id);
        prop_assert_eq!(Request::decode(&frame).unwrap(), req);
    }

    #[test]
    fn every_response_round_trips(resp in response(), id in any::<u64>()) {
        let bytes = resp.encode(id);
        let frame = frame_of(&bytes).unwrap();
        prop_assert_eq!(frame.id, id);
        prop_assert_eq!(Response::decode(&frame).unwrap(), resp);
    }

    #[test]
    fn any_flipped_bit_is_caught(req in request(), bit in any::<proptest::sample::Index>()) {
        let mut bytes = req.encode(7);
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        // A flip in the length field may also show as a short read; never as a frame.
        prop_assert!(frame_of(&bytes).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(frame) = frame_of(&bytes) {
            let _ = Request::decode(&frame);
            let _ = Response::decode(&frame);
        }
        let frame = Frame { kind: bytes.first().copied().unwrap_or(0), flags: 0, id: 0, payload: bytes };
        let _ = Request::decode(&frame);
        let _ = Response::decode(&frame);
    }
}

#[test]
fn bad_magic_version_size_and_checksum_are_named() {
    let good = Request::Flush { epoch: 3 }.encode(1);
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(frame_of(&bad), Err(FrameError::BadMagic(_))));
    let mut v1 = good.clone();
    v1[3] = b'1';
    assert!(matches!(frame_of(&v1), Err(FrameError::Version('1'))));
    let mut big = good.clone();
    big[8..12].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    assert!(matches!(frame_of(&big), Err(FrameError::TooLarge(_))));
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        frame_of(&flipped),
        Err(FrameError::Checksum {
            kind: kind::FLUSH,
            id: 1
        })
    ));
    assert!(matches!(frame_of(&[]), Err(FrameError::Closed)));
    assert!(matches!(frame_of(&good[..10]), Err(FrameError::Io(_))));
    let mut fua_on_flush = Request::Flush { epoch: 3 }.encode(1);
    fua_on_flush[5] = FLAG_FUA;
    let frame = Frame {
        kind: kind::FLUSH,
        flags: FLAG_FUA,
        id: 1,
        payload: fua_on_flush[HEADER_LEN..HEADER_LEN + 8].to_vec(),
    };
    assert!(Request::decode(&frame).is_err());
}

#[test]
fn the_layout_is_the_documented_one() {
    // docs/VOLUMES.md: FLUSH epoch 3, id 1.
    let bytes = Request::Flush { epoch: 3 }.encode(1);
    assert_eq!(&bytes[..4], b"HVR2");
    assert_eq!(bytes[4], 0x09);
    assert_eq!(&bytes[8..12], &8u32.to_le_bytes());
    assert_eq!(&bytes[12..20], &1u64.to_le_bytes());
    assert_eq!(&bytes[20..28], &3u64.to_le_bytes());
    assert_eq!(bytes.len(), HEADER_LEN + 8 + CHECKSUM_LEN);
    assert_eq!(&bytes[28..], &crc32fast::hash(&bytes[..28]).to_le_bytes());
}

/// A writer that takes at most 5 bytes per call, gathered or not.
struct Dribble(Vec<u8>);

impl Write for Dribble {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(5);
        self.0.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_gathered_write_sends_the_bytes_of_the_encoded_frame() {
    let stamp = WriteStamp {
        epoch: 4,
        gen: 5,
        seq: 6,
        settled: 2,
    };
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut out = Dribble(vec![]);
    write_write(&mut out, 9, &stamp, 1 << 20, &data, true).unwrap();
    let encoded = Request::Write {
        stamp,
        offset: 1 << 20,
        data: data.clone(),
        fua: true,
    }
    .encode(9);
    assert!(out.0 == encoded, "write_write and encode differ");
    let frame = frame_of(&out.0).unwrap();
    assert!(
        matches!(Request::decode(&frame).unwrap(), Request::Write { data: d, .. } if d == data)
    );
}
