//! LibTorch's side of the heavy operations (feature `tch`): the convolution,
//! ReLU and the gated activation call torch's own kernels forward and
//! backward, as PyTorch eager does. burn's autodiff would otherwise take the
//! convolution's weight gradient as a second convolution over transposed
//! copies (a kernel as large as the image, which oneDNN runs slowly), and
//! each ReLU or clamp backward as a comparison plus a masked fill.
//!
//! The convolution's backward runs torch's autograd on a small graph kept
//! from the forward pass (torch's `convolution_backward` is not bound by
//! tch): the inputs enter it as detached leaves, and the upstream gradient
//! `dy` enters as the root `dot(y, dy)`, whose gradient with respect to `y`
//! is `dy` whatever `y` holds by then.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::ops::{ActivationOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, LibTorch};
use burn::tensor::ops::ConvOptions;
use tch::Tensor as Torch;

use super::{ConvKernels, FeatureActivation, GateKernels, ReluKernels};

/// torch's convolution with burn's options; asymmetric padding is applied to
/// `x` first, since torch pads both sides alike.
fn torch_conv2d(
    x: &Torch,
    weight: &Torch,
    bias: Option<&Torch>,
    options: &ConvOptions<2>,
) -> Torch {
    let to_i64 = |v: [usize; 2]| v.map(|i| i as i64);
    let (padded, padding);
    let x = if options.is_asymmetric() {
        let [(top, bottom), (left, right)] = options.padding.map(|(a, b)| (a as i64, b as i64));
        padded = x.constant_pad_nd([left, right, top, bottom]);
        padding = [0, 0];
        &padded
    } else {
        padding = to_i64(options.padding_begin());
        x
    };
    Torch::conv2d(
        x,
        weight,
        bias,
        to_i64(options.stride),
        padding,
        to_i64(options.dilation),
        options.groups as i64,
    )
}

impl ConvKernels for LibTorch {
    fn kernel_conv2d(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        options: ConvOptions<2>,
    ) -> TchTensor {
        TchTensor::new(torch_conv2d(
            &x.tensor,
            &weight.tensor,
            Some(&bias.tensor),
            &options,
        ))
    }

    fn kernel_conv2d_no_bias(
        x: TchTensor,
        weight: TchTensor,
        options: ConvOptions<2>,
    ) -> TchTensor {
        TchTensor::new(torch_conv2d(&x.tensor, &weight.tensor, None, &options))
    }

    fn kernel_conv2d_relu(
        x: TchTensor,
        weight: TchTensor,
        bias: TchTensor,
        options: ConvOptions<2>,
    ) -> TchTensor {
        Self::kernel_relu(Self::kernel_conv2d(x, weight, bias, options))
    }
}

/// What the convolution's backward needs: torch's graph from the detached
/// leaves (`None` where a parent needs no gradient) to the output `y`, and
/// the inputs themselves, held so that no in-place burn op reuses their
/// storage while the graph still reads it.
#[derive(Debug, Clone)]
struct ConvGraph {
    leaves: Vec<Option<TchTensor>>,
    output: TchTensor,
    _inputs: Vec<TchTensor>,
}

#[derive(Debug)]
struct TorchConv2dBackward;

impl<const N: usize> Backward<LibTorch, N> for TorchConv2dBackward {
    type State = ConvGraph;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<LibTorch>(&ops.node);
        let graph = ops.state;
        let root = graph
            .output
            .tensor
            .reshape([-1])
            .dot(&dy.tensor.reshape([-1]));
        let wanted: Vec<&Torch> = graph.leaves.iter().flatten().map(|t| &t.tensor).collect();
        let mut computed = Torch::run_backward(&[root], &wanted, false, false).into_iter();
        for (parent, leaf) in ops.parents.iter().zip(&graph.leaves) {
            let gradient = leaf.as_ref().and_then(|_| computed.next());
            if let (Some(node), Some(gradient)) = (parent, gradient) {
                grads.register::<LibTorch>(node.id, TchTensor::new(gradient));
            }
        }
    }
}

impl<C: CheckpointStrategy> ConvKernels for Autodiff<LibTorch, C> {
    fn kernel_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        if !weight.is_tracked() && !bias.is_tracked() {
            return burn_conv2d::<C>(x, weight, Some(bias), options);
        }
        let nodes = [x.node(), weight.node(), bias.node()];
        record_conv2d::<C, 3>(nodes, [x, weight, bias], options)
    }

    fn kernel_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        if !weight.is_tracked() {
            return burn_conv2d::<C>(x, weight, None, options);
        }
        record_conv2d::<C, 2>([x.node(), weight.node()], [x, weight], options)
    }

    /// The convolution then torch's ReLU, each with its own backward.
    fn kernel_conv2d_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::kernel_relu(Self::kernel_conv2d(x, weight, bias, options))
    }
}

/// burn's own recorded convolution, for a frozen model (an attack's input
/// gradient alone): its backward is then one transposed convolution, which
/// torch's graph would only add a root and its bookkeeping to.
fn burn_conv2d<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<LibTorch, C>>,
    weight: FloatTensor<Autodiff<LibTorch, C>>,
    bias: Option<FloatTensor<Autodiff<LibTorch, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<LibTorch, C>> {
    <Autodiff<LibTorch, C> as ModuleOps<Autodiff<LibTorch, C>>>::conv2d(x, weight, bias, options)
}

