// Headless Chromium for the Python tests (tests/support/browser.py), driven over stdin/stdout.
// One command per line in: {"id": 1, "cmd": "evaluate", "pageId": "p1", "expression": "1 + 1"}
// One answer per line out: {"id": 1, "ok": true, "value": 2} or {"id": 1, "ok": false, "error": "…"}.
// Commands run concurrently: a slow evaluate on one page does not hold up another page.
// stdout carries answers only; anything else goes to stderr.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const EXECUTABLE = process.env.SPOTTER_CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

// One persistent context on a fresh profile: its pages are tabs of one browser profile, sharing
// IndexedDB, Web Locks and BroadcastChannel, and storage outlives a reload.
const profile = mkdtempSync(join(tmpdir(), 'spotter-chromium-'));
const launched = chromium.launchPersistentContext(profile, { executablePath: EXECUTABLE, headless: true, args: FLAGS });
launched.catch(() => {});  // reported in every answer that needs it
let closing = false;
launched.then((context) => {
  context.setDefaultTimeout(20000);  // under the Python side's 30 s: Playwright's own message arrives first
  context.on('close', () => {
    if (!closing) { console.error('bridge: Chromium went away'); quit(1); }
  });
}, () => {});

const pages = new Map();  // pageId -> {page, console: ["type: text"]}
let nextPage = 1;

function entry(pageId) {
  const found = pages.get(pageId);
  if (!found) throw new Error(`no page ${pageId}`);
  return found;
}

const commands = {
  async version() { return (await launched).browser().version(); },  // answers once Chromium is up
  async newPage({ url }) {
    const context = await launched;
    const page = await context.newPage();
    const pageId = `p${nextPage++}`;
    const log = [];
    page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`pageerror: ${e.stack || e.message}`));
    page.on('crash', () => log.push('crash: the page crashed'));
    try {
      if (url) await page.goto(url);
    } catch (e) {
      await page.close();
      throw e;
    }
    pages.set(pageId, { page, console: log });
    return pageId;
  },
  async goto({ pageId, url }) { await entry(pageId).page.goto(url); },
  async reload({ pageId }) { await entry(pageId).page.reload(); },
  async evaluate({ pageId, expression }) { return entry(pageId).page.evaluate(expression); },
  async setOffline({ offline }) { await (await launched).setOffline(Boolean(offline)); },
  async screenshot({ pageId, path }) { await entry(pageId).page.screenshot({ path }); },
  async text({ pageId, selector, timeoutMs = 10000 }) {
    return entry(pageId).page.locator(selector).first().innerText({ timeout: timeoutMs });
  },
  async console({ pageId }) { return [...entry(pageId).console]; },
  async closePage({ pageId }) {
    const { page } = entry(pageId);
    pages.delete(pageId);
    await page.close();
  },
  async shutdown() { setImmediate(() => quit(0)); },
};

function answer(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

async function run(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (e) {
    console.error(`bridge: not JSON: ${line}`);
    return;
  }
  const { id, cmd } = request;
  try {
    const handler = Object.hasOwn(commands, cmd) ? commands[cmd] : null;
    if (!handler) throw new Error(`unknown command ${cmd}`);
    const value = await handler(request);
    answer({ id, ok: true, value: value === undefined ? null : value });
  } catch (e) {
    // Playwright's message carries the page's JS stack; its call log is coloured for a terminal
    answer({ id, ok: false, error: String(e?.message ?? e).replace(/\x1b\[[0-9;]*m/g, '') });
  }
}

async function quit(code) {
  if (closing) return;
  closing = true;
  try {
    await (await launched).close();
  } catch (e) {
    console.error(`bridge: closing Chromium: ${e?.message ?? e}`);
  }
  rmSync(profile, { recursive: true, force: true });
  process.stdout.write('', () => process.exit(code));
}

createInterface({ input: process.stdin }).on('line', (line) => { if (line.trim()) run(line); })
  .on('close', () => quit(0));  // the test process went away: do not leave Chromium behind
