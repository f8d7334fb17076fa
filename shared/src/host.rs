//! Reading tensors back to the host. A failed read is an error that names
//! the tensor, never an empty vector that would count as "0 correct" or as a
//! healthy gradient.

use burn::tensor::{Bool, Element, Int, Tensor, TensorData};

use crate::error::{AtopError, Result};

/// The values of `data` as `E`, or an error naming `what`.
pub fn values<E: Element>(data: TensorData, what: &str) -> Result<Vec<E>> {
    let expected = data.num_elements();
    let values = data
        .try_into_vec::<E>()
        .map_err(|e| AtopError::tensor(what, format!("cannot be read back to the host: {e:?}")))?;
    if values.len() != expected {
        return Err(AtopError::tensor(
            what,
            format!("read back {} of its {expected} values", values.len()),
        ));
    }
    Ok(values)
}

pub fn floats<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    values(t.into_data().convert::<f32>(), what)
}

pub fn ints<const D: usize>(t: Tensor<D, Int>, what: &str) -> Result<Vec<i64>> {
    values(t.into_data().convert::<i64>(), what)
}

/// Booleans go through an integer tensor: backends store them differently
/// (bytes, 32-bit words), and a dtype mismatch must not read as "all false".
pub fn bools<const D: usize>(t: Tensor<D, Bool>, what: &str) -> Result<Vec<bool>> {
    Ok(ints(t.int(), what)?.into_iter().map(|v| v != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_of_the_wrong_kind_is_an_error_naming_the_tensor() {
        let ints = TensorData::new(vec![1i64, 2, 3], [3]);
        let err = values::<f32>(ints.clone(), "logits")
            .unwrap_err()
            .to_string();
        assert!(err.contains("logits") && err.contains("host"), "{err}");
        assert_eq!(values::<i64>(ints, "labels").unwrap(), [1, 2, 3]);
    }
}
