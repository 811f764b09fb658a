/**
 * The status bar item: starting / loading / ready / error / disabled, the model, the device
 * and the last completion's latency, from the server's `tealtab/status` request
 * (lsp/status.py). The server sends no status notifications, so the item polls: often while
 * the server starts or loads, rarely once it is ready, and soon after each completion.
 *
 * "ready" appears only once the client runs and the model is loaded; tests wait for it before
 * typing, because VS Code does not ask an inline provider that registered after the first
 * keystroke until the next edit.
 */
import * as vscode from 'vscode';
import { LanguageClient, State } from 'vscode-languageclient/node';

export const STATUS_REQUEST = 'tealtab/status';

export interface ServerStatus {
  state: 'loading' | 'ready' | 'error' | 'disabled';
  model: string | null;
  device: string | null;
  lastLatencyMs: number | null;
  error: string | null;
  /** TEAL activation sparsity (lsp/sparsity_control.py); absent from older servers. */
  sparsity?: {
    requested: string | number;
    level: number | null;
    levels: number[] | null;
    calibrating: boolean;
  } | null;
}

/** `sparsity: 0.5 (setting auto, calibrated levels 0.25-0.7)`, or undefined without a local model. */
export function sparsityLine(status: ServerStatus | undefined): string | undefined {
  const sparsity = status?.sparsity;
  if (!sparsity || typeof sparsity.level !== 'number') {
    return undefined;
  }
  const levels = sparsity.levels && sparsity.levels.length > 0
    ? `calibrated levels ${Math.min(...sparsity.levels)}-${Math.max(...sparsity.levels)}`
    : 'not calibrated';
  const calibrating = sparsity.calibrating ? ', calibrating' : '';
  return `sparsity: ${sparsity.level} (setting ${sparsity.requested}, ${levels}${calibrating})`;
}

type Shown = ServerStatus['state'] | 'starting' | 'stopped';

const FAST_POLL_MS = 1000;
const SLOW_POLL_MS = 5000;

/** A model path is shown by its last part; ids such as `Qwen/Qwen2.5-Coder-1.5B` stay whole. */
export function shortModel(model: string | null | undefined): string {
  if (!model) {
    return 'default model';
  }
  const isPath = /^([/.~]|[A-Za-z]:\\)/.test(model) || model.endsWith('.gguf');
  return isPath ? model.replace(/[/\\]+$/, '').split(/[/\\]/).pop() || model : model;
}

export class StatusBar implements vscode.Disposable {
  readonly item: vscode.StatusBarItem;
  private client: LanguageClient | undefined;
  private timer: NodeJS.Timeout | undefined;
  private last: ServerStatus | undefined;
  private shown: Shown = 'starting';
  private problem: string | undefined;
  private debounceInfo: () => string | undefined = () => undefined;

  constructor() {
    this.item = vscode.window.createStatusBarItem('tealtab.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'tealtab';
    this.item.command = 'tealtab.menu';
    this.render();
    this.item.show();
  }

  /** The client to ask; undefined while there is none (stopped, or not startable). */
  setClient(client: LanguageClient | undefined): void {
    this.client = client;
    this.last = undefined;
    this.problem = undefined;
    this.shown = 'starting';
    this.render();
    this.schedule(0);
  }

  /** Where the tooltip's debounce line comes from (the adaptive debounce lives with the inline completions). */
  setDebounceInfo(describe: () => string | undefined): void {
    this.debounceInfo = describe;
  }

  /** No server runs; `problem` says why (shown in the tooltip and the menu). */
  setStopped(problem: string): void {
    this.client = undefined;
    this.problem = problem;
    this.shown = 'stopped';
    this.render();
  }

  /** One line for the menu's title. */
  summary(): string {
    return this.item.text.replace(/\$\([^)]*\)\s*/g, '');
  }

  get status(): ServerStatus | undefined {
    return this.last;
  }

  /** Ask again shortly (after a completion, a settings change, a load). */
  refreshSoon(delayMs = 300): void {
    this.schedule(delayMs);
  }

  private schedule(delayMs: number): void {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => void this.poll(), delayMs);
  }

  private async poll(): Promise<void> {
    this.timer = undefined;
    const client = this.client;
    if (!client) {
      return;
    }
    if (client.state === State.Running) {
      try {
        this.last = await client.sendRequest<ServerStatus>(STATUS_REQUEST, {});
        this.shown = this.last.state;
      } catch {
        this.shown = 'starting';
      }
    } else {
      this.shown = client.state === State.Stopped && this.last ? 'stopped' : 'starting';
    }
    if (client !== this.client) {
      return; // replaced while the request was on its way
    }
    this.render();
    this.schedule(this.shown === 'ready' || this.shown === 'disabled' ? SLOW_POLL_MS : FAST_POLL_MS);
  }

  private render(): void {
    const status = this.last;
    const model = shortModel(status?.model);
    const item = this.item;
    item.backgroundColor = undefined;
    switch (this.shown) {
      case 'starting':
        item.text = '$(loading~spin) tealtab: starting';
        break;
      case 'loading':
        item.text = `$(loading~spin) tealtab: loading ${model}`;
        break;
      case 'ready': {
        const parts = ['tealtab: ready', model];
        if (status?.device) {
          parts.push(status.device);
        }
        if (typeof status?.lastLatencyMs === 'number') {
          parts.push(`${Math.round(status.lastLatencyMs)} ms`);
        }
        item.text = `$(check) ${parts.join(' · ')}`;
        break;
      }
      case 'disabled':
        item.text = '$(circle-slash) tealtab: disabled';
        break;
      case 'error':
        item.text = `$(error) tealtab: error (${model})`;
        item.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
        break;
      case 'stopped':
        item.text = '$(error) tealtab: not running';
        item.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
        break;
    }
    const lines = [`**tealtab**: ${this.shown}`];
    if (status) {
      lines.push(`model: ${status.model ?? 'default'}`, `device: ${status.device ?? 'auto'}`);
      if (typeof status.lastLatencyMs === 'number') {
        lines.push(`last completion: ${status.lastLatencyMs} ms`);
      }
      const sparsity = sparsityLine(status);
      if (sparsity) {
        lines.push(sparsity);
      }
    }
    const debounce = this.debounceInfo();
    if (debounce) {
      lines.push(debounce.replace(/^debounce /, 'debounce: '));
    }
    const error = this.problem ?? status?.error;
    if (error) {
      lines.push(`error: ${error}`);
    }
    lines.push('', 'Click for the tealtab menu.');
    item.tooltip = new vscode.MarkdownString(lines.join('  \n'));
  }

  dispose(): void {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.item.dispose();
  }
}
