//! The scorecard: every bundled image attacked with the page's settings, on
//! the bare classifier and on the defense, and a small chart of how many
//! each keeps (the defense's as the mean over draws). The counting is the
//! shared crate's [`atop::demo::ScorecardRun`].

use atop::demo::{LinkName, Permalink, Scorecard, ScorecardRun};
use web_sys::{HtmlElement, HtmlProgressElement};

use crate::controls::read_controls;
use crate::dom::{by_id, set_attr, set_text, yield_to_browser};
use crate::run::{models_for, read, read_as, while_busy};
use crate::state::Shared;

/// Transform draws the defense is scored over.
const DRAWS: usize = 10;

/// Runs the scorecard; errors go to the page.
pub async fn run_scorecard(app: Shared) {
    while_busy(&app, "scorecard failed", scorecard(&app)).await;
}

async fn scorecard(app: &Shared) -> Result<(), String> {
    let link = read_controls(app)?;
    let (models, on_cpu) = models_for(app, link.attack)?;
    let mut run = ScorecardRun::start(&models, &link, DRAWS).map_err(|e| e.to_string())?;
    let progress = by_id::<HtmlProgressElement>("progress")?;
    progress.set_max(run.total_steps() as f64);
    progress.set_value(0.0);
    set_attr("progress-text", "data-state", "running");
    let where_ = if on_cpu { " on the CPU backend" } else { "" };
    while !run.is_finished() {
        run.step().map_err(|e| e.to_string())?;
        // Wait for the device so the progress is real.
        read(run.current().slice([0..1, 0..1, 0..1, 0..1])).await?;
        progress.set_value(run.steps_done() as f64);
        set_text(
            "progress-text",
            &format!(
                "scorecard: {} images, step {}/{}{where_}",
                run.images(),
                run.steps_done(),
                run.total_steps()
            ),
        );
        yield_to_browser().await;
    }
    let (images, draws) = (run.images(), run.draws());
    let counts: Vec<i64> = read_as(run.finish().map_err(|e| e.to_string())?).await?;
    let card = ScorecardRun::scorecard(images, draws, &counts).map_err(|e| e.to_string())?;
    render(&card, &link)?;
    set_text("progress-text", &format!("scorecard done{where_}"));
    Ok(())
}

/// Two bars (kept / images) and the figures; the counts in data attributes
/// (the e2e test reads them).
fn render(card: &Scorecard, link: &Permalink) -> Result<(), String> {
    let n = card.images as f64;
    let bar = |id: &str, kept: f64| {
        set_attr(id, "style", &format!("width:{:.1}%", 100.0 * kept / n));
    };
    bar("score-classifier", card.classifier_kept as f64);
    bar("score-defense", card.defense_kept);
    set_text(
        "score-classifier-text",
        &format!(
            "{} of {} kept ({} clean)",
            card.classifier_kept, card.images, card.classifier_clean
        ),
    );
    set_text(
        "score-defense-text",
        &format!(
            "{:.1} of {} kept ({:.1} clean)",
            card.defense_kept, card.images, card.defense_clean
        ),
    );
    set_text(
        "scorecard-settings",
        &format!(
            "{} ({}), eps {}, {} steps, EOT {}, {}; defense scored over {} draws. One browser run on {} images: a demonstration, not an evaluation (atop eval).",
            link.attack.name().to_uppercase(),
            link.mode.name(),
            link.eps,
            link.steps,
            link.eot,
            link.transform.link_name().to_uppercase(),
            card.draws,
            card.images
        ),
    );
    for (name, value) in [
        ("data-images", card.images.to_string()),
        ("data-classifier-clean", card.classifier_clean.to_string()),
        ("data-classifier-kept", card.classifier_kept.to_string()),
        ("data-defense-clean", format!("{}", card.defense_clean)),
        ("data-defense-kept", format!("{}", card.defense_kept)),
        ("data-draws", card.draws.to_string()),
        ("data-permalink", link.to_query()),
    ] {
        set_attr("scorecard", name, &value);
    }
    by_id::<HtmlElement>("scorecard")?.set_hidden(false);
    Ok(())
}
