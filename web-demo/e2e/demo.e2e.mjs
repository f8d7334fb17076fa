// End-to-end test of the browser demo in headless Chromium (playwright-core,
// /usr/bin/chromium): the page twice, with WebGPU (SwiftShader, through
// --enable-unsafe-webgpu) and without (the CPU fallback in wasm). On each:
// PGD on a bundled image in both gradient modes (the bare classifier's
// prediction flips under the classifier-only attack; the attack on the whole
// defense stays within its budget), everything shown is finite, the permalink
// reproduces the result in the browser and in the trainer (`atop attack`:
// it scores the browser's adversarial image alike, and replays the attack
// alike; on WebGPU the whole-defense attack's first step), and a
// corrupted artifact and a non-image upload each show an error while the
// page keeps working. Prints sizes and timings; saves screenshots.
//
//   node web-demo/e2e/demo.e2e.mjs --dist dist --atop target/debug/atop --out e2e-out
//
// Exits non-zero on the first failed check, naming it.

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}
const dist = path.resolve(arg('dist', 'dist'));
const atop = path.resolve(arg('atop', 'target/debug/atop'));
const outDir = path.resolve(arg('out', 'e2e-out'));
const chromiumPath = arg('chromium', '/usr/bin/chromium');
const only = arg('only', ''); // "webgpu" or "cpu" to run one backend
fs.mkdirSync(outDir, { recursive: true });
for (const f of fs.readdirSync(outDir).filter((f) => f.endsWith('.png'))) {
  fs.rmSync(path.join(outDir, f)); // screenshots of an earlier run
}

// The bundled image and settings: sample 0 (a correctly classified test
// image) under PGD L-inf 0.1, 10 steps; EOT 2 when attacking the defense.
const SAMPLE = 0;
const EPS = '0.1';
const STEPS = '10';

function check(cond, what) {
  if (!cond) {
    throw new Error(`check failed: ${what}`);
  }
  console.log(`ok: ${what}`);
}

// --- a static server for dist/ plus a corrupted copy of the artifact ------
const artifactPath = path.join(dist, 'assets', 'fmnist-demo.safetensors');
const artifactBytes = fs.readFileSync(artifactPath);
// Flip one byte near the end (inside the weights): the payload hash no longer matches.
const corrupt = Buffer.from(artifactBytes);
corrupt[corrupt.length - 100] ^= 0xff;
const types = {
  '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm',
  '.css': 'text/css', '.safetensors': 'application/octet-stream',
};
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/corrupt.safetensors') {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(corrupt);
    return;
  }
  const file = path.join(dist, url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname));
  if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    res.writeHead(404);
    res.end('not found');
    return;
  }
  res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}/`;

// --- sizes -------------------------------------------------------------------
const files = fs.readdirSync(dist).map((f) => path.join(dist, f)).filter((f) => fs.statSync(f).isFile());
files.push(artifactPath);
const gz = (f) => zlib.gzipSync(fs.readFileSync(f), { level: 9 }).length;
const br = (f) => zlib.brotliCompressSync(fs.readFileSync(f),
  { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
const wasmFile = files.find((f) => f.endsWith('.wasm'));
const sizes = {
  wasm_mb: fs.statSync(wasmFile).size / 1e6,
  wasm_gzip_mb: gz(wasmFile) / 1e6,
  artifact_mb: artifactBytes.length / 1e6,
  artifact_gzip_mb: gz(artifactPath) / 1e6,
  page_gzip_mb: files.reduce((s, f) => s + gz(f), 0) / 1e6,
  page_brotli_mb: files.reduce((s, f) => s + br(f), 0) / 1e6,
};
console.log(`sizes: ${JSON.stringify(sizes)}`);

// --- the browser ---------------------------------------------------------------
const commonFlags = [
  '--no-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--disable-gpu',
];
const backends = [
  { name: 'webgpu', flags: ['--enable-unsafe-webgpu'] },
  { name: 'cpu', flags: [] },
].filter((b) => !only || b.name === only);

// A fresh profile directory per launch (playwright passes it as --user-data-dir).
function launch(userDir, flags) {
  return chromium.launchPersistentContext(userDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [...commonFlags, ...flags],
    viewport: { width: 1200, height: 900 },
  });
}

async function attr(page, selector, name) {
  return page.$eval(selector, (el, n) => el.getAttribute(n), name);
}

// Ready, or failed with a visible error (reported at once, not after a timeout).
async function waitReady(page) {
  await page.waitForFunction(
    () => document.body.dataset.ready === 'true' || !document.querySelector('#error').hidden,
    null, { timeout: 300_000, polling: 250 });
  const error = await page.$eval('#error', (el) => (el.hidden ? '' : el.textContent));
  if (await attr(page, 'body', 'data-ready') !== 'true') {
    throw new Error(`the page did not get ready: ${error}`);
  }
}

async function runAttack(page, settings) {
  for (const [id, value] of Object.entries(settings)) {
    if (['image', 'attack', 'mode', 'norm', 'transform'].includes(id)) {
      await page.selectOption(`#${id}`, value);
    } else {
      await page.fill(`#${id}`, value);
    }
  }
  await page.$eval('#pred-adv', (el) => el.removeAttribute('data-logits'));
  await page.$eval('#error', (el) => { el.hidden = true; });
  // A DOM click: the attack rewrites the URL fragment (its permalink), and
  // playwright's click would wait for that "navigation" while the page is
  // busy compiling WebGPU kernels for the first steps.
  await page.$eval('#run-attack', (b) => b.click());
  return waitResult(page);
}

