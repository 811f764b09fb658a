// Unit tests of the VS Code extension's adaptive debounce (editors/vscode/src/debounce.ts), run
// with Node's own test runner on the compiled extension:
//   cd editors/vscode && npm test          (or: node --test tests/editors/vscode/debounce.test.mjs)
// tests/editors/test_vscode_unit.py compiles the extension and runs this file.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.env.TEALTAB_VSCODE_OUT ?? path.join(here, '..', '..', '..', 'editors', 'vscode', 'out');
const require = createRequire(import.meta.url);
const { AdaptiveDebounce, adaptiveDebounceMs, median, FACTOR, FLOOR_MS, WINDOW } = require(path.join(out, 'debounce.js'));

test('before the first answer the setting is used', () => {
  const debounce = new AdaptiveDebounce();
  assert.equal(debounce.estimateMs, undefined);
  assert.equal(debounce.delayMs(150, true), 150);
  assert.match(debounce.describe(150, true), /^debounce 150 ms \(adaptive, no answer measured yet/);
});

test('fast answers shrink the debounce below the setting, not below the floor', () => {
  const debounce = new AdaptiveDebounce();
  for (let i = 0; i < WINDOW; i += 1) {
    debounce.record(40);
  }
  assert.equal(debounce.delayMs(150, true), Math.round(FACTOR * 40));
  assert.ok(debounce.delayMs(150, true) < 150);
  for (let i = 0; i < WINDOW; i += 1) {
    debounce.record(2); // typed-ahead cache hits
  }
  assert.equal(debounce.delayMs(150, true), FLOOR_MS);
  assert.match(debounce.describe(150, true), /^debounce 30 ms \(adaptive: median latency 2 ms of 10 answers; setting 150 ms\)$/);
});

test('slow answers give the setting, never more', () => {
  const debounce = new AdaptiveDebounce();
  for (const latency of [400, 900, 3000, 250]) {
    debounce.record(latency);
  }
  assert.equal(debounce.delayMs(150, true), 150);
  assert.equal(debounce.delayMs(2000, true), Math.round(FACTOR * median([400, 900, 3000, 250])));
});

test('never above the setting, for any latencies and settings', () => {
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  for (let round = 0; round < 500; round += 1) {
    const debounce = new AdaptiveDebounce();
    const setting = Math.floor(random() * 2001);
    for (let i = 0, n = Math.floor(random() * 25); i < n; i += 1) {
      debounce.record(random() * 5000);
      const delay = debounce.delayMs(setting, true);
      assert.ok(delay <= setting, `${delay} > ${setting}`);
      assert.ok(delay >= Math.min(setting, FLOOR_MS), `${delay} < floor`);
    }
  }
});

test('the median of the last answers: one slow outlier does not count', () => {
  const debounce = new AdaptiveDebounce();
  for (const latency of [20, 20, 20, 5000, 20]) {
    debounce.record(latency);
  }
  assert.equal(debounce.estimateMs, 20);
  // Only the last WINDOW answers count.
  for (let i = 0; i < WINDOW; i += 1) {
    debounce.record(100);
  }
  assert.equal(debounce.estimateMs, 100);
  assert.equal(debounce.count, WINDOW);
});

test('adaptation off, bad samples, reset', () => {
  const debounce = new AdaptiveDebounce();
  debounce.record(10);
  debounce.record(Number.NaN);
  debounce.record(-5);
  assert.equal(debounce.count, 1);
  assert.equal(debounce.delayMs(150, false), 150);
  assert.equal(debounce.describe(150, false), 'debounce 150 ms (fixed)');
  assert.equal(debounce.delayMs(0, true), 0);
  debounce.reset();
  assert.equal(debounce.delayMs(150, true), 150);
  assert.equal(adaptiveDebounceMs(150, undefined), 150);
  assert.equal(adaptiveDebounceMs(150, 10), FLOOR_MS);
  assert.equal(adaptiveDebounceMs(20, 10), 20); // a setting under the floor stays the cap
});
