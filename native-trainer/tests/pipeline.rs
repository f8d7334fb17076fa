//! The trainer end to end on a tiny synthetic IDX dataset: every stage as a
//! user runs it, a kill -9 during fine-tuning followed by --resume, and the
//! errors a user sees for bad input.

use std::io::Write;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn atop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atop"))
}

fn run(args: &[&str]) -> (bool, String) {
    let out = atop().args(args).output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(data);
    out
}

/// 28x28 images whose class is drawn as a bright horizontal band.
fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", 240u32), ("t10k", 40)] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = (i % 10) as usize;
            labels.push(class as u8);
            for y in 0..28 {
                for x in 0..28 {
                    let band = y / 3 == class;
                    pixels.push(if band {
                        200
                    } else {
                        ((x * 7 + y * 3 + i as usize) % 40) as u8
                    });
                }
            }
        }
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx(&[n, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(&[n], &labels),
        )
        .unwrap();
    }
}

fn tiny_config(data_dir: &Path) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/fmnist.toml"
    ))
    .unwrap();
    let mut table: toml::Table = toml::from_str(&shipped).unwrap();
    let set = |t: &mut toml::Table, path: &str, v: toml::Value| {
        let parts: Vec<&str> = path.split('.').collect();
        let mut node = t;
        for p in &parts[..parts.len() - 1] {
            node = node.get_mut(*p).unwrap().as_table_mut().unwrap();
        }
        node.insert(parts[parts.len() - 1].to_string(), v);
    };
    use toml::Value::{Float, Integer, String as S};
    set(&mut table, "data.dir", S(data_dir.display().to_string()));
    set(&mut table, "data.validation_fraction", Float(0.1));
    set(&mut table, "data.validation_limit", Integer(8));
    set(&mut table, "classifier.width", Integer(4));
    // The GAN inpainter (the shipped configuration's AE has no
    // discriminator), so that these tests cover every GAN stage.
    let gan: toml::Value =
        toml::from_str::<toml::Table>(r#"p = { kind = "gan", image_channels = 1, cnum = 4 }"#)
            .unwrap()["p"]
            .clone();
    set(&mut table, "purifier", gan);
    set(&mut table, "discriminator.cnum", Integer(4));
    for stage in ["train_classifier", "pretrain", "finetune"] {
        set(&mut table, &format!("{stage}.epochs"), Integer(2));
        set(&mut table, &format!("{stage}.batch_size"), Integer(8));
        set(
            &mut table,
            &format!("{stage}.max_steps_per_epoch"),
            Integer(6),
        );
    }
    set(&mut table, "eval.subset", Integer(8));
    set(&mut table, "eval.batch_size", Integer(8));
    set(&mut table, "eval.score_draws", Integer(2));
    let attacks: toml::Value = toml::from_str::<toml::Table>(
        r#"a = [{ norm = "linf", eps = 0.1, steps = 1, eot = 1, mode = "full" },
                { norm = "linf", eps = 0.1, steps = 1, eot = 1, mode = "classifier-only" }]"#,
    )
    .unwrap()["a"]
        .clone();
    set(&mut table, "eval.attacks", attacks);
    set(&mut table, "run.checkpoint_every", Integer(1));
    toml::to_string(&table).unwrap()
}