async function waitResult(page) {
  await page.waitForFunction(
    () => (document.querySelector('#pred-adv')?.hasAttribute('data-logits') &&
      document.querySelector('#progress-text')?.dataset.state === 'idle') ||
      !document.querySelector('#error').hidden,
    null, { timeout: 600_000, polling: 250 });
  const error = await page.$eval('#error', (el) => (el.hidden ? '' : el.textContent));
  if (error) {
    throw new Error(`the attack failed on the page: ${error}`);
  }
  const read = async (id) => ({
    cls: Number(await attr(page, id, 'data-class')),
    logits: JSON.parse(await attr(page, id, 'data-logits')),
    probs: JSON.parse(await attr(page, id, 'data-probs')),
  });
  return {
    clean: await read('#pred-clean'),
    adv: await read('#pred-adv'),
    defended: await read('#pred-defended'),
    finite: await attr(page, '#results', 'data-finite'),
    // "largest change 0.100 (eps 0.1)", as the page shows it.
    linf: Number((/largest change ([0-9.]+)/.exec(await page.textContent('#perturbation-scale')) || [])[1]),
    permalink: await attr(page, '#results', 'data-permalink'),
    adversarial: JSON.parse(await attr(page, '#results', 'data-adversarial')),
    stepMs: Number(await attr(page, '#timings', 'data-attack-step-ms')),
    error: await page.$eval('#error', (el) => (el.hidden ? '' : el.textContent)),
  };
}

function maxDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
}

