//! The page's start: backend choice, artifact loading, image choices and the
//! event wiring. The page's state is [`crate::state`], the controls
//! [`crate::controls`], the attack and its display [`crate::run`]; imports
//! go one way (app -> run -> controls -> state -> dom).

use std::cell::RefCell;
use std::rc::Rc;

use atop::artifact::Artifact;
use atop::demo::{DemoModels, ImageRef, Permalink};
use burn::tensor::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    Event, HtmlCanvasElement, HtmlInputElement, HtmlOptionElement, HtmlSelectElement, ImageBitmap,
    Response,
};

use crate::dom::{
    by_id, clear_error, document, js_error, set_attr, set_text, set_value, show_error, window,
};
use crate::pixels::rgba_to_input;
use crate::run;
use crate::scorecard;
use crate::state::{App, Loaded, Shared};

/// The artifact shipped with the demo (made by scripts/make-demo-artifact.sh).
const BUNDLED_ARTIFACT: &str = "assets/fmnist-demo.safetensors";

#[wasm_bindgen(start)]
pub fn start() {
    // A bug must not freeze the page silently: log it and show it.
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        show_error(&format!(
            "Internal error, please report it (the page must be reloaded): {info}"
        ));
    }));
    spawn_local(async {
        if let Err(e) = boot().await {
            show_error(&e);
        }
    });
}

fn query_param(name: &str) -> Option<String> {
    let search = window().location().search().ok()?;
    search
        .trim_start_matches('?')
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| js_sys::decode_uri_component(v).map_or(v.to_string(), String::from))
}

/// WebGPU when the browser offers an adapter (and `?backend=cpu` is not
/// set), else burn's CPU backend compiled to wasm.
async fn choose_device() -> (Device, bool, String) {
    if query_param("backend").as_deref() == Some("cpu") {
        return (
            Device::flex(),
            false,
            "CPU (wasm, chosen by ?backend=cpu)".into(),
        );
    }
    match Device::wgpu_options().init_async().await {
        Ok(device) => (device, true, "WebGPU".into()),
        Err(e) => {
            web_sys::console::info_1(
                &format!("no WebGPU adapter ({e}); using the CPU backend").into(),
            );
            (
                Device::flex(),
                false,
                "CPU (wasm; no WebGPU adapter)".into(),
            )
        }
    }
}

async fn boot() -> Result<(), String> {
    let (device, webgpu, label) = choose_device().await;
    set_text("backend", &label);
    set_attr(
        "backend",
        "data-backend",
        if webgpu { "webgpu" } else { "cpu" },
    );
    let app: Shared = Rc::new(RefCell::new(App {
        device,
        webgpu,
        loaded: None,
        upload: None,
        busy: false,
    }));
    wire_events(&app)?;
    let source = query_param("model").unwrap_or_else(|| BUNDLED_ARTIFACT.to_string());
    let bytes = fetch_bytes(&source).await?;
    load_artifact(&app, bytes, &source)?;
    // A permalink in the fragment fixes image and settings; check it names
    // this artifact before anything runs.
    // A bad or foreign link is reported; the page still works.
    let link = match permalink_in_url().and_then(|link| {
        if let Some(l) = &link {
            apply_permalink(&app, l)?;
        }
        Ok(link)
    }) {
        Ok(link) => link,
        Err(e) => {
            show_error(&e);
            None
        }
    };
    let first = run::show_clean(&app).await?;
    set_attr(
        "timings",
        "data-first-prediction-ms",
        &format!("{:.0}", first),
    );
    let ms = run::measure_defense(&app).await?;
    set_attr("timings", "data-purify-classify-ms", &format!("{ms:.1}"));
    run::show_timings();
    let body = document().body().ok_or("the page has no body")?;
    let _ = body.set_attribute("data-ready", "true");
    if link.is_some() {
        run::run_attack(app.clone()).await;
    }
    Ok(())
}

