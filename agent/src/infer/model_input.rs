//! The model's image input, read from the ONNX file itself (a few protobuf fields) before
//! any session exists: TensorRT needs the input's name and shape range when its provider
//! is set up, so that it builds one engine for every batch size at session creation
//! instead of a new engine whenever a batch of another size arrives.

use std::path::Path;

/// The first graph input that is not an initializer: its name and dimensions (None for
/// a symbolic dimension such as `batch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInput {
    pub name: String,
    pub dims: Vec<Option<i64>>,
}

impl ModelInput {
    /// TensorRT's min/opt/max profile shapes (`name:1x3x416x416`) covering batches of 1
    /// to `max_batch`, with `side` for a symbolic height or width; None when a dimension
    /// other than those stays unknown.
    pub fn profile(&self, max_batch: usize, side: usize) -> Option<(String, String, String)> {
        let shape = |batch: usize| -> Option<String> {
            let dims: Option<Vec<String>> = self
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| match (i, d) {
                    (_, Some(v)) if *v > 0 => Some(v.to_string()),
                    (0, _) => Some(batch.to_string()),
                    (2 | 3, _) if side > 0 => Some(side.to_string()),
                    _ => None,
                })
                .collect();
            Some(format!("{}:{}", self.name, dims?.join("x")))
        };
        Some((shape(1)?, shape(max_batch)?, shape(max_batch)?))
    }
}

/// Reads the input from `model`; None when the file is not a readable ONNX model (the
/// session creation that follows reports that properly).
pub fn read(model: &Path) -> Option<ModelInput> {
    let bytes = std::fs::read(model).ok()?;
    from_bytes(&bytes)
}

fn from_bytes(model: &[u8]) -> Option<ModelInput> {
    // ModelProto.graph = 7; GraphProto.initializer = 5, .input = 11.
    let graph = fields(model)
        .filter(|f| f.0 == 7)
        .filter_map(|f| f.1)
        .last()?;
    let mut initializers = Vec::new();
    let mut inputs = Vec::new();
    for (no, data) in fields(graph) {
        match (no, data) {
            // TensorProto.name = 8
            (5, Some(t)) => initializers.extend(string_field(t, 8)),
            (11, Some(v)) => inputs.push(v),
            _ => {}
        }
    }
    inputs.into_iter().find_map(|v| {
        // ValueInfoProto.name = 1, .type = 2; TypeProto.tensor_type = 1;
        // Tensor.shape = 2; TensorShapeProto.dim = 1; Dimension.dim_value = 1.
        let name = string_field(v, 1)?;
        if initializers.contains(&name) {
            return None;
        }
        let tensor = message_field(message_field(v, 2)?, 1)?;
        let shape = message_field(tensor, 2)?;
        let dims = fields(shape)
            .filter(|f| f.0 == 1)
            .filter_map(|f| f.1)
            .map(|dim| {
                let mut value = None;
                let mut i = 0;
                while i < dim.len() {
                    let (key, n) = varint(&dim[i..])?;
                    i += n;
                    match key & 7 {
                        0 => {
                            let (v, n) = varint(&dim[i..])?;
                            i += n;
                            if key >> 3 == 1 {
                                value = Some(v as i64);
                            }
                        }
                        2 => {
                            let (len, n) = varint(&dim[i..])?;
                            i += n + len as usize;
                        }
                        _ => return None,
                    }
                }
                value
            })
            .collect();
        Some(ModelInput { name, dims })
    })
}

fn message_field(msg: &[u8], no: u64) -> Option<&[u8]> {
    fields(msg).filter(|f| f.0 == no).find_map(|f| f.1)
}

fn string_field(msg: &[u8], no: u64) -> Option<String> {
    message_field(msg, no).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The fields of one protobuf message: (field number, Some(bytes) for length-delimited
/// fields, None for the others). Stops at the first malformed field.
fn fields(msg: &[u8]) -> impl Iterator<Item = (u64, Option<&[u8]>)> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= msg.len() {
            return None;
        }
        let (key, n) = varint(&msg[i..])?;
        i += n;
        let out = match key & 7 {
            0 => {
                let (_, n) = varint(&msg[i..])?;
                i += n;
                None
            }
            1 => {
                i += 8;
                None
            }
            2 => {
                let (len, n) = varint(&msg[i..])?;
                let start = i + n;
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                if end > msg.len() {
                    i = msg.len();
                    return None;
                }
                i = end;
                Some(&msg[start..end])
            }
            5 => {
                i += 4;
                None
            }
            _ => {
                i = msg.len();
                return None;
            }
        };
        Some((key >> 3, out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn len_field(no: u64, body: &[u8]) -> Vec<u8> {
        let mut out = varint_bytes((no << 3) | 2);
        out.extend(varint_bytes(body.len() as u64));
        out.extend_from_slice(body);
        out
    }

    fn dim_value(v: u64) -> Vec<u8> {
        len_field(1, &[vec![0x08], varint_bytes(v)].concat())
    }

    fn value_info(name: &str, dims: &[Vec<u8>]) -> Vec<u8> {
        let shape: Vec<u8> = dims.concat();
        let tensor = [vec![0x08, 0x01], len_field(2, &shape)].concat();
        let ty = len_field(1, &tensor);
        [len_field(1, name.as_bytes()), len_field(2, &ty)].concat()
    }

    #[test]
    fn the_first_real_input_and_its_symbolic_batch_are_read() {
        let batch = len_field(1, &len_field(2, b"batch"));
        let graph = [
            // An initializer listed as an input too (old exporters do that).
            len_field(5, &len_field(8, b"conv.weight")),
            len_field(11, &value_info("conv.weight", &[dim_value(8)])),
            len_field(
                11,
                &value_info(
                    "input",
                    &[batch, dim_value(3), dim_value(160), dim_value(160)],
                ),
            ),
        ]
        .concat();
        let model = [vec![0x08, 0x07], len_field(7, &graph)].concat();
        let input = from_bytes(&model).unwrap();
        assert_eq!(input.name, "input");
        assert_eq!(input.dims, vec![None, Some(3), Some(160), Some(160)]);
        assert_eq!(
            input.profile(4, 0),
            Some((
                "input:1x3x160x160".into(),
                "input:4x3x160x160".into(),
                "input:4x3x160x160".into()
            ))
        );
    }

    #[test]
    fn an_unknown_side_without_input_size_gives_no_profile_and_garbage_gives_nothing() {
        let input = ModelInput {
            name: "x".into(),
            dims: vec![None, Some(3), None, None],
        };
        assert_eq!(input.profile(2, 0), None);
        assert_eq!(
            input.profile(2, 416).unwrap().0,
            "x:1x3x416x416".to_string()
        );
        assert_eq!(from_bytes(b"not a model at all"), None);
        assert_eq!(from_bytes(&[]), None);
    }
}