/// The convolution of `inputs` (x, weight and maybe the bias), with torch's
/// graph recorded when a parent needs a gradient.
fn record_conv2d<C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    inputs: [FloatTensor<Autodiff<LibTorch, C>>; N],
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<LibTorch, C>> {
    let tracked = inputs.each_ref().map(|t| t.is_tracked());
    let inputs = inputs.map(|t| t.into_primitive());
    let forward = |t: &[Torch]| torch_conv2d(&t[0], &t[1], t.get(2), &options);
    match TorchConv2dBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let leaves: Vec<Torch> = inputs
                .iter()
                .zip(tracked)
                .map(|(t, tracked)| t.tensor.detach().set_requires_grad(tracked))
                .collect();
            let y = forward(&leaves);
            let out = TchTensor::new(y.detach());
            let leaves = leaves
                .into_iter()
                .zip(tracked)
                .map(|(leaf, tracked)| tracked.then(|| TchTensor::new(leaf)))
                .collect();
            let graph = ConvGraph {
                leaves,
                output: TchTensor::new(y),
                _inputs: inputs.to_vec(),
            };
            prep.finish(graph, out)
        }
        OpsKind::UnTracked(prep) => {
            let plain: Vec<Torch> = inputs.iter().map(|t| t.tensor.shallow_clone()).collect();
            prep.finish(TchTensor::new(forward(&plain)))
        }
    }
}

impl ReluKernels for LibTorch {
    fn kernel_relu(x: TchTensor) -> TchTensor {
        // burn's op, which writes in place when `x` is not shared.
        <LibTorch as ActivationOps<LibTorch>>::relu(x)
    }
}

/// ReLU's backward as torch's one `threshold_backward` pass over the output.
#[derive(Debug)]
struct TorchReluBackward;

impl Backward<LibTorch, 1> for TorchReluBackward {
    type State = TchTensor;

    fn backward(self, ops: Ops<TchTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<LibTorch>(&ops.node);
        if let [Some(node)] = ops.parents {
            let dx = ops.state.tensor.threshold_backward(&dy.tensor, 0.0);
            grads.register::<LibTorch>(node.id, TchTensor::new(dx));
        }
    }
}

impl<C: CheckpointStrategy> ReluKernels for Autodiff<LibTorch, C> {
    fn kernel_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match TorchReluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // The state shares the output's storage handle, so burn sees
                // it shared and writes no later op in place over it.
                let out = LibTorch::kernel_relu(x.into_primitive());
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::kernel_relu(x.into_primitive())),
        }
    }
}

/// `act(features)` and `sigmoid(gates)` of a gated output `[n, 2c, h, w]`.
fn gate_halves(y: &Torch, activation: FeatureActivation) -> (Torch, Torch) {
    let halves = y.chunk(2, 1);
    let features = match activation {
        FeatureActivation::Relu => halves[0].relu(),
        FeatureActivation::Elu => halves[0].elu(),
    };
    (features, halves[1].sigmoid())
}

impl GateKernels for LibTorch {
    fn fused_gated_activation(y: TchTensor, activation: FeatureActivation) -> TchTensor {
        let (features, gates) = gate_halves(&y.tensor, activation);
        TchTensor::new(features * gates)
    }
}

/// The gated activation's backward from the two halves kept by the forward
/// pass: `d features = elu'(f) * s * d`, `d gates = s (1 - s) * a * d`.
#[derive(Debug)]
struct TorchGateBackward;

impl Backward<LibTorch, 1> for TorchGateBackward {
    type State = (TchTensor, TchTensor, FeatureActivation);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = grads.consume::<LibTorch>(&ops.node).tensor;
        let [Some(node)] = ops.parents else {
            return;
        };
        let (features, gates, activation) = ops.state;
        let (a, s) = (&features.tensor, &gates.tensor);
        let d_a = &d_out * s;
        let d_features = match activation {
            FeatureActivation::Relu => a.threshold_backward(&d_a, 0.0),
            FeatureActivation::Elu => Torch::elu_backward(&d_a, 1.0, 1.0, 1.0, true, a),
        };
        let d_gates = Torch::sigmoid_backward(&(&d_out * a), s);
        let dy = Torch::cat(&[d_features, d_gates], 1);
        grads.register::<LibTorch>(node.id, TchTensor::new(dy));
    }
}

impl<C: CheckpointStrategy> GateKernels for Autodiff<LibTorch, C> {
    fn fused_gated_activation(
        y: FloatTensor<Self>,
        activation: FeatureActivation,
    ) -> FloatTensor<Self> {
        match TorchGateBackward
            .prepare::<C>([y.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (features, gates) = gate_halves(&y.into_primitive().tensor, activation);
                let out = TchTensor::new(&features * &gates);
                let state = (TchTensor::new(features), TchTensor::new(gates), activation);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::fused_gated_activation(
                y.into_primitive(),
                activation,
            )),
        }
    }
}
