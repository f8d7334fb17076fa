//! The models' heavy operations, routed by device through burn's
//! backend-extension mechanism: a 2-D convolution with both gradients
//! ([`conv2d`], and with a ReLU fused into it, [`conv2d_relu_module`]; flex's
//! side in module `flex`) and the gated convolution's fused activation
//! ([`gated_activation`]) run our own kernels (crate `atop-kernels`) on
//! burn's pure-Rust flex backend; on LibTorch (feature `tch`) they and
//! [`relu`] run torch's own forward and backward kernels (module `torch`);
//! WebGPU runs burn's ops. Also the overflow-free ELU ([`stable_elu`]) both
//! the gated layers and the fused kernel's fallback use.

mod flex;
mod gate;
#[cfg(test)]
mod tests;
#[cfg(feature = "tch")]
mod torch;

pub use atop_kernels::FeatureActivation;
pub use gate::{GateKernels, gated_activation};

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

/// ELU(x) = x for x > 0, exp(x) - 1 otherwise, computed as
/// relu(x) + exp(min(x, 0)) - 1 so that no exp overflows: burn's `elu`
/// evaluates exp on the positive side too, and a large activation there
/// gives inf, then 0 * inf = NaN in the backward pass.
pub fn stable_elu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    relu(x.clone()) + x.clamp_max(0.0).exp().sub_scalar(1.0)
}

/// The convolution as a backend operation. flex and LibTorch implement it
/// (directly and under autodiff); [`conv2d`] routes other devices to burn's
/// own op.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait ConvKernels: Backend {
    fn kernel_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// The same without a bias. (The extension macro passes no `Option` of
    /// a tensor through, hence two methods.)
    fn kernel_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// `relu(kernel_conv2d(..))` as one operation: flex's kernels apply the
    /// ReLU as they store the output and mask the gradient once in the
    /// backward step, with no ReLU pass or buffer of its own.
    fn kernel_conv2d_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;
}

/// A 2-D convolution with the semantics of `burn::tensor::module::conv2d`.
/// On flex (with or without autodiff) it runs [`conv2d::conv2d_forward`] and
/// its gradients for f32 tensors without groups, on LibTorch torch's own
/// convolution and `convolution_backward`, and burn's op otherwise.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if !on_flex(&x) && !on_libtorch(&x) {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(bias) => {
            <Dispatch as ConvKernels>::kernel_conv2d(x, weight, bias.into_dispatch(), options)
        }
        None => <Dispatch as ConvKernels>::kernel_conv2d_no_bias(x, weight, options),
    })
}

/// Whether `t` lives on flex, plain or under autodiff: the devices our
/// kernels serve.
fn on_flex<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(t.device().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// Whether `t` lives on LibTorch (CPU or CUDA), whose own fused kernels
/// module `torch` calls; always false without the `tch` feature.
fn on_libtorch<const D: usize>(t: &Tensor<D>) -> bool {
    #[cfg(feature = "tch")]
    return matches!(
        t.device().inner().as_dispatch(),
        DispatchDevice::LibTorch(_)
    );
    #[cfg(not(feature = "tch"))]
    {
        let _ = t;
        false
    }
}

/// ReLU as a backend operation, for LibTorch alone: torch's backward is one
/// `threshold_backward` pass where burn's autodiff takes a comparison and
/// a masked fill.
#[backend_extension(LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait ReluKernels: Backend {
    fn kernel_relu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `max(x, 0)`: torch's forward and backward on LibTorch, burn's op elsewhere.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_libtorch(&x) {
        return burn::tensor::activation::relu(x);
    }
    Tensor::from_dispatch(<Dispatch as ReluKernels>::kernel_relu(x.into_dispatch()))
}

/// A burn `Conv2d`'s options, `None` for "same" padding (which no model
/// here uses; burn's own forward serves it).
fn module_options(conv: &Conv2d) -> Option<ConvOptions<2>> {
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Same => return None,
    };
    Some(ConvOptions::new_with_padding(
        conv.stride,
        [(top, bottom), (left, right)],
        conv.dilation,
        conv.groups,
    ))
}

/// `relu(conv.forward(x))`, as one operation on flex and LibTorch
/// ([`ConvKernels::kernel_conv2d_relu`]) when `conv` has a bias.
pub fn conv2d_relu_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let bias = conv
        .bias
        .as_ref()
        .filter(|_| on_flex(&x) || on_libtorch(&x));
    match (bias, module_options(conv)) {
        (Some(bias), Some(options)) => {
            Tensor::from_dispatch(<Dispatch as ConvKernels>::kernel_conv2d_relu(
                x.into_dispatch(),
                conv.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
                options,
            ))
        }
        _ => relu(conv2d_module(conv, x)),
    }
}

/// `conv.forward(x)` through [`conv2d`].
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let Some(options) = module_options(conv) else {
        return conv.forward(x);
    };
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
}

/// A row-major copy, or the tensor itself when it already is one.
fn values(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}
