//! [`Limits`]: the tunable caps on shapes and tensor contents, and the shape
//! check shared by the decoder and the tensor readers.

use crate::error::{ProtocolError, Result};

/// Caps applied to every shape (`dims`) in a message and to every tensor read
/// from shared memory.
///
/// All arithmetic on shapes is checked, so any value here is memory-safe;
/// the caps bound how much memory a hostile peer can make the receiver
/// allocate (`max_elements * 4` bytes per tensor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of axes of a shape. Default 8.
    pub max_axes: usize,
    /// Each dim must be in `1..=max_dim`. Default 65536. (Zero dims are
    /// rejected; a negative `int` dim sent as `u32` is huge and rejected.)
    pub max_dim: u32,
    /// Maximum product of the dims of one shape. Default `1 << 26`
    /// (64 Mi elements = 256 MiB of f32).
    pub max_elements: usize,
    /// Maximum sum of the element counts of all tensors of one message
    /// (`InferResult.outputs`, the tensor inputs of `Infer`). Default
    /// `1 << 26`, so one reply makes the supervisor allocate at most 256 MiB.
    pub max_total_elements: usize,
    /// Reject tensors containing NaN or ±Inf (the error names the tensor and
    /// the flat index). Default `true`.
    pub reject_non_finite: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_axes: 8,
            max_dim: 65536,
            max_elements: 1 << 26,
            max_total_elements: 1 << 26,
            reject_non_finite: true,
        }
    }
}

impl Limits {
    /// Validates `dims` (any integer type) against these limits and returns
    /// the element count. `what` names the blob/tensor in errors.
    ///
    /// An empty shape is a scalar (1 element).
    pub fn check_shape<T: Copy + Into<u64>>(&self, what: &str, dims: &[T]) -> Result<usize> {
        if dims.len() > self.max_axes {
            return Err(ProtocolError::TooManyAxes {
                what: what.to_owned(),
                axes: dims.len() as u64,
                max: self.max_axes,
            });
        }
        let mut elements: usize = 1;
        for (axis, &d) in dims.iter().enumerate() {
            let d: u64 = d.into();
            if d == 0 || d > u64::from(self.max_dim) {
                return Err(ProtocolError::DimOutOfRange {
                    what: what.to_owned(),
                    axis,
                    value: d,
                    max: self.max_dim,
                });
            }
            elements = usize::try_from(d)
                .ok()
                .and_then(|d| elements.checked_mul(d))
                .ok_or_else(|| ProtocolError::ShapeOverflow {
                    what: what.to_owned(),
                    dims: dims.iter().map(|&d| d.into()).collect(),
                })?;
        }
        if elements > self.max_elements {
            return Err(ProtocolError::TooManyElements {
                what: what.to_owned(),
                elements: elements as u64,
                max: self.max_elements,
            });
        }
        Ok(elements)
    }
}

/// Sums per-tensor element counts of one message against
/// [`Limits::max_total_elements`].
pub(crate) struct TotalElements<'a> {
    limits: &'a Limits,
    field: &'static str,
    total: usize,
}

impl<'a> TotalElements<'a> {
    pub fn new(limits: &'a Limits, field: &'static str) -> Self {
        TotalElements {
            limits,
            field,
            total: 0,
        }
    }

    pub fn add(&mut self, elements: usize) -> Result<()> {
        match self.total.checked_add(elements) {
            Some(t) if t <= self.limits.max_total_elements => {
                self.total = t;
                Ok(())
            }
            t => Err(ProtocolError::TooManyElements {
                what: format!("{} (all tensors together)", self.field),
                elements: t.map_or(u64::MAX, |t| t as u64),
                max: self.limits.max_total_elements,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_shapes() {
        let l = Limits::default();
        assert_eq!(
            l.check_shape::<u32>("t", &[1, 3, 224, 224]).unwrap(),
            150528
        );
        assert_eq!(l.check_shape::<u32>("t", &[]).unwrap(), 1);
    }

    #[test]
    fn zero_dim_is_rejected_with_field_and_limit() {
        let err = Limits::default()
            .check_shape::<u32>("output 'prob'", &[1, 2, 3, 0])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "output 'prob': dim 3 = 0 outside 1..=65536"
        );
    }

    #[test]
    fn negative_dim_as_huge_u32_is_rejected() {
        let err = Limits::default()
            .check_shape::<u32>("t", &[1, (-1i32) as u32])
            .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::DimOutOfRange {
                axis: 1,
                value: 0xffff_ffff,
                ..
            }
        ));
    }

    #[test]
    fn too_many_axes() {
        let err = Limits::default()
            .check_shape::<u32>("t", &[1; 9])
            .unwrap_err();
        assert_eq!(err.to_string(), "t: 9 axes exceed the limit of 8");
    }

    #[test]
    fn product_overflow_is_detected_not_wrapped() {
        // Wide-open per-dim limits so only the checked product can stop it.
        let l = Limits {
            max_dim: u32::MAX,
            max_elements: usize::MAX,
            ..Limits::default()
        };
        let dims = [u32::MAX; 8];
        assert!(matches!(
            l.check_shape("t", &dims),
            Err(ProtocolError::ShapeOverflow { .. })
        ));
        // 2^16 ^ 4 = 2^64 wraps to 0 with unchecked multiplication.
        assert!(matches!(
            l.check_shape::<u32>("t", &[65536; 4]),
            Err(ProtocolError::ShapeOverflow { .. })
        ));
        assert!(matches!(
            l.check_shape::<u64>("t", &[u64::MAX]),
            Err(ProtocolError::ShapeOverflow { .. }) | Err(ProtocolError::DimOutOfRange { .. })
        ));
    }

    #[test]
    fn element_cap() {
        let err = Limits::default()
            .check_shape::<u32>("t", &[65536, 65536])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t: 4294967296 elements exceed the limit of 67108864"
        );
    }
}