struct Fixture {
    dir: PathBuf,
    config: PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("atop-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dataset(&dir.join("data"));
    let config = dir.join("tiny.toml");
    std::fs::File::create(&config)
        .unwrap()
        .write_all(tiny_config(&dir.join("data")).as_bytes())
        .unwrap();
    Fixture { dir, config }
}

fn read_artifact(p: &Path) -> atop::artifact::Artifact {
    atop::artifact::Artifact::from_bytes(&std::fs::read(p).unwrap(), "test").unwrap()
}

/// The metrics rows of `stage` in `dir`, as written.
fn stage_rows(dir: &Path, stage: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    let tag = format!("\"stage\":\"{stage}\"");
    text.lines()
        .filter(|l| l.contains(&tag) && l.ends_with('}'))
        .map(String::from)
        .collect()
}

/// Polls `ready` until it holds, then SIGKILLs `child`; panics if the run
/// ended first (it could not be killed mid-run).
fn kill_when(mut child: std::process::Child, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
}

/// Runs `args(dir)` to the end in `reference`; then in `killed` with a
/// kill -9 after the first checkpoint and another after the resumed run has
/// gone past where the first stopped, resuming each time. The two must give
/// the same artifact bit for bit and the same metrics rows, with no
/// leftovers. Also checks that a second run on the same --out is refused.
fn kill_twice_and_resume(
    args: &dyn Fn(&Path) -> Vec<String>,
    stage: &str,
    artifact: &str,
    reference: &Path,
    killed: &Path,
) {
    if !reference.join(artifact).exists() {
        let out = atop().args(args(reference)).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ckpt = killed.join(format!("{stage}.ckpt"));
    let child = atop()
        .args(args(killed))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    while !ckpt.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // While it runs, a second run on the same --out is refused, naming it.
    let second = atop().args(args(killed)).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success()
            && err.contains("in use by another atop run")
            && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    kill_when(child, || true);
    assert!(!killed.join(artifact).exists());
    let first = stage_rows(killed, stage).len();

    // What a killed write and a disk-full stop leave behind.
    let leftover = killed.join(format!(".{artifact}.4242.tmp"));
    std::fs::write(&leftover, b"partial").unwrap();
    let mut metrics = std::fs::OpenOptions::new()
        .append(true)
        .open(killed.join("metrics.jsonl"))
        .unwrap();
    metrics.write_all(br#"{"stage":"pre"#).unwrap();
    drop(metrics);

    let mut resume = args(killed);
    resume.push("--resume".into());
    let child = atop().args(&resume).stderr(Stdio::null()).spawn().unwrap();
    kill_when(child, || stage_rows(killed, stage).len() > first + 1);
    assert!(!killed.join(artifact).exists());
    assert!(!leftover.exists(), "the stale temporary file is removed");

    let out = atop().args(&resume).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    let (a, b) = (
        read_artifact(&reference.join(artifact)),
        read_artifact(&killed.join(artifact)),
    );
    assert_eq!(
        a.manifest.payload_sha256, b.manifest.payload_sha256,
        "{stage}: the resumed run's weights differ from the uninterrupted run's"
    );
    assert_eq!(
        stage_rows(killed, stage),
        stage_rows(reference, stage),
        "{stage}: the metrics of the resumed run are not those of the uninterrupted one"
    );
}

#[test]
fn stages_run_alone_and_killed_gan_stages_resume_bit_for_bit() {
    let f = fixture("stages");
    let cfg = f.config.to_str().unwrap();
    let out = f.dir.join("out");
    let out_s = out.to_str().unwrap();
    let (ok, err) = run(&["train-classifier", "--config", cfg, "--out", out_s]);
    assert!(ok, "{err}");
    let stage_args = |stage: &'static str, extra: Vec<String>| {
        move |dir: &Path| -> Vec<String> {
            let mut a: Vec<String> = [stage, "--config", cfg, "--out", dir.to_str().unwrap()]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.extend(extra.iter().cloned());
            a
        }
    };
    kill_twice_and_resume(
        &stage_args("pretrain", vec![]),
        "pretrain",
        "purifier-pretrained.safetensors",
        &out,
        &f.dir.join("pretrain-killed"),
    );
    let classifier = out.join("classifier.safetensors");
    let purifier = out.join("purifier-pretrained.safetensors");
    assert!(classifier.is_file() && purifier.is_file());
    assert_drawn(&out.join("curves-train-classifier.png"), 560);
    // Generator and discriminator losses plus validation: two columns.
    assert_drawn(&out.join("curves-pretrain.png"), 1120);

    let inputs = vec![
        "--classifier".to_string(),
        classifier.display().to_string(),
        "--purifier".to_string(),
        purifier.display().to_string(),
    ];
    let finetune_args = stage_args("finetune", inputs);
    let reference = f.dir.join("reference");
    let killed = f.dir.join("killed");
    kill_twice_and_resume(
        &finetune_args,
        "finetune",
        "atop.safetensors",
        &reference,
        &killed,
    );
    let mut args = finetune_args(&killed);
    args.push("--resume".into());

    // Resuming with another configuration is refused.
    let mut other = args.clone();
    other.extend(["--set".into(), "finetune.lambda=0.7".into()]);
    let out = atop().args(&other).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("different configuration"),
        "{stderr}"
    );

    // Evaluation of the fine-tuned artifact with the pre-trained purifier
    // beside it, under the unseen threat models too (L2 AutoAttack rand and
    // StAdv, full gradients with EOT), at a tiny strength.
    let eval_dir = f.dir.join("eval");
    let protocol = f.dir.join("unseen.toml");
    std::fs::write(
        &protocol,
        r#"protocol = "tiny unseen"
subset = 8
subset_seed = 2024
batch_size = 8
score_draws = 2
attacks = [
  { norm = "linf", eps = 0.1, steps = 1, eot = 1, mode = "full" },
  { norm = "linf", eps = 0.1, steps = 1, eot = 1, mode = "classifier-only" },
  { attack = "autoattack", version = "rand", norm = "l2", eps = 1.5, steps = 2, eot = 2, mode = "full" },
  { attack = "stadv", norm = "linf", eps = 0.05, steps = 2, eot = 2, mode = "full" },
]
"#,
    )
    .unwrap();
    let (ok, err) = run(&[
        "eval",
        "--config",
        cfg,
        "--out",
        eval_dir.to_str().unwrap(),
        "--artifact",
        killed.join("atop.safetensors").to_str().unwrap(),
        "--baseline",
        purifier.to_str().unwrap(),
        "--protocol",
        protocol.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("report.json")).unwrap())
            .unwrap();
    // The under-tuning check reran every full-gradient attack on each
    // defense (PGD, AutoAttack rand, StAdv; not the transfer attack) with
    // four times the step and EOT, on the batch's 8 points.
    let probes = report["eval"]["tuning_probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2 * 3, "{probes:?}");
    for p in probes {
        assert_eq!(p["mode"], "full", "{p}");
        assert_eq!(p["points"], 8, "{p}");
        assert_eq!(
            p["probe_eot"].as_u64().unwrap(),
            4 * p["eot"].as_u64().unwrap(),
            "{p}"
        );
    }
    let pgd_probe = probes.iter().find(|p| p["attack"] == "pgd").unwrap();
    // PGD-1's default step (0.25) is already past 2 eps: the probe keeps it.
    assert_eq!(pgd_probe["step_size"], 0.25);
    assert_eq!(pgd_probe["probe_step_size"], 0.25);
    let rows = report["eval"]["rows"].as_array().unwrap();
    let pgd_row = rows.iter().find(|r| r["attack"] == "pgd").unwrap();
    assert_eq!(pgd_row["step_size"], 0.25, "{pgd_row}");
    assert_eq!(pgd_row["loss"], "ce", "{pgd_row}");
    let md = std::fs::read_to_string(eval_dir.join("report.md")).unwrap();
    assert!(md.contains("Under-tuning check"), "{md}");
    assert!(
        md.contains("autoattack-rand (single-draw selection"),
        "{md}"
    );
    // Each defense is evaluated with its artifact's transform, and says so.
    let defenses = report["defenses"].as_array().unwrap();
    assert_eq!(defenses.len(), 2);
    for d in defenses {
        assert_eq!(d["transform"]["missing_rate"], 0.25, "{d}");
        assert!(
            d["source"].as_str().unwrap().starts_with("artifact "),
            "{d}"
        );
    }
    // A transform setting that eval would ignore is refused; with
    // --override-transform it is used and the report says so.
    let eval_args = |dir: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "eval",
            "--config",
            cfg,
            "--out",
            dir.to_str().unwrap(),
            "--artifact",
            killed.join("atop.safetensors").to_str().unwrap(),
            "--set",
            "transform.missing_rate=0.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let ablation = f.dir.join("ablation");
    let out = atop().args(eval_args(&ablation, &[])).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("--set transform.missing_rate=0.5")
            && stderr.contains("--override-transform"),
        "{stderr}"
    );
    let out = atop()
        .args(eval_args(&ablation, &["--override-transform"]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ablated = std::fs::read_to_string(ablation.join("report.json")).unwrap();
    let ablated: serde_json::Value = serde_json::from_str(&ablated).unwrap();
    assert_eq!(ablated["defenses"][0]["transform"]["missing_rate"], 0.5);
    assert!(
        ablated["defenses"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("OVERRIDE"),
        "{ablated}"
    );
    assert!(
        std::fs::read_to_string(ablation.join("report.md"))
            .unwrap()
            .contains("OVERRIDE (--override-transform)")
    );
    let rows = report["eval"]["rows"].as_array().unwrap();
    // clean + 4 attacks + the L-inf worst case, for the classifier and two
    // defenses, and each defense's clean row through the transform alone.
    assert_eq!(rows.len(), 20);
    let transform_only: Vec<_> = rows
        .iter()
        .filter(|r| r["attack"] == "clean, transform only")
        .collect();
    assert_eq!(transform_only.len(), 2);
    assert!(
        transform_only
            .iter()
            .all(|r| r["kind"] == "defense" && r["draws"] == 2)
    );
    for (attack, norm) in [("autoattack-rand", "l2"), ("stadv", "flow-linf")] {
        let defended: Vec<_> = rows
            .iter()
            .filter(|r| r["attack"] == attack && r["kind"] == "defense")
            .collect();
        assert_eq!(defended.len(), 2, "{attack}");
        for r in defended {
            assert_eq!(
                (r["norm"].as_str(), r["mode"].as_str()),
                (Some(norm), Some("full"))
            );
            assert_eq!(
                (r["eot"].as_u64(), r["protocol"].as_str()),
                (Some(2), Some("tiny unseen"))
            );
        }
    }
    assert_eq!(report["eval"]["indices"].as_array().unwrap().len(), 8);
    assert!(
        std::fs::read_to_string(eval_dir.join("report.md"))
            .unwrap()
            .contains("classifier-only")
    );
    let results = eval_dir.join("results.png");
    assert_drawn(&results, 1100);
    assert_eq!(image::image_dimensions(&results).unwrap().1, 110 + 54 * 20);

    // `atop plot` redraws from what the run left; an empty directory is named.
    std::fs::remove_file(&results).unwrap();
    let (ok, err) = run(&["plot", eval_dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_drawn(&results, 1100);
    let empty = f.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, err) = run(&["plot", empty.to_str().unwrap()]);
    assert!(
        !ok && err.contains("empty") && err.contains("nothing to plot"),
        "{err}"
    );
    std::fs::remove_dir_all(&f.dir).ok();
}

#[test]
fn adversarial_training_and_bare_classifiers_side_by_side() {
    let f = fixture("adversarial");
    let cfg = f.config.to_str().unwrap();
    let dir = |name: &str| f.dir.join(name).display().to_string();
    // `atop eval --out DIR ARGS...`, which must succeed, and its report.json.
    let eval_report = |out: &str, args: &[&str]| {
        let out = dir(out);
        let mut all = vec!["eval", "--config", cfg, "--out", &out];
        all.extend(args);
        let (ok, err) = run(&all);
        assert!(ok, "{err}");
        read_report(Path::new(&out))
    };
    let train = |out: &str, method: &str| {
        let set = format!("train_classifier.adversarial={method}");
        let (ok, err) = run(&[
            "train-classifier",
            "--config",
            cfg,
            "--out",
            out,
            "--set",
            &set,
        ]);
        assert!(ok, "{method}: {err}");
        read_artifact(&Path::new(out).join("classifier.safetensors"))
    };
    let standard = train(&dir("standard"), "none");
    let pgd = train(&dir("pgd"), "pgd");
    let trades = train(&dir("trades"), "trades");
    // The manifest records the training attack, and selection used it.
    assert!(
        standard
            .manifest
            .training
            .get("adversarial_training")
            .is_none()
    );
    for (artifact, method) in [(&pgd, "pgd"), (&trades, "trades")] {
        let a = &artifact.manifest.training["adversarial_training"];
        assert_eq!(a["method"], method, "{a}");
        assert_eq!(
            (a["eps"].as_f64(), a["steps"].as_u64()),
            (Some(0.1), Some(10))
        );
        let metric = &artifact.manifest.metrics[0];
        assert_eq!(metric.name, "validation_robust_accuracy_training_attack");
    }
    assert_eq!(
        trades.manifest.training["adversarial_training"]["trades_beta"],
        6.0
    );
    assert_ne!(
        pgd.manifest.payload_sha256,
        standard.manifest.payload_sha256
    );

    // A classifier-only artifact is evaluated alone: bare classifier rows.
    let pgd_file = format!("{}/classifier.safetensors", dir("pgd"));
    let report = eval_report("eval-pgd", &["--artifact", &pgd_file]);
    let rows = report["eval"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "clean, two attacks, worst case");
    assert!(
        rows.iter()
            .all(|r| r["model"] == "classifier" && r["kind"] == "classifier")
    );
    assert!(
        report["classifiers"][0]["training"]
            .as_str()
            .unwrap()
            .contains("\"method\":\"pgd\"")
    );

    // Several artifacts side by side, each named by its file.
    let standard_file = format!("{}/classifier.safetensors", dir("standard"));
    let trades_file = format!("{}/classifier.safetensors", dir("trades"));
    let report = eval_report(
        "eval-all",
        &[
            "--artifact",
            &standard_file,
            "--artifact",
            &pgd_file,
            "--artifact",
            &trades_file,
        ],
    );
    let rows = report["eval"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    let names: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "classifier: pgd/classifier",
            "classifier: standard/classifier",
            "classifier: trades/classifier"
        ]
    );
    // Every row carries the expected accuracy, the mean of its counts.
    for r in rows {
        let counts: Vec<u64> = r["correct_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        let draws = r["draws"].as_u64().unwrap();
        let mean = counts.iter().sum::<u64>() as f64 / (counts.len() as u64 * draws) as f64;
        assert!(
            (r["accuracy_mean"].as_f64().unwrap() - mean).abs() < 1e-12,
            "{r}"
        );
    }
    let md = std::fs::read_to_string(f.dir.join("eval-all").join("report.md")).unwrap();
    assert!(
        md.contains("accuracy (mean over draws)") && md.contains(&trades_file),
        "{md}"
    );
    // A classifier trained on the transform's outputs comes with the
    // identity purifier and the transform, so eval scores it through them.
    let (ok, err) = run(&[
        "train-classifier",
        "--config",
        cfg,
        "--out",
        &dir("on-rt"),
        "--set",
        "train_classifier.transform_inputs=true",
    ]);
    assert!(ok, "{err}");
    let on_rt_file = format!("{}/classifier.safetensors", dir("on-rt"));
    let on_rt = read_artifact(Path::new(&on_rt_file));
    assert_eq!(
        serde_json::to_value(&on_rt.manifest.purifier).unwrap()["kind"],
        "identity"
    );
    assert_eq!(
        on_rt.manifest.transform.as_ref().unwrap().missing_rate,
        0.25
    );
    let report = eval_report("eval-on-rt", &["--artifact", &on_rt_file]);
    let rows = report["eval"]["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["model"] == "defense" && r["attack"] == "clean")
    );
    assert!(
        rows.iter()
            .any(|r| r["model"] == "defense" && r["attack"] == "clean, transform only")
    );
    // A study evaluates on the validation split, and the report says so.
    let report = eval_report(
        "eval-validation",
        &["--artifact", &pgd_file, "--set", "eval.split=validation"],
    );
    assert!(
        report["dataset"].as_str().unwrap().contains("VALIDATION"),
        "{}",
        report["dataset"]
    );
    assert_eq!(report["eval"]["indices"].as_array().unwrap().len(), 8);
    // An artifact given twice is refused.
    let twice = f.dir.join("twice");
    let (ok, err) = run(&[
        "eval",
        "--config",
        cfg,
        "--out",
        twice.to_str().unwrap(),
        "--artifact",
        &standard_file,
        "--artifact",
        &standard_file,
    ]);
    assert!(!ok && err.contains("given twice"), "{err}");
    std::fs::remove_dir_all(&f.dir).ok();
}

fn read_report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// A PNG of the given width with something drawn on it: a good share of
/// non-white pixels and some saturated blue (the curves and bars).
fn assert_drawn(path: &Path, width: u32) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.width(), width, "{}", path.display());
    let pixels = img.pixels().count();
    let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let blue = img
        .pixels()
        .filter(|p| p.0[2] > 200 && p.0[0] < 120 && p.0[1] < 120)
        .count();
    assert!(inked * 50 > pixels, "{}: almost blank", path.display());
    assert!(blue > 100, "{}: no curve or bar drawn", path.display());
}

#[test]
fn bad_input_gives_one_line_errors_and_leaves_nothing_behind() {
    let f = fixture("bad");
    let cfg = f.config.to_str().unwrap();
    let out = f.dir.join("out");
    let out_s = out.to_str().unwrap();

    // An unknown key, an impossible value, a grid that does not divide 28.
    for (setting, named) in [
        ("trainer.epochs=1", "trainer"),
        ("transform.missing_rate=2", "missing_rate"),
        ("transform.grid=8", "grid"),
    ] {
        let (ok, err) = run(&[
            "train-classifier",
            "--config",
            cfg,
            "--out",
            out_s,
            "--set",
            setting,
        ]);
        assert!(!ok && err.contains(named), "{setting}: {err}");
    }
    let (ok, err) = run(&[
        "train-classifier",
        "--config",
        "/nonexistent.toml",
        "--out",
        out_s,
    ]);
    assert!(!ok && err.contains("/nonexistent.toml"), "{err}");

    let (ok, err) = run(&[
        "finetune",
        "--config",
        cfg,
        "--out",
        out_s,
        "--classifier",
        "/missing.safetensors",
        "--purifier",
        "/missing.safetensors",
    ]);
    assert!(!ok && err.contains("/missing.safetensors"), "{err}");

    let images = f.dir.join("data/train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 100]).unwrap();
    let (ok, err) = run(&["train-classifier", "--config", cfg, "--out", out_s]);
    assert!(!ok && err.contains("train-images-idx3-ubyte"), "{err}");
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{err}"
    );
    assert!(!out.join("classifier.safetensors").exists());

    // No training images left after the validation split: said as such,
    // with no claim of a checkpoint that was never written.
    write_dataset(&f.dir.join("data"));
    let (ok, err) = run(&[
        "pretrain",
        "--config",
        cfg,
        "--out",
        out_s,
        "--set",
        "data.validation_fraction=0.999",
    ]);
    assert!(!ok && err.contains("no training images"), "{err}");
    assert!(!err.contains("checkpoint"), "{err}");

    std::fs::remove_dir_all(&f.dir).ok();
}

/// A protocol with every kind of row: gradient attacks in three modes, a
/// black-box attack and an AutoAttack composition, over 4 batches.
const PROTOCOL: &str = r#"
subset = 16
subset_seed = 5
batch_size = 4
score_draws = 2
attacks = [
  { attack = "pgd", norm = "linf", eps = 0.1, steps = 2, eot = 2, mode = "full" },
  { attack = "apgd-ce", norm = "linf", eps = 0.1, steps = 3, mode = "classifier-only" },
  { attack = "fgsm", norm = "linf", eps = 0.1, mode = "bpda" },
  { attack = "square", norm = "linf", eps = 0.1, queries = 5, mode = "full" },
  { attack = "autoattack", version = "custom", attacks = ["apgd-dlr", "fab-t"], norm = "linf", eps = 0.1, steps = 2, target_classes = 2, mode = "fixed-randomness" },
]
"#;

fn eval_rows(dir: &Path) -> serde_json::Value {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let mut eval = report["eval"].clone();
    eval.as_object_mut().unwrap().remove("shard");
    eval
}

#[test]
fn eval_shards_merge_to_the_whole_run_and_a_killed_eval_resumes() {
    let f = fixture("shards");
    let cfg = f.config.to_str().unwrap();
    let out = f.dir.join("out");
    finetuned(&f, &out, &[]);
    let artifact = out.join("atop.safetensors");
    let protocol = f.dir.join("protocol.toml");
    std::fs::write(&protocol, PROTOCOL).unwrap();
    let eval_args = |dir: &Path| -> Vec<String> {
        [
            "eval",
            "--config",
            cfg,
            "--protocol",
            protocol.to_str().unwrap(),
            "--artifact",
            artifact.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let whole = f.dir.join("whole");
    let out = atop().args(eval_args(&whole)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole_rows = eval_rows(&whole);
    let names: Vec<&str> = whole_rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["attack"].as_str().unwrap())
        .collect();
    for expected in [
        "pgd",
        "apgd-ce",
        "fgsm",
        "square",
        "autoattack-custom",
        "worst case",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !whole.join("eval-state.json").exists(),
        "state file left behind"
    );

    // Two shards, merged: the same table as one run. The shards and the
    // merge run through the Slurm scripts' own commands, as local processes.
    let script = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/slurm")
            .join(name)
    };
    let cluster = f.dir.join("cluster");
    let mut shard_args: Vec<String> = eval_args(&whole);
    let at = shard_args.iter().position(|a| a == "--out").unwrap();
    shard_args.drain(at..at + 2);
    shard_args.remove(0); // "eval": the script adds it
    let slurm_script = |name: &str, args: Vec<String>| {
        let out = Command::new("bash")
            .arg(script(name))
            .args(args)
            .env("ATOP", env!("CARGO_BIN_EXE_atop"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for i in 0..2 {
        let mut args = vec![i.to_string(), "2".into(), cluster.display().to_string()];
        args.extend(shard_args.iter().cloned());
        slurm_script("eval-shard.sh", args);
    }
    slurm_script(
        "eval-merge.sh",
        vec!["2".into(), cluster.display().to_string()],
    );
    assert_eq!(
        eval_rows(&cluster.join("merged")),
        whole_rows,
        "merged shards differ from the whole run"
    );
    let shard_dirs: Vec<PathBuf> = (0..2).map(|i| cluster.join(format!("shard-{i}"))).collect();
    let merged = f.dir.join("merged");
    // A shard missing is an error that says so.
    let (ok, err) = run(&[
        "eval",
        "merge",
        "--out",
        merged.to_str().unwrap(),
        shard_dirs[0].to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("do not cover"), "{err}");

    // kill -9 once the first units are saved, then --resume: same table.
    let killed = f.dir.join("killed");
    let mut child = atop()
        .args(eval_args(&killed))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let state = killed.join("eval-state.json");
    let start = Instant::now();
    while !state.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    assert!(
        !child.wait().unwrap().success(),
        "the evaluation finished before it could be killed"
    );
    let mut args = eval_args(&killed);
    args.push("--resume".into());
    let out = atop().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming evaluation"), "{stderr}");
    assert_eq!(eval_rows(&killed), whole_rows, "resumed evaluation differs");
    std::fs::remove_dir_all(&f.dir).ok();
}

/// Trains the classifier and pre-trains the purifier of fixture `f` into
/// `f.dir/out`; returns their artifacts' paths.
fn pretrained_inputs(f: &Fixture) -> (PathBuf, PathBuf) {
    let out = f.dir.join("out");
    for stage in ["train-classifier", "pretrain"] {
        let (ok, err) = run(&[
            stage,
            "--config",
            f.config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{stage}: {err}");
    }
    (
        out.join("classifier.safetensors"),
        out.join("purifier-pretrained.safetensors"),
    )
}

/// [`pretrained_inputs`], then AToP fine-tuning of them into `out` with
/// `extra` arguments; returns the inputs' paths.
fn finetuned(f: &Fixture, out: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (classifier, purifier) = pretrained_inputs(f);
    let mut args = vec![
        "finetune",
        "--config",
        f.config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--classifier",
        classifier.to_str().unwrap(),
        "--purifier",
        purifier.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, err) = run(&args);
    assert!(ok, "{err}");
    (classifier, purifier)
}

#[test]
fn a_budget_run_keeps_every_epoch_and_counts_its_compute() {
    let f = fixture("budget");
    let ft = f.dir.join("finetune");
    finetuned(
        &f,
        &ft,
        &[
            "--set",
            "finetune.keep_epoch_artifacts=true",
            "--set",
            "finetune.lr_schedule=cosine",
            "--set",
            "finetune.warmup_steps=2",
        ],
    );
    // 2 epochs of 6 steps of 8 images; PGD-5 through the defense.
    let compute = |p: &Path| read_artifact(p).manifest.training["compute"].clone();
    for (epoch, steps) in [(0, 6), (1, 12)] {
        let p = ft.join(format!("epochs/atop-epoch-{epoch:03}.safetensors"));
        let c = compute(&p);
        assert_eq!(c["optimizer_steps"], steps, "{c}");
        assert_eq!(c["attack_gradient_evaluations"], steps * 8 * 5, "{c}");
        assert_eq!(c["attack_gradients_through"], "defense", "{c}");
    }
    let last = compute(&ft.join("atop.safetensors"));
    assert_eq!(last["attack_gradient_evaluations"], 480, "{last}");
    // The selected defense is one of the kept epochs, weight for weight.
    let selected = read_artifact(&ft.join("atop.safetensors")).manifest;
    let kept: Vec<String> = (0..2)
        .map(|e| {
            let p = ft.join(format!("epochs/atop-epoch-{e:03}.safetensors"));
            read_artifact(&p).manifest.payload_sha256
        })
        .collect();
    assert!(kept.contains(&selected.payload_sha256), "{kept:?}");
    // The schedule ran: warm-up, then a falling cosine, logged per step.
    let factors: Vec<f64> = std::fs::read_to_string(ft.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["losses"]["lr_factor"].as_f64())
        .collect();
    assert_eq!(factors.len(), 12, "{factors:?}");
    assert_eq!(&factors[..3], &[0.5, 1.0, 1.0], "{factors:?}");
    assert!(factors[2..].windows(2).all(|w| w[1] < w[0]), "{factors:?}");
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[test]
fn reproduce_reruns_each_stage_to_the_same_bits_and_refuses_what_it_cannot() {
    let f = fixture("reproduce");
    let out = f.dir.join("out");
    let (classifier, _) = finetuned(&f, &out, &[]);
    // Each stage's artifact reruns from its manifest alone, on flex: the same bits.
    for (i, name) in ["classifier", "purifier-pretrained", "atop"]
        .iter()
        .enumerate()
    {
        let again = f.dir.join(format!("again{i}"));
        let out = atop()
            .args([
                "reproduce",
                out.join(format!("{name}.safetensors")).to_str().unwrap(),
            ])
            .args(["--out", again.to_str().unwrap()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Identical bits"), "{name}: {stdout}");
        assert!(again.join("reproduce.md").is_file());
    }
    // An input that is not the one the manifest records is refused by name.
    let (ok, err) = run(&[
        "reproduce",
        out.join("atop.safetensors").to_str().unwrap(),
        "--out",
        f.dir.join("wrong").to_str().unwrap(),
        "--classifier",
        f.dir
            .join("again0/classifier.safetensors")
            .to_str()
            .unwrap(),
        "--purifier",
        out.join("atop.safetensors").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("is not the purifier"), "{err}");
    // An artifact with no recorded training has nothing to rerun.
    let mut bare = read_artifact(&classifier);
    bare.manifest.training = serde_json::Value::Null;
    let bare_path = f.dir.join("bare.safetensors");
    std::fs::write(&bare_path, bare.to_bytes().unwrap()).unwrap();
    let (ok, err) = run(&[
        "reproduce",
        bare_path.to_str().unwrap(),
        "--out",
        f.dir.join("bare").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("training.stage"), "{err}");
    let _ = std::fs::remove_dir_all(&f.dir);
}
