//! One experiment on the page: the clean prediction, the attack with a
//! progress bar (yielding to the browser between steps), and the display of
//! images, predictions and timings. The experiment itself is the shared
//! crate's [`atop::demo`], the same code `atop attack` runs natively.

use atop::demo::{self, DemoAttack, DemoAttackRun, DemoModels, Permalink};
use burn::tensor::Tensor;
use web_sys::{HtmlAnchorElement, HtmlElement, HtmlProgressElement};

use crate::controls::{read_controls, selected_image};
use crate::dom::{
    by_id, clear_error, document, draw_rgba, now_ms, set_attr, set_text, show_error, window,
    yield_to_browser,
};
use crate::pixels::{perturbation_rgba, to_rgba, transformed_rgba};
use crate::state::{Shared, set_busy};

/// Reads a tensor back without blocking (WebGPU cannot block in a browser),
/// as values of `E`.
pub(crate) async fn read_as<E, const D: usize, K>(t: Tensor<D, K>) -> Result<Vec<E>, String>
where
    E: burn::tensor::Element,
    K: burn::tensor::kind::Basic,
{
    t.into_data_async()
        .await
        .map_err(|e| format!("cannot read a result back from the device: {e:?}"))?
        .convert::<E>()
        .try_to_vec::<E>()
        .map_err(|e| format!("unexpected result data: {e:?}"))
}

/// [`read_as`] for float tensors.
pub(crate) async fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    read_as(t).await
}

/// The models for `attack`: APGD's step-size rule reads losses back every
/// iteration, which only a CPU backend can do synchronously, so under WebGPU
/// APGD runs on the CPU copy of the models.
pub(crate) fn models_for(app: &Shared, attack: DemoAttack) -> Result<(DemoModels, bool), String> {
    let mut state = app.borrow_mut();
    let webgpu = state.webgpu;
    let loaded = state.loaded.as_mut().ok_or("no artifact is loaded")?;
    if !(webgpu && attack == DemoAttack::ApgdCe) {
        return Ok((loaded.models.clone(), false));
    }
    if loaded.cpu_models.is_none() {
        let cpu = burn::tensor::Device::flex();
        loaded.cpu_models = Some(
            DemoModels::load(&loaded.artifact, &cpu, &loaded.name).map_err(|e| e.to_string())?,
        );
    }
    Ok((loaded.cpu_models.clone().ok_or("no CPU models")?, true))
}

/// Shows the chosen image and the bare classifier's prediction on it;
/// returns the time since navigation start, in ms.
pub async fn show_clean(app: &Shared) -> Result<f64, String> {
    let (models, _) = models_for(app, DemoAttack::Pgd)?;
    let image_ref = selected_image(&app.borrow())?;
    let (image, label) = models.image(&image_ref).map_err(|e| e.to_string())?;
    let logits = read(
        models
            .classifier
            .forward(image.clone())
            .map_err(|e| e.to_string())?,
    )
    .await?;
    let [c, h, w] = models.input;
    let pixels = read(image).await?;
    draw_rgba("img-clean", &to_rgba(&pixels, [c, h, w]), w, h)?;
    let truth = label
        .and_then(|l| usize::try_from(l).ok())
        .and_then(|l| models.class_names.get(l).cloned());
    set_text(
        "truth",
        &truth.map_or("uploaded image (no label)".into(), |t| {
            format!("true class: {t}")
        }),
    );
    show_predictions("pred-clean", &logits, &models.class_names)?;
    for id in ["pred-adv", "pred-defended"] {
        clear_predictions(id);
    }
    Ok(now_ms())
}

