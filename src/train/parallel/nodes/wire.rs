//! The messages between the nodes and the orchestrator, as frames on a TCP stream: a tag
//! byte, the payload's length (u64, little-endian), the payload. Values travel as
//! little-endian f32; everything else as JSON or UTF-8 text.

use std::io::{Read, Write};

/// Control frames (a hello, a refusal) are small; a larger one is refused unread.
pub(super) const MAX_CONTROL_BYTES: usize = 16 << 20;

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const REFUSED: u8 = 3;
const VALUES: u8 = 4;
const LEAVE: u8 = 5;

/// One message.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Frame {
    /// A worker introduces itself (a [`super::Hello`] as JSON).
    Hello(Vec<u8>),
    /// Every worker has joined and agrees: the run starts.
    Welcome,
    /// The run cannot go on, and why: a disagreement at joining, a worker lost later.
    Refused(String),
    /// The `seq`-th reduction: a worker's contribution (`None`: it takes part without
    /// values) or the orchestrator's result.
    Values { seq: u64, values: Option<Vec<f32>> },
    /// A worker is done with the run.
    Leave,
}

/// Writes `frame` whole.
pub(super) fn write_frame(stream: &mut impl Write, frame: &Frame) -> std::io::Result<()> {
    write_encoded(stream, &encode(frame))
}

/// Writes a frame [`encode`]d before (once for every receiver of the same frame).
pub(super) fn write_encoded(stream: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}

/// `frame`'s bytes on the wire.
pub(super) fn encode(frame: &Frame) -> Vec<u8> {
    match frame {
        Frame::Hello(json) => with_header(HELLO, json),
        Frame::Welcome => with_header(WELCOME, &[]),
        Frame::Refused(reason) => with_header(REFUSED, reason.as_bytes()),
        Frame::Values { seq, values } => encode_values(*seq, values.as_deref()),
        Frame::Leave => with_header(LEAVE, &[]),
    }
}

/// The bytes of a values frame, written straight from `values` (a gradient vector is not
/// copied on its way).
pub(super) fn encode_values(seq: u64, values: Option<&[f32]>) -> Vec<u8> {
    let count = values.map_or(0, <[f32]>::len);
    let len = 9 + 4 * count;
    let mut bytes = Vec::with_capacity(9 + len);
    bytes.push(VALUES);
    bytes.extend_from_slice(&(len as u64).to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.push(u8::from(values.is_some()));
    for value in values.unwrap_or_default() {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

fn with_header(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.push(tag);
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads one frame. `max_values` bounds a values frame (the run's largest reduction); any
/// other frame is bounded by [`MAX_CONTROL_BYTES`]. A frame that is malformed or too large
/// is an `InvalidData` error.
pub(super) fn read_frame(stream: &mut impl Read, max_values: usize) -> std::io::Result<Frame> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head)?;
    let tag = head[0];
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    let max = match tag {
        VALUES => 9 + 4 * max_values,
        _ => MAX_CONTROL_BYTES,
    };
    if len > max as u64 {
        return Err(invalid(format!("a frame of {len} bytes (at most {max})")));
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    match tag {
        HELLO => Ok(Frame::Hello(payload)),
        WELCOME => Ok(Frame::Welcome),
        REFUSED => Ok(Frame::Refused(
            String::from_utf8_lossy(&payload).into_owned(),
        )),
        VALUES => parse_values(&payload),
        LEAVE => Ok(Frame::Leave),
        other => Err(invalid(format!("an unknown frame tag {other}"))),
    }
}

fn parse_values(payload: &[u8]) -> std::io::Result<Frame> {
    if payload.len() < 9 || !(payload.len() - 9).is_multiple_of(4) || payload[8] > 1 {
        return Err(invalid("a malformed values frame".into()));
    }
    let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let values = (payload[8] == 1).then(|| {
        payload[9..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect()
    });
    Ok(Frame::Values { seq, values })
}

fn invalid(reason: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_as_written() {
        let frames = [
            Frame::Hello(b"{\"a\":1}".to_vec()),
            Frame::Welcome,
            Frame::Refused("node 1 differs".into()),
            Frame::Values {
                seq: 7,
                values: Some(vec![1.5, -0.0, f32::MAX]),
            },
            Frame::Values {
                seq: 8,
                values: None,
            },
            Frame::Leave,
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            write_frame(&mut bytes, frame).unwrap();
        }
        let mut reader = bytes.as_slice();
        for frame in &frames {
            assert_eq!(&read_frame(&mut reader, 3).unwrap(), frame);
        }
        assert!(reader.is_empty());
    }

    #[test]
    fn oversized_unknown_and_cut_frames_are_errors() {
        let mut bytes = Vec::new();
        let values = Some(vec![0.0; 4]);
        write_frame(&mut bytes, &Frame::Values { seq: 0, values }).unwrap();
        let error = read_frame(&mut bytes.as_slice(), 3).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        let unknown = [9u8, 0, 0, 0, 0, 0, 0, 0, 0];
        let error = read_frame(&mut unknown.as_slice(), 3).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        let error = read_frame(&mut &bytes[..12], 4).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        let huge = [HELLO, 0, 0, 0, 0, 0, 0, 0, 1];
        let error = read_frame(&mut huge.as_slice(), 3).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    }
}
