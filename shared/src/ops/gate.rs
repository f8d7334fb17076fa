//! The gated activation `act(features) * sigmoid(gates)` as one flex op
//! (`atop_kernels::gate`), with its own autodiff step; other devices and
//! dtypes compose burn's ops.

use atop_kernels::gate::{self, FeatureActivation, GateShape};
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{DType, Tensor, TensorData};

use super::{on_flex, on_libtorch, values};

/// The fused activation as a backend operation, implemented by flex (our
/// kernel) and LibTorch (torch's elementwise kernels, with a backward of five
/// passes), directly and under autodiff; [`gated_activation`] routes the rest.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait GateKernels: Backend {
    fn fused_gated_activation(
        y: FloatTensor<Self>,
        activation: FeatureActivation,
    ) -> FloatTensor<Self>;
}

/// `act(features) * sigmoid(gates)` of a gated convolution's output `y`,
/// `[n, 2c, h, w]` with the features first; returns `[n, c, h, w]`.
pub fn gated_activation(y: Tensor<4>, activation: FeatureActivation) -> Tensor<4> {
    let ours = (on_flex(&y) && y.dtype() == DType::F32) || on_libtorch(&y);
    if !ours || !y.dims()[1].is_multiple_of(2) {
        return composed(y, activation);
    }
    Tensor::from_dispatch(<Dispatch as GateKernels>::fused_gated_activation(
        y.into_dispatch(),
        activation,
    ))
}

/// The same from burn's tensor ops.
pub(super) fn composed(y: Tensor<4>, activation: FeatureActivation) -> Tensor<4> {
    let channels = y.dims()[1] / 2;
    let features = y.clone().narrow(1, 0, channels);
    let gates = y.narrow(1, channels, channels);
    let features = match activation {
        FeatureActivation::Relu => relu(features),
        FeatureActivation::Elu => super::stable_elu(features),
    };
    features * sigmoid(gates)
}

/// `[n, 2c, h, w]` as the kernel's layout, and the dims themselves.
fn halves(y: &FlexTensor) -> (GateShape, [usize; 4]) {
    let dims: [usize; 4] = y.layout().shape().dims();
    let shape = GateShape {
        batch: dims[0],
        channels: dims[1] / 2,
        pixels: dims[2] * dims[3],
    };
    (shape, dims)
}

impl GateKernels for Flex {
    fn fused_gated_activation(y: FlexTensor, activation: FeatureActivation) -> FlexTensor {
        let y = values(&y);
        let (shape, [n, _, h, w]) = halves(&y);
        let out = gate::gated_forward(y.storage(), shape, activation);
        FlexTensor::from_data(TensorData::new(out, [n, shape.channels, h, w]))
    }
}

/// The backward step: the gradient with respect to `y`, from `y` itself.
#[derive(Debug)]
struct GatedActivationBackward;

impl Backward<Flex, 1> for GatedActivationBackward {
    type State = (NodeId, FeatureActivation);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (y_state, activation) = ops.state;
        let d_out = values(&grads.consume::<Flex>(&ops.node));
        let [Some(node)] = ops.parents else {
            return;
        };
        let y = values(&checkpointer.retrieve_node_output::<FlexTensor>(y_state));
        let (shape, dims) = halves(&y);
        let dy = gate::gated_backward(y.storage(), d_out.storage(), shape, activation);
        grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dy, dims)));
    }
}

impl<C: CheckpointStrategy> GateKernels for Autodiff<Flex, C> {
    fn fused_gated_activation(
        y: FloatTensor<Self>,
        activation: FeatureActivation,
    ) -> FloatTensor<Self> {
        match GatedActivationBackward
            .prepare::<C>([y.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&y), activation);
                let out = Flex::fused_gated_activation(y.into_primitive(), activation);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::fused_gated_activation(y.into_primitive(), activation))
            }
        }
    }
}
