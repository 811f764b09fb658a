/**
 * The status bar item: starting / loading / ready / error / disabled, the model, the device
 * (or the remote endpoint and whether it answers) and the last completion's latency, from the
 * server's `tealtab/status` request
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

/** A remote model's endpoint (`openai:`, `llamacpp:`, `ollama:`); null in the status for a local model. */
export interface RemoteStatus {
  /** The `model` setting without credentials, e.g. `openai:http://host:8000/v1`. */
  endpoint: string;
  /** The served model name in use; null: the server's default (its only or first model). */
  model: string | null;
  /** null: not tried yet. */
  reachable: boolean | null;
  lastLatencyMs: number | null;
  lastError: string | null;
  /** Seconds until requests are tried again after failures; null when not backing off. */
  retryInS: number | null;
}

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
  /** The remote endpoint; null (or absent, from older servers) for a local model. */
  remote?: RemoteStatus | null;
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

/** The remote endpoint's state for the tooltip, one line each; empty for a local model. */
export function remoteLines(status: ServerStatus | undefined): string[] {
  const remote = status?.remote;
  if (!remote) {
    return [];
  }
  const lines = [`endpoint: ${remote.endpoint}`, `served model: ${remote.model ?? 'the server\'s default'}`];
  if (remote.reachable == null) {
    lines.push('endpoint state: not tried yet');
  } else {
    const latency = typeof remote.lastLatencyMs === 'number' ? `, last request ${Math.round(remote.lastLatencyMs)} ms` : '';
    lines.push(`endpoint state: ${remote.reachable ? 'reachable' : '**unreachable**'}${latency}`);
  }
  if (remote.lastError) {
    lines.push(`last error: ${remote.lastError}`);
  }
  if (typeof remote.retryInS === 'number') {
    lines.push(`retrying in ${Math.ceil(remote.retryInS)} s`);
  }
  return lines;
}

type Shown = ServerStatus['state'] | 'starting' | 'stopped';

const FAST_POLL_MS = 1000;
const SLOW_POLL_MS = 5000;

/** A remote endpoint (`openai:URL`, `llamacpp:URL`, `ollama:URL`) as `kind` and `url`; undefined for a local model. */
export function parseRemote(model: string | null | undefined): { kind: string; url: string } | undefined {
  const match = /^(openai|llamacpp|ollama):(.*)$/i.exec(model?.trim() ?? '');
  return match ? { kind: match[1].toLowerCase(), url: match[2] } : undefined;
}

/** A remote endpoint without credentials (user:password@) and query; any other model as it is. */
export function shownModel(model: string): string {
  const remote = parseRemote(model);
  if (!remote) {
    return model;
  }
  return `${remote.kind}:${remote.url.replace(/^([a-z]+:\/\/)[^/?#]*@/i, '$1').replace(/[?#].*$/, '')}`;
}

/**
 * A model path is shown by its last part; ids such as `Qwen/Qwen2.5-Coder-1.5B` stay whole; a
 * remote endpoint is shown by its host (`host:8000`), never with credentials.
 */
export function shortModel(model: string | null | undefined): string {
  if (!model) {
    return 'default model';
  }
  const remote = parseRemote(model);
  if (remote) {
    const host = /^[a-z]+:\/\/(?:[^/?#@]*@)?([^/?#]+)/i.exec(remote.url.trim())?.[1];
    return host ?? remote.kind;
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
        const remote = status?.remote;
        if (remote?.reachable === false) {
          // Like the error state, in the warning colour: the model is configured but does not answer.
          item.text = `$(warning) tealtab: unreachable (${shortModel(remote.endpoint)})`;
          item.backgroundColor = new vscode.ThemeColor('statusBarItem.warningBackground');
          break;
        }
        const parts = ['tealtab: ready', remote ? shortModel(remote.endpoint) : model];
        if (remote?.model) {
          parts.push(remote.model);
        } else if (!remote && status?.device) {
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
    const unreachable = this.shown === 'ready' && status?.remote?.reachable === false;
    const lines = [`**tealtab**: ${this.shown}${unreachable ? ', the endpoint does not answer' : ''}`];
    if (status?.remote) {
      lines.push(...remoteLines(status));
    } else if (status?.model && parseRemote(status.model)) {
      lines.push(`model: ${shownModel(status.model)}`); // a remote endpoint not serving (yet): no device
    } else if (status) {
      lines.push(`model: ${status.model ?? 'default'}`, `device: ${status.device ?? 'auto'}`);
    }
    if (status) {
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
