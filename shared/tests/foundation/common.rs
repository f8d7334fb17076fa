use atop::model::classifier::SmallCnnConfig;
use atop::model::{
    AutoencoderConfig, ClassifierConfig, InpainterConfig, Normalization, PurifierConfig,
};
use burn::tensor::{Device, Tensor, TensorData};

pub fn device() -> Device {
    Device::flex()
}

/// Deterministic pseudo-random images in [0,1].
pub fn images(dims: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
    let n: usize = dims.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32) / ((1u64 << 24) as f32)
        })
        .collect();
    Tensor::from_data(TensorData::new(values, dims), device)
}

pub fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

pub fn values2(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn small_cnn_fmnist() -> ClassifierConfig {
    ClassifierConfig::SmallCnn(SmallCnnConfig {
        width: 8,
        ..SmallCnnConfig::fashion_mnist()
    })
}

pub fn small_gan(channels: usize) -> PurifierConfig {
    PurifierConfig::Gan(InpainterConfig {
        image_channels: channels,
        cnum: 8,
        ..InpainterConfig::default()
    })
}

pub fn small_ae(channels: usize) -> PurifierConfig {
    PurifierConfig::Ae(AutoencoderConfig {
        image_channels: channels,
        width: 8,
    })
}

#[allow(dead_code)]
pub fn identity_norm(c: usize) -> Normalization {
    Normalization::identity(c)
}

/// Replaces every parameter with uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
/// values from a seeded generator (PyTorch's default layer init).
#[allow(dead_code)]
pub fn seeded_weights<M: burn::module::Module>(module: M, seed: u64) -> M {
    use rand::RngExt;
    let mut rng = atop::rng::seeded(seed);
    let mut tensors = std::collections::BTreeMap::new();
    for (name, data) in atop::params::export_params(&module, &[]) {
        let shape = data.shape().to_vec();
        let fan_in: usize = if shape.len() > 1 {
            shape[1..].iter().product()
        } else {
            shape[0]
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        tensors.insert(name, TensorData::new(values, shape));
    }
    atop::params::import_params(module, &tensors, &[]).expect("same architecture")
}

/// A small CNN with `classes` outputs trained with Adam on (x, labels) for
/// `steps` full-batch steps, from weights drawn by our seeded generator
/// (burn's device RNG is shared by the tests running in parallel), frozen.
pub fn train_toy_classifier(
    classes: usize,
    x: &Tensor<4>,
    labels: &[i64],
    steps: usize,
    lr: f64,
    seed: u64,
) -> atop::model::Classifier {
    use burn::module::Module;
    use burn::optim::{AdamConfig, GradientsParams};
    let d = x.device();
    let cfg = ClassifierConfig::SmallCnn(SmallCnnConfig {
        num_classes: classes,
        width: 8,
        ..SmallCnnConfig::fashion_mnist()
    });
    let mut model = seeded_weights(cfg.init(&d).unwrap(), seed);
    let y = Tensor::<1, burn::tensor::Int>::from_data(
        TensorData::new(labels.to_vec(), [labels.len()]),
        &d,
    );
    let mut optim = AdamConfig::new().init();
    for _ in 0..steps {
        let logits = model.forward(x.clone()).unwrap();
        let loss = burn::tensor::loss::cross_entropy_with_logits(
            logits,
            y.clone().one_hot::<2>(classes).float(),
        );
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    model.freeze()
}
