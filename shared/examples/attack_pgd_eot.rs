//! Attack a defense with PGD and EOT through all of it (full gradients:
//! transform, purifier and classifier), then score the result over several
//! random draws, as `atop eval` does.
//!
//!     cargo run -p atop --example attack_pgd_eot -- [ARTIFACT] [STEPS] [EOT]

use atop::artifact::Artifact;
use atop::attack::{DefenseTarget, GradientMode, Norm, PgdConfig, pgd, score_randomized};
use atop::defense::Defense;
use atop::rng::seeded;
use burn::tensor::{Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "web-demo/assets/fmnist-demo.safetensors".into());
    let steps: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let eot: usize = args.next().map_or(Ok(4), |s| s.parse())?;
    let artifact = Artifact::from_bytes(&std::fs::read(&path)?, &path)?;
    // Attacks differentiate, so the models live on an autodiff device.
    let device = Device::flex().autodiff();
    let defense = Defense::from_artifact(&artifact, &device, &path)?;
    let samples = artifact
        .samples(&path)?
        .ok_or("this artifact bundles no images")?;
    let x = Tensor::<4>::from_data(samples.images, &device);
    let y = samples.labels;

    let target = DefenseTarget::new(&defense, GradientMode::Full);
    let cfg = PgdConfig {
        norm: Norm::Linf,
        eps: 0.1,
        steps,
        eot,
        step_size: Some(0.01), // eps / 10; None takes 2.5 eps / steps
        ..PgdConfig::default()
    };
    let mut rng = seeded(7);
    let x_adv = pgd(&target, x.clone(), &y, &cfg, &mut rng)?;

    // A randomized defense is judged over several final draws per point.
    let draws = 10;
    for (what, images) in [("clean", x), ("PGD", x_adv)] {
        let score = score_randomized(&target, images, &y, draws, &mut rng)?;
        println!(
            "{what:>5}: expected accuracy {:.1}%, robust in every draw {:.1}%, majority {:.1}% ({} images, {draws} draws)",
            100.0 * score.mean_accuracy(),
            100.0 * score.every_draw_accuracy(),
            100.0 * score.majority_accuracy(),
            y.len()
        );
    }
    Ok(())
}
