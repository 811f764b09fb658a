// Drives the code-server workbench in headless Chromium for tests/editors/test_vscode.py.
//
// One browser page for the whole test module; the Python side sends one JSON object per line
// on stdin ({"id", "op", ...args}) and reads one JSON answer per line on stdout ({"id", "ok",
// "value"} or {"id", "ok": false, "error"}). Every wait here is bounded by the request's
// `timeout` (ms); the Python side bounds each answer again and kills the process group.
//
// Needs: TEALTAB_NODE_MODULES (a node_modules with playwright-core), CHROMIUM (the browser).
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';

const require = createRequire(import.meta.url);
const { chromium } = require(path.join(process.env.TEALTAB_NODE_MODULES, 'playwright-core'));

let context;
let page;

const GHOST = '.monaco-editor .ghost-text-decoration';
const QUICK_INPUT = '.quick-input-widget:not([style*="display: none"]) input';

// Text as the user sees it: Monaco renders blanks as no-break spaces.
const plain = (text) => (text ?? '').replace(/\u00a0/g, ' ');

async function statusItems() {
  return page.$$eval('.statusbar-item', (items) => items.map((item) => item.textContent ?? ''));
}

const ops = {
  async open({ url, profile, timeout }) {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 720 },
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-dev-shm-usage'],
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(timeout);
    await page.goto(url, { timeout });
    await page.waitForSelector('.monaco-workbench .part.statusbar', { timeout });
    return true;
  },

  // The text of the first status bar item that contains `contains` and matches `pattern`.
  // Fails at once on a text matching `failOn` (e.g. "not running" while waiting for "ready").
  async status({ contains, pattern, failOn, timeout }) {
    const regex = new RegExp(pattern ?? '');
    const failure = failOn ? new RegExp(failOn) : undefined;
    const deadline = Date.now() + timeout;
    let last = [];
    while (Date.now() < deadline) {
      last = (await statusItems()).filter((text) => text.includes(contains));
      const hit = last.find((text) => regex.test(text));
      if (hit !== undefined) {
        return hit;
      }
      const failed = failure && last.find((text) => failure.test(text));
      if (failed !== undefined) {
        throw new Error(`status bar says ${JSON.stringify(failed)} while waiting for /${regex.source}/`);
      }
      await page.waitForTimeout(200);
    }
    throw new Error(`no status bar item with ${JSON.stringify(contains)} matching /${regex.source}/ in ${timeout} ms; ` +
      `saw ${JSON.stringify(last)}`);
  },

  // Open a workspace file through Quick Open and wait until its editor has focus.
  async openFile({ name, timeout }) {
    await page.keyboard.press('Control+P');
    await page.waitForSelector(QUICK_INPUT, { timeout });
    await page.keyboard.type(name, { delay: 20 });
    await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${name}"]`, { timeout });
    await page.keyboard.press('Enter');
    await page.waitForSelector(`.tab.active[aria-label*="${name}"]`, { timeout });
    await page.waitForSelector('.monaco-editor.focused', { timeout });
    return true;
  },

  // Put the cursor at a 1-based line and column (Go to Line).
  async goto({ line, column, timeout }) {
    await page.keyboard.press('Control+G');
    await page.waitForSelector(QUICK_INPUT, { timeout });
    await page.keyboard.type(`${line}:${column}`, { delay: 20 });
    await page.keyboard.press('Enter');
    await page.waitForSelector('.monaco-editor.focused', { timeout });
    return true;
  },

  // Run a command from the Command Palette by its title ("tealtab: Choose model").
  async palette({ command, timeout }) {
    await page.keyboard.press('F1');
    await page.waitForSelector(QUICK_INPUT, { timeout });
    await page.keyboard.type(command, { delay: 20 });
    await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${command}"]`, { timeout });
    await page.keyboard.press('Enter');
    return true;
  },

  // Answer the quick pick or input box titled `title`: replace its text, wait for a row
  // containing `row` (a pick), press Enter.
  async quickInput({ title, text, row, timeout }) {
    await page.waitForFunction(([selector, wanted]) => {
      const widget = document.querySelector(selector.replace(' input', ''));
      return widget && (widget.querySelector('.quick-input-title')?.textContent ?? '').includes(wanted);
    }, [QUICK_INPUT, title], { timeout, polling: 100 });
    await page.keyboard.press('Control+A');
    await page.keyboard.type(text, { delay: 10 });
    if (row) {
      await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${row}"]`, { timeout });
    }
    await page.keyboard.press('Enter');
    return true;
  },

  // Reload the window: the extension host, the extension and its server start again.
  async reload({ timeout }) {
    await page.reload({ timeout });
    await page.waitForSelector('.monaco-workbench .part.statusbar', { timeout });
    return true;
  },

  async type({ text, delay }) {
    await page.keyboard.type(text, { delay: delay ?? 60 });
    return true;
  },

  async press({ key }) {
    await page.keyboard.press(key);
    return true;
  },

  // The ghost text on screen once there is some: the part on the cursor line and any further lines.
  async ghost({ timeout }) {
    await page.waitForFunction((selector) => [...document.querySelectorAll(selector)]
      .some((node) => (node.textContent ?? '').trim() !== ''), GHOST, { timeout, polling: 100 });
    await page.waitForTimeout(150); // let a multi-line part render with it
    const parts = await page.$$eval(GHOST, (nodes) => nodes.map((node) => node.textContent ?? ''));
    return parts.map(plain);
  },

  // Whether ghost text is on screen now.
  async ghostVisible() {
    const parts = await page.$$eval(GHOST, (nodes) => nodes.map((node) => node.textContent ?? ''));
    return parts.some((text) => text.trim() !== '');
  },

  async screenshot({ file }) {
    await page.screenshot({ path: file });
    return file;
  },

  // Record the text of every notification toast from now on (a progress toast may be short-lived).
  async watchToasts() {
    await page.evaluate(() => {
      window.__tealtabToasts = [];
      const seen = (node) => {
        if (node.nodeType !== 1) {
          return;
        }
        for (const toast of [node, ...node.querySelectorAll('.notification-toast')]) {
          if (toast.classList?.contains('notification-toast')) {
            window.__tealtabToasts.push(toast.textContent ?? '');
          }
        }
      };
      const root = document.querySelector('.notifications-toasts') ?? document.body;
      new MutationObserver((records) => {
        for (const record of records) {
          record.addedNodes.forEach(seen);
          if (record.type === 'characterData' || record.type === 'childList') {
            const toast = record.target.parentElement?.closest?.('.notification-toast');
            if (toast) {
              window.__tealtabToasts.push(toast.textContent ?? '');
            }
          }
        }
      }).observe(root, { childList: true, subtree: true, characterData: true });
    });
    return true;
  },

  // Toast texts recorded since watchToasts, and those on screen now.
  async toasts() {
    const recorded = await page.evaluate(() => window.__tealtabToasts ?? []);
    const now = await page.$$eval('.notification-toast', (nodes) => nodes.map((node) => node.textContent ?? ''));
    return { recorded: recorded.map(plain), now: now.map(plain) };
  },

  // Wait for a toast whose text contains every string in `all`.
  async waitToast({ all, timeout }) {
    const deadline = Date.now() + timeout;
    let seen = [];
    while (Date.now() < deadline) {
      const { recorded, now } = await ops.toasts();
      seen = [...new Set([...recorded, ...now])];
      const hit = seen.find((text) => all.every((part) => text.includes(part)));
      if (hit !== undefined) {
        return hit;
      }
      await page.waitForTimeout(100);
    }
    throw new Error(`no notification with ${JSON.stringify(all)} in ${timeout} ms; saw ${JSON.stringify(seen.slice(-10))}`);
  },

  async close() {
    await context?.close();
    context = undefined;
    return true;
  },
};

const input = readline.createInterface({ input: process.stdin });
for await (const line of input) {
  let request = {};
  try {
    request = JSON.parse(line);
    const op = ops[request.op];
    if (!op) {
      throw new Error(`unknown op ${request.op}`);
    }
    const value = await op({ timeout: 30000, ...request });
    process.stdout.write(JSON.stringify({ id: request.id, ok: true, value }) + '\n');
  } catch (error) {
    process.stdout.write(JSON.stringify({ id: request.id, ok: false, error: String(error?.stack ?? error) }) + '\n');
  }
  if (request.op === 'close') {
    break;
  }
}
process.exit(0);
