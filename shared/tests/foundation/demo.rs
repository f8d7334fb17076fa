//! The demo's experiment (shared by the browser and `atop attack`) on the
//! committed demo artifact.

use atop::artifact::Artifact;
use atop::demo::{self, DemoAttack, DemoAttackRun, DemoMode, DemoModels, ImageRef, Permalink};

use crate::common::{device, max_abs_diff, values, values2};

fn models() -> (Artifact, DemoModels) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../web-demo/assets/fmnist-demo.safetensors"
    );
    let bytes = std::fs::read(path).expect("the committed demo artifact");
    let artifact = Artifact::from_bytes(&bytes, path).expect("a valid artifact");
    let models = DemoModels::load(&artifact, &device(), path).expect("demo models");
    (artifact, models)
}

fn link(sha: &str, attack: DemoAttack, mode: DemoMode) -> Permalink {
    Permalink {
        artifact_sha256: sha.to_string(),
        image: ImageRef::Sample(0),
        attack,
        norm: atop::attack::Norm::Linf,
        eps: 0.1,
        steps: 4,
        eot: 2,
        transform: atop::transform::TransformKind::Rt2,
        mode,
        seed: 7,
    }
}

fn run(models: &DemoModels, link: &Permalink) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let defense = models.defense(link.transform);
    let (image, label) = models.image(&link.image).unwrap();
    let mut attack = DemoAttackRun::start(&defense, image.clone(), label.unwrap(), link).unwrap();
    let mut steps = 0;
    while !attack.is_finished() {
        attack.step(&defense).unwrap();
        steps += 1;
    }
    assert_eq!(steps, attack.total_steps());
    let out = demo::outcome(&defense, image.clone(), attack.finish(), link.seed).unwrap();
    (
        values(image),
        values(out.adversarial),
        values2(out.defended_logits),
    )
}

#[test]
fn the_bundled_artifact_loads_with_samples_and_class_names() {
    let (artifact, models) = models();
    assert_eq!(models.input, [1, 28, 28]);
    assert_eq!(models.num_samples(), 40);
    assert_eq!(models.class_names[0], "T-shirt/top");
    // The committed file is intact: its payload hash is the one permalinks name.
    assert_eq!(artifact.manifest.payload_sha256.len(), 64);
    let err = models.image(&ImageRef::Sample(40)).unwrap_err().to_string();
    assert!(err.contains("sample 40 does not exist"), "{err}");
    let wrong = ImageRef::Pixels {
        width: 2,
        height: 2,
        channels: 1,
        values: vec![0; 4],
    };
    let err = models.image(&wrong).unwrap_err().to_string();
    assert!(err.contains("uploaded image"), "{err}");
}

#[test]
fn every_demo_attack_stays_in_its_ball_and_replays_from_the_seed() {
    let (artifact, models) = models();
    let sha = &artifact.manifest.payload_sha256;
    for attack in [DemoAttack::Fgsm, DemoAttack::Pgd, DemoAttack::ApgdCe] {
        for mode in [DemoMode::ClassifierOnly, DemoMode::Full] {
            let l = link(sha, attack, mode);
            let (clean, adv, defended) = run(&models, &l);
            let linf = max_abs_diff(&clean, &adv);
            assert!(linf <= 0.1 + 1e-6, "{attack:?} {mode:?}: L-inf {linf}");
            assert!(linf > 0.01, "{attack:?} {mode:?}: the attack did not move");
            assert!(adv.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(defended.iter().all(|v| v.is_finite()));
            let (_, adv2, defended2) = run(&models, &l);
            assert_eq!(adv, adv2, "{attack:?} {mode:?}: same seed, same image");
            assert_eq!(defended, defended2);
        }
    }
    // Another seed, another random start and transform draws.
    let l = link(sha, DemoAttack::Pgd, DemoMode::Full);
    let (_, a, _) = run(&models, &l);
    let (_, b, _) = run(&models, &Permalink { seed: 8, ..l });
    assert!(max_abs_diff(&a, &b) > 0.0);
}

#[test]
fn an_uploaded_image_is_attacked_away_from_its_predicted_class() {
    let (artifact, models) = models();
    let (image, _) = models.image(&ImageRef::Sample(1)).unwrap();
    let pixels: Vec<u8> = values(image)
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let upload = ImageRef::Pixels {
        width: 28,
        height: 28,
        channels: 1,
        values: pixels.clone(),
    };
    let (tensor, label) = models.image(&upload).unwrap();
    assert_eq!(label, None);
    let back: Vec<u8> = values(tensor)
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    assert_eq!(back, pixels);
    let l = Permalink {
        image: upload,
        ..link(
            &artifact.manifest.payload_sha256,
            DemoAttack::Pgd,
            DemoMode::ClassifierOnly,
        )
    };
    // The permalink carries the pixels, so the upload replays from the link alone.
    assert_eq!(Permalink::from_query(&l.to_query()).unwrap(), l);
}

/// The scorecard's figures for `link` over every bundled image.
fn scorecard(models: &DemoModels, link: &Permalink, draws: usize) -> demo::Scorecard {
    let mut run = demo::ScorecardRun::start(models, link, draws).unwrap();
    let mut steps = 0;
    while !run.is_finished() {
        run.step().unwrap();
        steps += 1;
    }
    assert_eq!(steps, run.total_steps());
    let (images, draws) = (run.images(), run.draws());
    let counts = atop::host::ints(run.finish().unwrap(), "counts").unwrap();
    demo::ScorecardRun::scorecard(images, draws, &counts).unwrap()
}

#[test]
fn the_scorecard_counts_what_each_model_keeps_over_every_bundled_image() {
    let (artifact, models) = models();
    let sha = &artifact.manifest.payload_sha256;
    // With eps 0 the attacks move nothing: kept = clean (the defense's
    // clean and attacked images are scored on the same draws).
    let still = Permalink {
        eps: 0.0,
        ..link(sha, DemoAttack::Pgd, DemoMode::Full)
    };
    let card = scorecard(&models, &still, 2);
    assert_eq!(card.images, 40);
    assert_eq!(card.classifier_kept, card.classifier_clean);
    assert!((card.defense_kept - card.defense_clean).abs() < 1e-9);
    assert!(card.classifier_clean >= 30, "{card:?}");
    // PGD with full gradients: the bare classifier falls, the defense holds
    // more (the bundled defense's documented behaviour), and a replay gives
    // the same card.
    let pgd = link(sha, DemoAttack::Pgd, DemoMode::Full);
    let card = scorecard(&models, &pgd, 4);
    assert!(card.classifier_kept < card.classifier_clean / 2, "{card:?}");
    assert!(
        card.defense_kept > card.classifier_kept as f64 + 5.0,
        "{card:?}"
    );
    assert!(
        card.defense_kept <= card.defense_clean + 1e-9 + 5.0,
        "{card:?}"
    );
    assert_eq!(scorecard(&models, &pgd, 4), card);
}