/// Median milliseconds of one purify+classify of one image (transform,
/// purifier, classifier, result read back), after a warm-up pass.
pub async fn measure_defense(app: &Shared) -> Result<f64, String> {
    let (models, _) = models_for(app, DemoAttack::Pgd)?;
    let defense = models.defense(models.transform.kind);
    let (image, _) = models
        .image(&selected_image(&app.borrow())?)
        .map_err(|e| e.to_string())?;
    let mut rng = atop::rng::seeded(0);
    let mut times = Vec::new();
    for i in 0..4 {
        let start = now_ms();
        let out = defense
            .forward(image.clone(), &mut rng)
            .map_err(|e| e.to_string())?;
        read(out.logits).await?;
        if i > 0 {
            times.push(now_ms() - start);
        }
        yield_to_browser().await;
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Runs the controls' attack and shows everything; errors go to the page.
pub async fn run_attack(app: Shared) {
    while_busy(&app, "attack failed", attack(&app)).await;
}

/// Runs `work` (lazy until awaited) with the buttons disabled, unless
/// something already runs; its error goes to the page.
pub(crate) async fn while_busy(
    app: &Shared,
    failed: &str,
    work: impl std::future::Future<Output = Result<(), String>>,
) {
    if app.borrow().busy {
        return;
    }
    set_busy(app, true);
    clear_error();
    let result = work.await;
    set_busy(app, false);
    set_attr("progress-text", "data-state", "idle");
    if let Err(e) = result {
        set_text("progress-text", failed);
        show_error(&e);
    }
}

async fn attack(app: &Shared) -> Result<(), String> {
    let link = read_controls(app)?;
    publish_permalink(&link)?;
    let (models, on_cpu) = models_for(app, link.attack)?;
    let defense = models.defense(link.transform);
    let (image, label) = models.image(&link.image).map_err(|e| e.to_string())?;
    let clean_logits = read(defense.classify(image.clone()).map_err(|e| e.to_string())?).await?;
    let label = demo::attack_label(label, &clean_logits);
    let mut run =
        DemoAttackRun::start(&defense, image.clone(), label, &link).map_err(|e| e.to_string())?;
    let progress = by_id::<HtmlProgressElement>("progress")?;
    progress.set_max(run.total_steps() as f64);
    progress.set_value(0.0);
    set_attr("progress-text", "data-state", "running");
    let where_ = if on_cpu { " on the CPU backend" } else { "" };
    let start = now_ms();
    while !run.is_finished() {
        run.step(&defense).map_err(|e| e.to_string())?;
        // Wait for the device so progress and timing are real.
        read(run.current().slice([0..1, 0..1, 0..1, 0..1])).await?;
        progress.set_value(run.steps_done() as f64);
        set_text(
            "progress-text",
            &format!(
                "{} step {}/{}{where_}",
                link.attack.name().to_uppercase(),
                run.steps_done(),
                run.total_steps()
            ),
        );
        yield_to_browser().await;
    }
    let step_ms = (now_ms() - start) / run.total_steps() as f64;
    let outcome = demo::outcome(&defense, image.clone(), run.finish(), link.seed)
        .map_err(|e| e.to_string())?;
    let shown = Shown {
        clean: read(image).await?,
        adversarial: read(outcome.adversarial).await?,
        transformed: read(outcome.transformed).await?,
        mask: read(outcome.mask).await?,
        purified: read(outcome.purified).await?,
        clean_logits: read(outcome.clean_logits).await?,
        adversarial_logits: read(outcome.adversarial_logits).await?,
        defended_logits: read(outcome.defended_logits).await?,
    };
    shown.render(&models, &link)?;
    set_text(
        "progress-text",
        &format!(
            "done: {} {} steps in {:.0} ms{where_}",
            run_name(&link),
            link_steps(&link),
            step_ms * link_steps(&link) as f64
        ),
    );
    set_attr("timings", "data-attack-step-ms", &format!("{step_ms:.1}"));
    set_attr(
        "timings",
        "data-attack-backend",
        if on_cpu || !app.borrow().webgpu {
            "cpu"
        } else {
            "webgpu"
        },
    );
    show_timings();
    Ok(())
}

fn run_name(link: &Permalink) -> String {
    format!(
        "{} ({})",
        link.attack.name().to_uppercase(),
        link.mode.name()
    )
}

fn link_steps(link: &Permalink) -> usize {
    if link.attack == DemoAttack::Fgsm {
        1
    } else {
        link.steps
    }
}

/// Puts the link in the address bar (without reloading) and in #permalink.
fn publish_permalink(link: &Permalink) -> Result<(), String> {
    let hash = format!("#{}", link.to_query());
    let location = window().location();
    let base = format!(
        "{}{}",
        location.pathname().unwrap_or_default(),
        location.search().unwrap_or_default()
    );
    if let Ok(history) = window().history() {
        let _ = history.replace_state_with_url(
            &wasm_bindgen::JsValue::NULL,
            "",
            Some(&format!("{base}{hash}")),
        );
    }
    let anchor = by_id::<HtmlAnchorElement>("permalink")?;
    anchor.set_href(&hash);
    anchor.set_text_content(Some("permalink to this result"));
    Ok(())
}

/// Everything read back from one experiment.
struct Shown {
    clean: Vec<f32>,
    adversarial: Vec<f32>,
    transformed: Vec<f32>,
    mask: Vec<f32>,
    purified: Vec<f32>,
    clean_logits: Vec<f32>,
    adversarial_logits: Vec<f32>,
    defended_logits: Vec<f32>,
}

impl Shown {
    fn render(&self, models: &DemoModels, link: &Permalink) -> Result<(), String> {
        let [c, h, w] = models.input;
        let dims = [c, h, w];
        draw_rgba("img-clean", &to_rgba(&self.clean, dims), w, h)?;
        draw_rgba("img-adv", &to_rgba(&self.adversarial, dims), w, h)?;
        let (delta, max) = perturbation_rgba(&self.clean, &self.adversarial, dims);
        draw_rgba("img-perturbation", &delta, w, h)?;
        set_text(
            "perturbation-scale",
            &format!("largest change {max:.3} (eps {})", link.eps),
        );
        draw_rgba(
            "img-transformed",
            &transformed_rgba(&self.transformed, &self.mask, dims),
            w,
            h,
        )?;
        draw_rgba("img-purified", &to_rgba(&self.purified, dims), w, h)?;
        let names = &models.class_names;
        show_predictions("pred-clean", &self.clean_logits, names)?;
        show_predictions("pred-adv", &self.adversarial_logits, names)?;
        show_predictions("pred-defended", &self.defended_logits, names)?;
        let finite = [
            &self.clean,
            &self.adversarial,
            &self.transformed,
            &self.purified,
            &self.clean_logits,
            &self.adversarial_logits,
            &self.defended_logits,
        ]
        .iter()
        .all(|v| !v.is_empty() && v.iter().all(|x| x.is_finite()));
        set_attr(
            "results",
            "data-finite",
            if finite { "true" } else { "false" },
        );
        set_attr("results", "data-permalink", &link.to_query());
        // The exact adversarial image, so it can be scored elsewhere
        // (`atop attack --adversarial`) apart from how the attack got there.
        set_attr(
            "results",
            "data-adversarial",
            &json_floats(&self.adversarial),
        );
        Ok(())
    }
}

fn clear_predictions(id: &str) {
    if let Ok(el) = by_id::<HtmlElement>(id) {
        el.set_inner_html("<li class=\"empty\">run an attack</li>");
        for name in ["data-class", "data-logits", "data-probs"] {
            let _ = el.remove_attribute(name);
        }
    }
}

/// The top three classes with probability bars; all logits and
/// probabilities in data attributes (the e2e test reads them).
fn show_predictions(id: &str, logits: &[f32], names: &[String]) -> Result<(), String> {
    let el = by_id::<HtmlElement>(id)?;
    let top = demo::top_predictions(logits);
    el.set_inner_html("");
    for &(class, p) in top.iter().take(3) {
        let item = document()
            .create_element("li")
            .map_err(|e| format!("{e:?}"))?;
        let name = names.get(class).map_or("?", String::as_str);
        item.set_inner_html(&format!(
            "<span class=\"name\"></span><span class=\"bar\" style=\"width:{:.1}%\"></span><span class=\"p\">{:.1}%</span>",
            100.0 * p,
            100.0 * p
        ));
        if let Some(span) = item.first_element_child() {
            span.set_text_content(Some(name));
        }
        el.append_child(&item).map_err(|e| format!("{e:?}"))?;
    }
    let mut probs = vec![0f32; logits.len()];
    for &(class, p) in &top {
        probs[class] = p;
    }
    let _ = el.set_attribute("data-class", &top.first().map_or(0, |t| t.0).to_string());
    let _ = el.set_attribute("data-logits", &json_floats(logits));
    let _ = el.set_attribute("data-probs", &json_floats(&probs));
    Ok(())
}

/// A JSON array of `values`, each in Rust's shortest round-trip form (so a
/// reader gets the exact f32 back), non-finite ones as null.
fn json_floats(values: &[f32]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|x| {
            if x.is_finite() {
                format!("{x}")
            } else {
                "null".into()
            }
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// Writes the measured timings as text.
pub fn show_timings() {
    let Ok(el) = by_id::<HtmlElement>("timings") else {
        return;
    };
    let get = |name: &str| el.get_attribute(name).unwrap_or_else(|| "–".into());
    el.set_text_content(Some(&format!(
        "first prediction {} ms after page start · purify+classify {} ms · attack step {} ms",
        get("data-first-prediction-ms"),
        get("data-purify-classify-ms"),
        get("data-attack-step-ms"),
    )));
}
