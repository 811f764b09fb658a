/**
 * Adaptive debounce: how long an automatic inline-completion request waits after the last
 * keystroke, derived from how fast the server has been answering.
 *
 * A fixed debounce is a guess about the server. When the server answers in 30 ms, waiting the
 * full `tealtab.debounce` (150 ms by default) before asking only adds that wait to every
 * completion the user sees. When the server is slow, a short wait buys nothing: a request sent
 * while the user is still typing is typed over and cancelled before its answer arrives, so the
 * full debounce is the right one. Hence:
 *
 *     debounce = min(setting, max(FLOOR_MS, FACTOR * estimated latency))
 *
 * where the estimate is the median request-to-answer time of the last `WINDOW` automatic
 * requests that were answered (cancelled or superseded ones are not counted: they say nothing
 * about how long an answer takes). The user's `tealtab.debounce` is always the upper bound;
 * before the first answer, or with `tealtab.adaptiveDebounce` off, the setting is used as is.
 * The median rather than a mean, so that one slow outlier (the first request after a model
 * load, a long prompt's prefill) does not lengthen the wait for the next ten keystrokes.
 *
 * (Tabby's editors adapt too, from the typing speed and the estimated response time; this is
 * the simpler rule above, with the user's setting as the cap.)
 *
 * Plain TypeScript without `vscode`, so that tests/editors/vscode/debounce.test.mjs runs it
 * under plain Node. The Neovim plugin uses the same rule and constants (lua/tealtab/debounce.lua).
 */

/** The debounce is this many times the estimated latency... */
export const FACTOR = 1.5;
/** ...but never shorter than this (a burst of keystrokes is still one request)... */
export const FLOOR_MS = 30;
/** ...and never longer than the user's setting. Answers the estimate is the median of: */
export const WINDOW = 10;

/** The debounce for `settingMs` given an estimated latency (undefined: no answer measured yet). */
export function adaptiveDebounceMs(settingMs: number, estimateMs: number | undefined, adaptive = true): number {
  const setting = Number.isFinite(settingMs) && settingMs > 0 ? settingMs : 0;
  if (!adaptive || estimateMs === undefined || !Number.isFinite(estimateMs) || estimateMs < 0) {
    return setting;
  }
  return Math.min(setting, Math.max(FLOOR_MS, Math.round(FACTOR * estimateMs)));
}

/** The median of `values` (undefined when empty). */
export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) {
    return undefined;
  }
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** The latencies of the last `WINDOW` answered automatic requests, and the debounce they give. */
export class AdaptiveDebounce {
  private samples: number[] = [];

  constructor(private readonly window = WINDOW) {}

  /** One answered automatic request took `latencyMs` from sending to its answer. */
  record(latencyMs: number): void {
    if (!Number.isFinite(latencyMs) || latencyMs < 0) {
      return;
    }
    this.samples.push(latencyMs);
    if (this.samples.length > this.window) {
      this.samples.shift();
    }
  }

  /** Forget the measurements (another server or model: its latency is another one). */
  reset(): void {
    this.samples = [];
  }

  /** The median latency of the recorded answers, or undefined before the first one. */
  get estimateMs(): number | undefined {
    return median(this.samples);
  }

  get count(): number {
    return this.samples.length;
  }

  /** The wait before an automatic request now. */
  delayMs(settingMs: number, adaptive: boolean): number {
    return adaptiveDebounceMs(settingMs, this.estimateMs, adaptive);
  }

  /** `debounce 45 ms (adaptive: median latency 30 ms of 10 answers; setting 150 ms)`, for the status. */
  describe(settingMs: number, adaptive: boolean): string {
    const delay = this.delayMs(settingMs, adaptive);
    if (!adaptive) {
      return `debounce ${delay} ms (fixed)`;
    }
    const estimate = this.estimateMs;
    if (estimate === undefined) {
      return `debounce ${delay} ms (adaptive, no answer measured yet; setting ${settingMs} ms)`;
    }
    return `debounce ${delay} ms (adaptive: median latency ${Math.round(estimate)} ms of ${this.count} ` +
      `answer${this.count === 1 ? '' : 's'}; setting ${settingMs} ms)`;
  }
}
