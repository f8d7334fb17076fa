//! flex's side of the convolution: our kernels (crate `atop-kernels`) for
//! f32 convolutions without groups, forward and under autodiff, the ReLU of
//! [`ConvKernels::kernel_conv2d_relu`] applied as the kernel stores its
//! outputs; flex's own ops for anything else.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, TensorData};

use atop_kernels::conv2d::{self, Activation, ConvGeometry, ConvMethod};

use super::{ConvKernels, values};

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
        flex_conv2d(x, weight, Some(bias), options, Activation::Identity)
    }

    fn kernel_conv2d_no_bias(
        x: FlexTensor,
        weight: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        flex_conv2d(x, weight, None, options, Activation::Identity)
    }

    fn kernel_conv2d_relu(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        flex_conv2d(x, weight, Some(bias), options, Activation::Relu)
    }
}

fn flex_conv2d(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: ConvOptions<2>,
    activation: Activation,
) -> FlexTensor {
    let Some(g) = supported(&x, &weight, bias.as_ref(), &options) else {
        return burn_conv2d::<Flex>(x, weight, bias, options, activation);
    };
    let (x, weight, bias) = (values(&x), values(&weight), bias.as_ref().map(values));
    let y = conv2d::conv2d_forward_activated(
        &g,
        x.storage(),
        weight.storage(),
        bias.as_ref().map(|b| b.storage()),
        activation,
        ConvMethod::Auto,
    );
    flex_tensor(y, output_shape(&g))
}

/// burn's own convolution, then its ReLU when asked for: where our kernel
/// does not apply, on flex directly and under autodiff.
fn burn_conv2d<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
    activation: Activation,
) -> FloatTensor<B> {
    let y = B::conv2d(x, weight, bias, options);
    match activation {
        Activation::Identity => y,
        Activation::Relu => B::relu(y),
    }
}

/// The backward step of [`ConvKernels::kernel_conv2d`] (and of its ReLU
/// variant, whose output the state then holds) under autodiff; its parents
/// are x, weight and (when `N` is 3) the bias.
#[derive(Debug)]
struct Conv2dBackward;

impl<const N: usize> Backward<Flex, N> for Conv2dBackward {
    type State = (NodeId, NodeId, ConvGeometry, Option<FlexTensor>);

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (x_state, weight_state, g, relu_output) = ops.state;
        let mut dy = values(&grads.consume::<Flex>(&ops.node));
        if let Some(y) = relu_output {
            let masked = conv2d::relu_output_grad(values(&y).storage(), dy.storage());
            dy = flex_tensor(masked, output_shape(&g));
        }
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
        autodiff_conv2d::<C>(x, weight, Some(bias), options, Activation::Identity)
    }

    fn kernel_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<C>(x, weight, None, options, Activation::Identity)
    }

    fn kernel_conv2d_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv2d::<C>(x, weight, Some(bias), options, Activation::Relu)
    }
}

type AutodiffFlexTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// The convolution recorded on the autodiff graph with [`Conv2dBackward`]
/// (burn's own recorded ops where our kernel does not apply).
fn autodiff_conv2d<C: CheckpointStrategy>(
    x: AutodiffFlexTensor<C>,
    weight: AutodiffFlexTensor<C>,
    bias: Option<AutodiffFlexTensor<C>>,
    options: ConvOptions<2>,
    activation: Activation,
) -> AutodiffFlexTensor<C> {
    let geometry = supported(
        x.primitive(),
        weight.primitive(),
        bias.as_ref().map(|b| b.primitive()),
        &options,
    );
    let Some(g) = geometry else {
        return burn_conv2d::<Autodiff<Flex, C>>(x, weight, bias, options, activation);
    };
    let (x_node, weight_node) = (x.node(), weight.node());
    let call = ConvCall {
        x,
        weight,
        bias,
        g,
        options,
        activation,
    };
    match call.bias.as_ref().map(|b| b.node()) {
        Some(bias_node) => record_conv2d::<C, 3>([x_node, weight_node, bias_node], call),
        None => record_conv2d::<C, 2>([x_node, weight_node], call),
    }
}

/// One convolution of [`autodiff_conv2d`], our kernel's geometry found.
struct ConvCall<C: CheckpointStrategy> {
    x: AutodiffFlexTensor<C>,
    weight: AutodiffFlexTensor<C>,
    bias: Option<AutodiffFlexTensor<C>>,
    g: ConvGeometry,
    options: ConvOptions<2>,
    activation: Activation,
}

/// Runs the convolution on the inner tensors and, when a parent needs a
/// gradient, records [`Conv2dBackward`] with `x` and `weight` checkpointed
/// (and the output kept, after a ReLU); `nodes` are the parents' guards (x,
/// weight, and the bias when there is one).
fn record_conv2d<C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    call: ConvCall<C>,
) -> AutodiffFlexTensor<C> {
    let ConvCall {
        x,
        weight,
        bias,
        g,
        options,
        activation,
    } = call;
    let forward = |x: AutodiffFlexTensor<C>, weight: AutodiffFlexTensor<C>| {
        flex_conv2d(
            x.into_primitive(),
            weight.into_primitive(),
            bias.map(|b| b.into_primitive()),
            options,
            activation,
        )
    };
    match Conv2dBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let (x_id, weight_id) = (prep.checkpoint(&x), prep.checkpoint(&weight));
            let y = forward(x, weight);
            // The ReLU's mask is read from its output; the clone held here
            // also keeps flex from writing over it in place.
            let relu_output = (activation == Activation::Relu).then(|| y.clone());
            prep.finish((x_id, weight_id, g, relu_output), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x, weight)),
    }
}
