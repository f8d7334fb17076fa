//! The controls as a permalink, and back. Names are parsed with the
//! permalink's own `FromStr` impls, so a value the page does not know is an
//! error naming the control, never a silent default.

use atop::demo::{DemoAttack, DemoMode, ImageRef, Norm, Permalink, TransformKind};

use crate::dom::{select_value, set_value};
use crate::state::{App, Shared};

/// The image the `#image` control names: a bundled sample or the upload.
pub fn selected_image(state: &App) -> Result<ImageRef, String> {
    Ok(match select_value("image")?.as_str() {
        "upload" => state.upload.clone().ok_or("no image was uploaded")?,
        other => ImageRef::Sample(
            other
                .strip_prefix("sample:")
                .and_then(|i| i.parse().ok())
                .ok_or("pick a test image")?,
        ),
    })
}

/// A select control's value as a choice (`FromStr`), naming the control.
fn choice<T: std::str::FromStr<Err = atop::demo::PermalinkError>>(id: &str) -> Result<T, String> {
    select_value(id)?
        .parse()
        .map_err(|e: atop::demo::PermalinkError| format!("#{id}: {}", e.problem))
}

/// A number input's trimmed text, or an error naming it when empty.
fn number(id: &str) -> Result<String, String> {
    let v = crate::dom::input_value(id)?;
    match v.trim() {
        "" => Err(format!("{id}: enter a value")),
        t => Ok(t.to_string()),
    }
}

fn whole(id: &str) -> Result<u64, String> {
    number(id)?
        .parse()
        .map_err(|_| format!("{id}: expected a whole number"))
}

/// The controls as a permalink (errors name the control).
pub fn read_controls(app: &Shared) -> Result<Permalink, String> {
    let state = app.borrow();
    let loaded = state.loaded.as_ref().ok_or("no artifact is loaded")?;
    let link = Permalink {
        artifact_sha256: loaded.sha256().to_string(),
        image: selected_image(&state)?,
        attack: choice::<DemoAttack>("attack")?,
        norm: choice::<Norm>("norm")?,
        eps: number("eps")?
            .parse()
            .map_err(|_| "eps: expected a number".to_string())?,
        steps: whole("steps")? as usize,
        eot: whole("eot")? as usize,
        transform: choice::<TransformKind>("transform")?,
        mode: choice::<DemoMode>("mode")?,
        seed: whole("seed")?,
    };
    // The parser's checks (ranges, budgets) apply to the form too.
    Permalink::from_query(&link.to_query()).map_err(|e| e.to_string())
}

/// Puts a link's settings (all but the image) into the controls.
pub fn set_controls(link: &Permalink) {
    use atop::demo::LinkName;
    set_value("attack", link.attack.link_name());
    set_value("norm", link.norm.link_name());
    set_value("eps", &link.eps.to_string());
    set_value("steps", &link.steps.to_string());
    set_value("eot", &link.eot.to_string());
    set_value("transform", link.transform.link_name());
    set_value("mode", link.mode.link_name());
    set_value("seed", &link.seed.to_string());
}