fn permalink_in_url() -> Result<Option<Permalink>, String> {
    let hash = window().location().hash().unwrap_or_default();
    let hash = hash.trim_start_matches('#');
    if hash.is_empty() {
        return Ok(None);
    }
    Permalink::from_query(hash)
        .map(Some)
        .map_err(|e| format!("This link cannot be read: {e}."))
}

async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let failed = |e: &JsValue| format!("cannot fetch artifact {url}: {}", js_error(e));
    let response: Response = JsFuture::from(window().fetch_with_str(url))
        .await
        .map_err(|e| failed(&e))?
        .dyn_into()
        .map_err(|e| failed(&e))?;
    if !response.ok() {
        return Err(format!(
            "cannot fetch artifact {url}: HTTP {}",
            response.status()
        ));
    }
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| failed(&e))?)
        .await
        .map_err(|e| failed(&e))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Reads and verifies an artifact (format, payload hash, defense identity, models) and makes
/// it the page's; on any error the previous artifact stays loaded.
fn load_artifact(app: &Shared, bytes: Vec<u8>, name: &str) -> Result<(), String> {
    let artifact = Artifact::from_bytes(&bytes, name).map_err(|e| format!("Refused: {e}"))?;
    let device = app.borrow().device.clone();
    let models = DemoModels::load(&artifact, &device, name).map_err(|e| format!("Refused: {e}"))?;
    fill_image_choices(&models)?;
    set_text(
        "artifact-name",
        &format!(
            "{name} (defense sha256 {}…)",
            &artifact.manifest.defense_sha256[..12]
        ),
    );
    let mut state = app.borrow_mut();
    state.upload = None;
    state.loaded = Some(Loaded {
        name: name.to_string(),
        artifact,
        models,
        cpu_models: None,
    });
    Ok(())
}

fn fill_image_choices(models: &DemoModels) -> Result<(), String> {
    let select = by_id::<HtmlSelectElement>("image")?;
    select.set_inner_html("");
    let labels = models
        .samples
        .as_ref()
        .map(|(_, l)| l.clone())
        .unwrap_or_default();
    for (i, label) in labels.iter().enumerate() {
        let name = usize::try_from(*label)
            .ok()
            .and_then(|l| models.class_names.get(l))
            .map_or("?", String::as_str);
        add_option(
            &select,
            &format!("sample:{i}"),
            &format!("test image {i}: {name}"),
        )?;
    }
    Ok(())
}

fn add_option(select: &HtmlSelectElement, value: &str, text: &str) -> Result<(), String> {
    let option: HtmlOptionElement = document()
        .create_element("option")
        .map_err(|e| js_error(&e))?
        .dyn_into()
        .map_err(|_| "cannot make an option")?;
    option.set_value(value);
    option.set_text(text);
    select
        .add_with_html_option_element(&option)
        .map_err(|e| js_error(&e))
}

/// Puts a permalink's settings into the controls, after checking that it
/// names the loaded artifact.
fn apply_permalink(app: &Shared, link: &Permalink) -> Result<(), String> {
    let sha = app
        .borrow()
        .loaded
        .as_ref()
        .map(|l| l.sha256().to_string())
        .unwrap_or_default();
    if link.artifact_sha256 != sha {
        return Err(format!(
            "Refused: this link is for artifact {}, but the loaded artifact is {sha}. Load that artifact (file picker or ?model=URL) to reproduce it.",
            link.artifact_sha256
        ));
    }
    match &link.image {
        ImageRef::Sample(i) => set_value("image", &format!("sample:{i}")),
        pixels @ ImageRef::Pixels { .. } => set_upload(app, pixels.clone())?,
    }
    crate::controls::set_controls(link);
    Ok(())
}

fn set_upload(app: &Shared, image: ImageRef) -> Result<(), String> {
    let select = by_id::<HtmlSelectElement>("image")?;
    if app.borrow().upload.is_none() {
        add_option(&select, "upload", "uploaded image")?;
    }
    app.borrow_mut().upload = Some(image);
    select.set_value("upload");
    Ok(())
}

