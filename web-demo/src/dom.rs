//! Small DOM helpers over web-sys: typed element lookup, text, errors,
//! canvases, and yielding to the browser between attack steps.

use js_sys::Promise;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    CanvasRenderingContext2d, Document, HtmlCanvasElement, HtmlElement, HtmlInputElement,
    HtmlSelectElement, ImageData, Window,
};

pub fn window() -> Window {
    web_sys::window().expect("the demo runs in a browser window")
}

pub fn document() -> Document {
    window().document().expect("the window has a document")
}

/// The element with `id` as type `T`; a missing id is a bug in index.html.
pub fn by_id<T: JsCast>(id: &str) -> Result<T, String> {
    document()
        .get_element_by_id(id)
        .ok_or_else(|| format!("index.html has no element #{id}"))?
        .dyn_into::<T>()
        .map_err(|_| format!("#{id} is not the expected kind of element"))
}

pub fn set_text(id: &str, text: &str) {
    if let Ok(el) = by_id::<HtmlElement>(id) {
        el.set_text_content(Some(text));
    }
}

pub fn set_attr(id: &str, name: &str, value: &str) {
    if let Ok(el) = by_id::<HtmlElement>(id) {
        let _ = el.set_attribute(name, value);
    }
}

/// Shows `message` in the page's error box (and the console).
pub fn show_error(message: &str) {
    web_sys::console::error_1(&JsValue::from_str(message));
    if let Ok(el) = by_id::<HtmlElement>("error") {
        el.set_text_content(Some(message));
        el.set_hidden(false);
    }
}

pub fn clear_error() {
    if let Ok(el) = by_id::<HtmlElement>("error") {
        el.set_text_content(None);
        el.set_hidden(true);
    }
}

pub fn input_value(id: &str) -> Result<String, String> {
    Ok(by_id::<HtmlInputElement>(id)?.value())
}

pub fn select_value(id: &str) -> Result<String, String> {
    Ok(by_id::<HtmlSelectElement>(id)?.value())
}

pub fn set_value(id: &str, value: &str) {
    if let Ok(el) = by_id::<HtmlInputElement>(id) {
        el.set_value(value);
    } else if let Ok(el) = by_id::<HtmlSelectElement>(id) {
        el.set_value(value);
    }
}

/// Milliseconds since navigation start.
pub fn now_ms() -> f64 {
    window().performance().map_or(0.0, |p| p.now())
}

/// Lets the browser run its event loop (paint, input) before continuing.
pub async fn yield_to_browser() {
    let promise = Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
    });
    let _ = JsFuture::from(promise).await;
}

/// Draws RGBA bytes of a `w` x `h` image on canvas `id` (scaled up by CSS).
pub fn draw_rgba(id: &str, rgba: &[u8], w: usize, h: usize) -> Result<(), String> {
    let canvas = by_id::<HtmlCanvasElement>(id)?;
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    let context = context_2d(&canvas)?;
    let data = ImageData::new_with_u8_clamped_array_and_sh(
        wasm_bindgen::Clamped(rgba),
        w as u32,
        h as u32,
    )
    .map_err(|e| format!("cannot make image data: {e:?}"))?;
    context
        .put_image_data(&data, 0.0, 0.0)
        .map_err(|e| format!("cannot draw on #{id}: {e:?}"))
}

pub fn context_2d(canvas: &HtmlCanvasElement) -> Result<CanvasRenderingContext2d, String> {
    canvas
        .get_context("2d")
        .map_err(|e| format!("no 2D canvas: {e:?}"))?
        .ok_or("no 2D canvas")?
        .dyn_into::<CanvasRenderingContext2d>()
        .map_err(|_| "no 2D canvas".to_string())
}

/// A JS error value as readable text.
pub fn js_error(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|err| String::from(err.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}