// The trainer, natively, on the link of the browser's result `r`: it scores
// the browser's own adversarial image with the link's transform draw (how the
// defense computes, apart from how the attack got there; checked here), then
// replays the whole attack (returned, for the caller to judge).
function nativeChecks(backendName, label, r, row) {
  const atopAttack = (extra) => JSON.parse(execFileSync(atop,
    ['attack', '--artifact', artifactPath, '--link', r.permalink, ...extra],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
  const logitsDiff = (n) => Math.max(maxDiff(r.clean.logits, n.clean_logits),
    maxDiff(r.adv.logits, n.adversarial_logits), maxDiff(r.defended.logits, n.defended_logits));
  // On the CPU backend the same code gives the same numbers (the demo
  // issue's 1e-4); WebGPU sums in another order, so it gets 1e-3.
  const bound = backendName === 'cpu' ? 1e-4 : 1e-3;
  const imageFile = path.join(outDir, `adversarial-${backendName}-${label}.json`);
  fs.writeFileSync(imageFile, JSON.stringify(r.adversarial));
  const ds = logitsDiff(atopAttack(['--adversarial', imageFile]));
  row[`${label}_scoring_max_diff`] = ds;
  check(ds <= bound,
    `${backendName}/${label}: atop scores the browser's adversarial image as the browser does (max diff ${ds.toExponential(2)} <= ${bound})`);

  const native = atopAttack([]);
  const dn = logitsDiff(native);
  const parted = r.adversarial.filter((v, i) => Math.abs(v - native.adversarial[i]) > 1e-5).length;
  row[`${label}_native_max_diff`] = dn;
  row[`${label}_native_pixels_parted`] = parted;
  console.log(`  ${backendName}/${label}: native replay: logits max diff ${dn.toExponential(2)}, ` +
    `${parted} of ${r.adversarial.length} adversarial pixels differ by more than 1e-5`);
  const argmax = (v) => v.indexOf(Math.max(...v));
  return { dn, parted, bound, agrees: dn <= bound && argmax(native.adversarial_logits) === r.adv.cls };
}

const figures = [];
let failed = false;
for (const backend of backends) {
  const userDir = fs.mkdtempSync(path.join(outDir, `profile-${backend.name}-`));
  const browser = await launch(userDir, backend.flags);
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${backend.name} console] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[${backend.name} page error] ${e.message}`));
  try {
    console.log(`== ${backend.name}`);
    const start = Date.now();
    await page.goto(base);
    await waitReady(page);
    const loadMs = Date.now() - start;
    check(await attr(page, '#backend', 'data-backend') === backend.name,
      `${backend.name}: the page runs on ${backend.name} (#backend: ${await page.textContent('#backend')})`);
    const firstMs = Number(await attr(page, '#timings', 'data-first-prediction-ms'));
    const defenseMs = Number(await attr(page, '#timings', 'data-purify-classify-ms'));
    const row = { backend: backend.name, load_ms: loadMs, first_prediction_ms: firstMs, purify_classify_ms: defenseMs };

    for (const mode of ['classifier-only', 'full']) {
      const settings = {
        image: `sample:${SAMPLE}`, attack: 'pgd', mode, norm: 'linf', eps: EPS, steps: STEPS,
        eot: mode === 'full' ? '2' : '1', transform: 'rt2', seed: '7',
      };
      const r = await runAttack(page, settings);
      check(r.error === '', `${backend.name}/${mode}: no error shown (${r.error})`);
      if (mode === 'classifier-only') {
        check(r.clean.cls !== r.adv.cls,
          `${backend.name}/${mode}: the bare classifier's prediction flips (${r.clean.cls} -> ${r.adv.cls})`);
      } else {
        // Against the whole defense the attack is not bound to fool the bare
        // classifier, nor the defense (a defense that holds is the point):
        // what it must do is perturb within its budget, and say what it did.
        check(r.linf > 0 && r.linf <= Number(EPS) + 1e-3,
          `${backend.name}/${mode}: the perturbation is within its budget (largest change ${r.linf} <= eps ${EPS})`);
        console.log(`  ${backend.name}/${mode}: bare classifier ${r.clean.cls} -> ${r.adv.cls}, defense on the adversarial image -> ${r.defended.cls}`);
      }
      check(r.finite === 'true', `${backend.name}/${mode}: all images and logits are finite`);
      for (const p of [r.clean, r.adv, r.defended]) {
        const sum = p.probs.reduce((s, v) => s + v, 0);
        check(p.probs.every((v) => Number.isFinite(v) && v >= 0) && Math.abs(sum - 1) < 1e-4,
          `${backend.name}/${mode}: probabilities are finite and sum to 1 (${sum.toFixed(6)})`);
      }
      row[`${mode}_step_ms`] = r.stepMs;

      // The permalink, opened in a new tab, reproduces the result.
      const again = await browser.newPage();
      await again.goto(`${base}#${r.permalink}`);
      await waitReady(again);
      const r2 = await waitResult(again);
      await again.close();
      const d = Math.max(maxDiff(r.adv.logits, r2.adv.logits), maxDiff(r.defended.logits, r2.defended.logits));
      check(d <= 1e-6, `${backend.name}/${mode}: the permalink reproduces the logits in the browser (max diff ${d.toExponential(2)})`);

      await page.screenshot({ path: path.join(outDir, `demo-${backend.name}-${mode}.png`), fullPage: true });
      const replay = nativeChecks(backend.name, mode, r, row);
      const exact = backend.name === 'cpu' || mode === 'classifier-only';
      if (exact) {
        check(replay.agrees,
          `${backend.name}/${mode}: atop attack replays the browser's attack (max diff ${replay.dn.toExponential(2)} <= ${replay.bound})`);
      } else {
        // PGD moves along sign(gradient). Where a component of the EOT
        // gradient through the purifier is within rounding of zero, WebGPU's
        // summation order can give it the other sign, and from that step on
        // the two runs part (measured: 44 of 784 pixels, logits 6.8e-2
        // apart after 10 steps, while scoring one image agrees to 4e-6).
        // What must agree is one gradient: the first step from the same
        // random start, in every pixel's sign.
        const r1 = await runAttack(page, { ...settings, steps: '1' });
        check(r1.error === '', `${backend.name}/${mode}, one step: no error shown (${r1.error})`);
        const first = nativeChecks(backend.name, `${mode}-one-step`, r1, row);
        check(first.agrees && first.parted === 0,
          `${backend.name}/${mode}: the first full-gradient step equals the native one (${first.parted} pixels differ, max diff ${first.dn.toExponential(2)} <= ${first.bound})`);
      }
    }

    // The scorecard: every bundled image attacked with PGD-10, EOT 2, full
    // gradients. On the CPU backend only: without a GPU, Chromium's WebGPU is
    // software-emulated and 40 images x 20 steps took over 7 minutes there.
    if (backend.name === 'cpu') {
      await page.selectOption('#attack', 'pgd');
      await page.selectOption('#mode', 'full');
      await page.fill('#steps', STEPS);
      await page.fill('#eot', '2');
      await page.$eval('#error', (el) => { el.hidden = true; });
      await page.$eval('#scorecard', (el) => el.removeAttribute('data-images'));
      await page.$eval('#run-scorecard', (b) => b.click());
      await page.waitForFunction(
        () => (document.querySelector('#scorecard').hasAttribute('data-images') &&
          document.querySelector('#progress-text').dataset.state === 'idle') ||
          !document.querySelector('#error').hidden,
        null, { timeout: 900_000, polling: 500 });
      const card = {};
      for (const k of ['images', 'classifier-clean', 'classifier-kept', 'defense-clean', 'defense-kept', 'draws']) {
        card[k] = Number(await attr(page, '#scorecard', `data-${k}`));
      }
      const cardError = await page.$eval('#error', (el) => (el.hidden ? '' : el.textContent));
      check(cardError === '' && card.images > 0 && card.draws === 10,
        `${backend.name}: the scorecard runs on every bundled image (${card.images}, ${cardError})`);
      check(card['classifier-kept'] < card['classifier-clean'] && card['defense-kept'] > card['classifier-kept'],
        `${backend.name}: the scorecard shows the bare classifier falling and the defense keeping more ` +
        `(classifier ${card['classifier-clean']} -> ${card['classifier-kept']}, defense ${card['defense-clean']} -> ${card['defense-kept']} of ${card.images})`);
      row.scorecard = card;
      await page.screenshot({ path: path.join(outDir, `demo-${backend.name}-scorecard.png`), fullPage: true });
    }

    // A corrupted artifact picked by the user: refused, the page still works.
    await page.setInputFiles('#artifact-file', { name: 'corrupt.safetensors', mimeType: 'application/octet-stream', buffer: corrupt });
    await page.waitForSelector('#error:not([hidden])', { timeout: 60_000 });
    const corruptText = await page.textContent('#error');
    check(/Refused/.test(corruptText) && /hash|sha/i.test(corruptText),
      `${backend.name}: a corrupted artifact is refused with a visible message ("${corruptText.slice(0, 120)}")`);
    // A file that is not an image, uploaded as one.
    await page.setInputFiles('#upload', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('these are not pixels') });
    await page.waitForFunction(() => /not an image/.test(document.querySelector('#error').textContent), null, { timeout: 60_000 });
    check(true, `${backend.name}: a non-image upload shows an error`);
    const r = await runAttack(page, { image: `sample:${SAMPLE}`, attack: 'fgsm', mode: 'classifier-only', eot: '1' });
    check(r.error === '' && r.finite === 'true', `${backend.name}: the page still attacks after both errors`);
    figures.push(row);
  } catch (e) {
    failed = true;
    console.log(`FAILED (${backend.name}): ${e.message}`);
    await page.screenshot({ path: path.join(outDir, `failure-${backend.name}.png`), fullPage: true }).catch(() => {});
  } finally {
    await browser.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}

// A corrupted artifact named in the URL: the page shows why it cannot start.
if (!only || only === 'cpu') {
  const userDir = fs.mkdtempSync(path.join(outDir, 'profile-url-'));
  const browser = await launch(userDir, []);
  try {
    const page = await browser.newPage();
    await page.goto(`${base}?model=corrupt.safetensors`);
    await page.waitForSelector('#error:not([hidden])', { timeout: 300_000 });
    const text = await page.textContent('#error');
    check(/Refused/.test(text), `?model=corrupt.safetensors is refused with a visible message ("${text.slice(0, 100)}")`);
  } catch (e) {
    failed = true;
    console.log(`FAILED (corrupt URL): ${e.message}`);
  } finally {
    await browser.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}
server.close();

console.log('== figures (ms; sizes in MB)');
console.log(JSON.stringify({ sizes, backends: figures }, null, 2));
fs.writeFileSync(path.join(outDir, 'figures.json'), JSON.stringify({ sizes, backends: figures }, null, 2));
for (const f of fs.readdirSync(outDir).filter((f) => f.endsWith('.png'))) {
  console.log(`screenshot: ${path.join(outDir, f)}`);
}
if (failed) {
  console.log('e2e: FAILED');
  process.exit(1);
}
console.log('e2e: passed');