fn on<E: JsCast>(id: &str, event: &str, f: impl Fn(E) + 'static) -> Result<(), String> {
    let target = by_id::<web_sys::EventTarget>(id)?;
    let closure = Closure::<dyn Fn(Event)>::new(move |e: Event| {
        if let Ok(e) = e.dyn_into::<E>() {
            f(e)
        }
    });
    target
        .add_event_listener_with_callback(event, closure.as_ref().unchecked_ref())
        .map_err(|e| js_error(&e))?;
    // The page lives as long as the listeners: leak the closures on purpose.
    closure.forget();
    Ok(())
}

/// Runs `task` on each `event` of element `id`, showing its error on the page.
fn on_async<F, Fut>(app: &Shared, id: &str, event: &str, task: F) -> Result<(), String>
where
    F: Fn(Shared) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + 'static,
{
    let app = app.clone();
    on::<Event>(id, event, move |_| {
        let work = task(app.clone());
        spawn_local(async move {
            clear_error();
            if let Err(e) = work.await {
                show_error(&e);
            }
        });
    })
}

fn wire_events(app: &Shared) -> Result<(), String> {
    let a = app.clone();
    on::<Event>("run-attack", "click", move |_| {
        spawn_local(run::run_attack(a.clone()));
    })?;
    let a = app.clone();
    on::<Event>("run-scorecard", "click", move |_| {
        spawn_local(scorecard::run_scorecard(a.clone()));
    })?;
    on_async(app, "image", "change", |a| async move {
        run::show_clean(&a).await.map(|_| ())
    })?;
    on_async(app, "upload", "change", |a| async move {
        upload_image(&a).await
    })?;
    on_async(app, "artifact-file", "change", |a| async move {
        pick_artifact(&a).await
    })
}

fn picked_file(id: &str) -> Result<Option<web_sys::File>, String> {
    let input = by_id::<HtmlInputElement>(id)?;
    Ok(input.files().and_then(|f| f.get(0)))
}

async fn pick_artifact(app: &Shared) -> Result<(), String> {
    let Some(file) = picked_file("artifact-file")? else {
        return Ok(());
    };
    let name = file.name();
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("cannot read {name}: {}", js_error(&e)))?;
    if app.borrow().busy {
        return Err("wait for the running attack to finish".into());
    }
    load_artifact(app, js_sys::Uint8Array::new(&buffer).to_vec(), &name)?;
    run::show_clean(app).await.map(|_| ())
}

/// Decodes an uploaded PNG/JPEG in the browser, resizes it to the model's
/// input and keeps its 8-bit pixels (they travel in the permalink).
async fn upload_image(app: &Shared) -> Result<(), String> {
    let Some(file) = picked_file("upload")? else {
        return Ok(());
    };
    let name = file.name();
    let [c, h, w] = app
        .borrow()
        .loaded
        .as_ref()
        .ok_or("no artifact is loaded")?
        .models
        .input;
    let bitmap: ImageBitmap = JsFuture::from(
        window()
            .create_image_bitmap_with_blob(&file)
            .map_err(|e| js_error(&e))?,
    )
    .await
    .map_err(|_| format!("{name} is not an image the browser can decode (use PNG or JPEG)"))?
    .dyn_into()
    .map_err(|_| format!("{name}: not an image"))?;
    let canvas: HtmlCanvasElement = document()
        .create_element("canvas")
        .map_err(|e| js_error(&e))?
        .dyn_into()
        .map_err(|_| "cannot make a canvas")?;
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    let context = crate::dom::context_2d(&canvas)?;
    context
        .draw_image_with_image_bitmap_and_dw_and_dh(&bitmap, 0.0, 0.0, w as f64, h as f64)
        .map_err(|e| js_error(&e))?;
    let rgba = context
        .get_image_data(0.0, 0.0, w as f64, h as f64)
        .map_err(|e| js_error(&e))?
        .data()
        .0;
    let values = rgba_to_input(&rgba, [c, h, w]).map_err(|e| format!("{name}: {e}"))?;
    set_upload(
        app,
        ImageRef::Pixels {
            width: w,
            height: h,
            channels: c,
            values,
        },
    )?;
    run::show_clean(app).await.map(|_| ())
}
