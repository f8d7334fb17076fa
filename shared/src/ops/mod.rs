//! The models' heavy operations, routed by device through burn's
//! backend-extension mechanism: a 2-D convolution with both gradients
//! ([`conv2d`]) and the gated convolution's fused activation
//! ([`gated_activation`]) run our own kernels (crate `atop-kernels`) on
//! burn's pure-Rust flex backend; on LibTorch (feature `tch`) they and
//! [`relu`] run torch's own forward and backward kernels (module `torch`);
//! WebGPU runs burn's ops. Also the overflow-free ELU ([`stable_elu`]) both
//! the gated layers and the fused kernel's fallback use.

mod gate;
#[cfg(test)]
mod tests;
#[cfg(feature = "tch")]
mod torch;

pub use atop_kernels::FeatureActivation;
pub use gate::{GateKernels, gated_activation};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData};

use atop_kernels::conv2d::{self, ConvGeometry};

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

/// `conv.forward(x)` through [`conv2d`] (burn's own forward for "same"
/// padding, which no model here uses).
pub fn conv2d_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options = ConvOptions::new_with_padding(
        conv.stride,
        [(top, bottom), (left, right)],
        conv.dilation,
        conv.groups,
    );
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
}

/// The geometry of a convolution our kernel runs: f32, no groups, shapes that
/// agree, a column matrix of bounded size. Anything else (`None`) goes to
/// flex's own op.
fn supported(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    options: &ConvOptions<2>,
) -> Option<ConvGeometry> {
    let all_f32 = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.is_none_or(|b| b.dtype() == DType::F32);
    let dims4 = |t: &FlexTensor| <[usize; 4]>::try_from(t.layout().shape().as_slice()).ok();
    let (input, kernel) = (dims4(x)?, dims4(weight)?);
    if !all_f32 || options.groups != 1 {
        return None;
    }
    if bias.is_some_and(|b| b.layout().shape().as_slice() != [kernel[0]]) {
        return None;
    }
    let g = ConvGeometry::new(
        input,
        kernel,
        options.stride,
        options.padding,
        options.dilation,
    )?;
    // One sample's column matrix is built whole: past this size (the wide
    // layers at 256x256) flex's tiled op keeps the memory bounded instead.
    (g.patch_len() * g.out_pixels() <= MAX_COLUMN_ELEMENTS).then_some(g)
}

/// The largest column matrix per sample our kernel builds: 64 MiB of f32,
/// one per worker thread.
const MAX_COLUMN_ELEMENTS: usize = 1 << 24;

/// A row-major copy, or the tensor itself when it already is one.
fn values(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

fn flex_tensor(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn flex_vector(values: Vec<f32>) -> FlexTensor {
    let len = values.len();
    FlexTensor::from_data(TensorData::new(values, [len]))
}

fn output_shape(g: &ConvGeometry) -> [usize; 4] {
    [g.batch, g.channels_out, g.out[0], g.out[1]]
}

impl ConvKernels for Flex {
    fn kernel_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        flex_conv2d(x, weight, Some(bias), options)
    }

    fn kernel_conv2d_no_bias(
        x: FlexTensor,
        weight: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        flex_conv2d(x, weight, None, options)
    }
}

fn flex_conv2d(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: ConvOptions<2>,
) -> FlexTensor {
    let Some(g) = supported(&x, &weight, bias.as_ref(), &options) else {
        return Flex::conv2d(x, weight, bias, options);
    };
    let (x, weight, bias) = (values(&x), values(&weight), bias.as_ref().map(values));
    let y = conv2d::conv2d_forward(
        &g,
        x.storage(),
        weight.storage(),
        bias.as_ref().map(|b| b.storage()),
    );
    flex_tensor(y, output_shape(&g))
}

/// The backward step of [`ConvKernels::kernel_conv2d`] under autodiff; its
/// parents are x, weight and (when `N` is 3) the bias.
#[derive(Debug)]
struct Conv2dBackward;

impl<const N: usize> Backward<Flex, N> for Conv2dBackward {
    type State = (NodeId, NodeId, ConvGeometry);

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (x_state, weight_state, g) = ops.state;
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let x = values(&checkpointer.retrieve_node_output::<FlexTensor>(x_state));
        let weight = values(&checkpointer.retrieve_node_output::<FlexTensor>(weight_state));
        let [node_x, node_weight] = [ops.parents[0].clone(), ops.parents[1].clone()];
        let (dx, dweight) = conv2d::conv2d_backward(
            &g,
            x.storage(),
            weight.storage(),
            dy.storage(),
            node_x.is_some(),
            node_weight.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(
                node.id,
                flex_tensor(dx, [g.batch, g.channels_in, g.height, g.width]),
            );
        }
        if let (Some(node), Some(dweight)) = (node_weight, dweight) {
            let shape = [g.channels_out, g.channels_in, g.kernel[0], g.kernel[1]];
            grads.register::<Flex>(node.id, flex_tensor(dweight, shape));
        }
        if let Some(Some(node)) = ops.parents.get(2) {
            let db = conv2d::conv2d_bias_backward(&g, dy.storage());
            grads.register::<Flex>(node.id, flex_vector(db));
        }
    }
}

impl<C: CheckpointStrategy> ConvKernels for Autodiff<Flex, C> {
    fn kernel_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<C>(x, weight, Some(bias), options)
    }

    fn kernel_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<C>(x, weight, None, options)
    }
}

type AutodiffFlexTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// The convolution recorded on the autodiff graph with [`Conv2dBackward`]
/// (burn's own recorded op where our kernel does not apply).
fn autodiff_conv2d<C: CheckpointStrategy>(
    x: AutodiffFlexTensor<C>,
    weight: AutodiffFlexTensor<C>,
    bias: Option<AutodiffFlexTensor<C>>,
    options: ConvOptions<2>,
) -> AutodiffFlexTensor<C> {
    let geometry = supported(
        x.primitive(),
        weight.primitive(),
        bias.as_ref().map(|b| b.primitive()),
        &options,
    );
    let Some(g) = geometry else {
        return <Autodiff<Flex, C> as ModuleOps<Autodiff<Flex, C>>>::conv2d(
            x, weight, bias, options,
        );
    };
    match bias.as_ref().map(|b| b.node()) {
        Some(bias_node) => record_conv2d::<C, 3>(
            [x.node(), weight.node(), bias_node],
            x,
            weight,
            bias,
            g,
            options,
        ),
        None => record_conv2d::<C, 2>([x.node(), weight.node()], x, weight, bias, g, options),
    }
}

/// Runs the convolution on the inner tensors and, when a parent needs a
/// gradient, records [`Conv2dBackward`] with `x` and `weight` checkpointed;
/// `nodes` are the parents' guards (x, weight, and the bias when there is one).
fn record_conv2d<C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    x: AutodiffFlexTensor<C>,
    weight: AutodiffFlexTensor<C>,
    bias: Option<AutodiffFlexTensor<C>>,
    g: ConvGeometry,
    options: ConvOptions<2>,
) -> AutodiffFlexTensor<C> {
    let forward = |x: AutodiffFlexTensor<C>, weight: AutodiffFlexTensor<C>| {
        flex_conv2d(
            x.into_primitive(),
            weight.into_primitive(),
            bias.map(|b| b.into_primitive()),
            options,
        )
    };
    match Conv2dBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&weight), g);
            prep.finish(state, forward(x, weight))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x, weight)),
    }
}
