//! Every message format, in one leaf: the frame message (binary framing around a JSON
//! header and a JPEG), how crops travel in that JPEG and map back to camera pixels, and
//! the JSON bodies of detections, motion, incidents and status. escalate, transport,
//! infer and results import it; no other module knows a byte layout or a JSON shape.

pub mod detections;
pub mod frame;
pub mod regions;
/// The message contract's checker (the JSON Schemas in `schemas/`); the integration
/// tests include the same file.
#[cfg(test)]
pub(crate) mod schema;

pub use frame::{FrameHeader, FrameMessage, MessageError};

/// The `message_id` of a JSON event, when it is the object's first member (where the
/// publisher puts it: `uplink::with_message_id`); None otherwise. For the AMQP
/// `message_id` property, read without parsing the body. Ids are `<hex>-<hex>`: a
/// value with an escape is not one of ours and is left alone.
pub fn message_id_of(payload: &[u8]) -> Option<&str> {
    let rest = payload.trim_ascii_start().strip_prefix(b"{")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"message_id\"")?;
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let id = std::str::from_utf8(&rest[..end]).ok()?;
    (!id.is_empty() && !id.contains('\\')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::message_id_of;

    #[test]
    fn the_message_id_is_read_only_as_the_first_member() {
        let rows: [(&[u8], Option<&str>); 7] = [
            (br#"{"message_id":"a1-2f","x":1}"#, Some("a1-2f")),
            (br#" { "message_id" : "a1-2f" }"#, Some("a1-2f")),
            (br#"{"x":1,"message_id":"a1-2f"}"#, None),
            (br#"{"message_id":""}"#, None),
            (br#"{"message_id":"a\"b"}"#, None),
            (br#"{"message_id":"a1"#, None),
            (b"\xff\xd8jpeg", None),
        ];
        for (payload, want) in rows {
            assert_eq!(
                message_id_of(payload),
                want,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
