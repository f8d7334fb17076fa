//! Parsers of dataset file formats, from bytes: the trainer reads the files
//! (this crate never touches the file system), these check every length
//! and count before trusting it, so hostile bytes give an error, not a
//! panic, an overflow or an unbounded allocation.

use crate::error::{AtopError, Result};

fn bad(source_name: &str, reason: impl Into<String>) -> AtopError {
    AtopError::Format {
        source_name: source_name.into(),
        reason: reason.into(),
    }
}

/// IDX files (MNIST, Fashion-MNIST) of unsigned bytes.
pub mod idx {
    use super::*;

    fn be_u32(bytes: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    /// Parses an IDX file of unsigned bytes: returns (dims, data).
    pub fn parse(source_name: &str, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>)> {
        if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
            return Err(bad(source_name, "not an IDX file (bad magic number)"));
        }
        if bytes[2] != 0x08 {
            return Err(bad(
                source_name,
                format!("IDX element type 0x{:02x} is not unsigned byte", bytes[2]),
            ));
        }
        let rank = bytes[3] as usize;
        let header = 4 + 4 * rank;
        if rank == 0 || bytes.len() < header {
            return Err(bad(source_name, "truncated IDX header"));
        }
        let dims: Vec<usize> = (0..rank)
            .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
            .collect();
        // Checked: a hostile header (dimensions 0xFFFFFFFF) must not overflow.
        let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let data = &bytes[header..];
        if count != Some(data.len()) {
            let count = count.map_or("more than usize::MAX".to_string(), |c| c.to_string());
            return Err(bad(
                source_name,
                format!(
                    "IDX header promises {count} values ({dims:?}) but the file holds {}",
                    data.len()
                ),
            ));
        }
        Ok((dims, data.to_vec()))
    }
}

/// CIFAR-10 and CIFAR-100 binary batches.
pub mod cifar {
    use super::*;

    /// Values per image: 3 x 32 x 32.
    pub const PIXELS: usize = 3 * 32 * 32;

    /// Parses one binary batch. CIFAR-10 records are `label, 3072 pixels`;
    /// CIFAR-100 records are `coarse, fine, 3072 pixels` (the fine label is
    /// used). Returns the images in [0,1] (CHW per image) and the labels.
    pub fn parse(source_name: &str, bytes: &[u8], cifar100: bool) -> Result<(Vec<f32>, Vec<i64>)> {
        let label_bytes = if cifar100 { 2 } else { 1 };
        let record = label_bytes + PIXELS;
        if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
            return Err(bad(
                source_name,
                format!(
                    "{} bytes is not a whole number of {record}-byte CIFAR{} records (truncated or wrong file?)",
                    bytes.len(),
                    if cifar100 { "-100" } else { "-10" }
                ),
            ));
        }
        let classes = if cifar100 { 100 } else { 10 };
        let n = bytes.len() / record;
        let mut images = Vec::with_capacity(n * PIXELS);
        let mut labels = Vec::with_capacity(n);
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[label_bytes - 1] as i64;
            if label >= classes {
                return Err(bad(
                    source_name,
                    format!("record {i} has label {label}, outside the {classes} classes"),
                ));
            }
            labels.push(label);
            images.extend(rec[label_bytes..].iter().map(|&p| p as f32 / 255.0));
        }
        Ok((images, labels))
    }
}
