/**
 * tealtab for VS Code: starts `tealtab lsp` over stdio and shows its inline completions as
 * ghost text. This file wires the parts together and owns the client's life cycle
 * (start, restart on a `tealtab.server.*` change, settings pushed on every other change).
 */
import * as vscode from 'vscode';
import { DidChangeConfigurationNotification, LanguageClient } from 'vscode-languageclient/node';
import * as commands from './commands';
import { SECTION, changedLoadKeys, loadKey, serverConfig, serverSettings } from './config';
import { ACCEPTED_COMMAND, AcceptParams, InlineCompletions } from './inline';
import { LoadProgress } from './progress';
import { createClient, preflight, resolveLaunch } from './server';
import { StatusBar } from './status';

const STOP_TIMEOUT_MS = 3000;
/**
 * Settings changes this close together reach the server as one notification: a command that
 * writes several keys (the remote endpoint's `model` and `remoteModel`) then causes one reload,
 * not one with a half-written endpoint first.
 */
const SETTINGS_COALESCE_MS = 100;

class Controller implements vscode.Disposable {
  readonly output = vscode.window.createOutputChannel('tealtab', { log: true });
  readonly status = new StatusBar();
  readonly progress = new LoadProgress(() => this.status.refreshSoon(100));
  readonly inline = new InlineCompletions(() => this.client, () => this.status.refreshSoon());

  private client: LanguageClient | undefined;
  private lastLoadKey = loadKey();
  private settingsTimer: NodeJS.Timeout | undefined;
  /** Start/stop/restart run one after the other, never interleaved. */
  private queue: Promise<void> = Promise.resolve();

  constructor() {
    this.status.setDebounceInfo(() => this.inline.describeDebounce());
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(step, step);
    return this.queue;
  }

  start(): Promise<void> {
    return this.enqueue(() => this.doStart());
  }

  restart(): Promise<void> {
    return this.enqueue(async () => {
      await this.doStop();
      await this.doStart();
    });
  }

  private async doStart(): Promise<void> {
    const launch = resolveLaunch(serverConfig());
    this.output.info(`starting ${launch.command} ${launch.args.join(' ')} (from ${launch.origin})`);
    const problem = await preflight(launch);
    if (problem) {
      this.fail(problem);
      return;
    }
    this.inline.reset();
    const client = createClient(launch, this.output, {
      provideInlineCompletionItems: this.inline.middleware,
      handleWorkDoneProgress: this.progress.middleware,
      ...this.inline.sync.middleware,
    });
    this.client = client;
    this.lastLoadKey = loadKey();
    this.progress.reset();
    this.status.setClient(client);
    client.onDidChangeState(() => this.status.refreshSoon(0));
    try {
      await client.start();
    } catch (error) {
      if (this.client === client) {
        this.fail(`the server did not start: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }

  private async doStop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.status.setClient(undefined);
    if (client) {
      try {
        await client.stop(STOP_TIMEOUT_MS);
      } catch (error) {
        this.output.warn(`stopping the server: ${String(error)}`);
      }
      await client.dispose().catch(() => undefined);
    }
  }

  /** Say what is wrong, with the fix, and offer the settings. */
  private fail(problem: string): void {
    this.output.error(problem);
    this.status.setStopped(problem);
    void vscode.window.showErrorMessage(`tealtab: ${problem}`, 'Open Settings', 'Show Log').then((choice) => {
      if (choice === 'Open Settings') {
        void vscode.commands.executeCommand('workbench.action.openSettings', 'tealtab.server');
      } else if (choice === 'Show Log') {
        this.output.show(true);
      }
    });
  }

  onConfigurationChanged(event: vscode.ConfigurationChangeEvent): void {
    if (event.affectsConfiguration(`${SECTION}.server`)) {
      void this.restart();
      return;
    }
    if (!event.affectsConfiguration(SECTION)) {
      return;
    }
    if (this.settingsTimer) {
      clearTimeout(this.settingsTimer);
    }
    this.settingsTimer = setTimeout(() => this.pushSettings(), SETTINGS_COALESCE_MS);
  }

  /** Send the current settings to the running server (the one source of didChangeConfiguration). */
  private pushSettings(): void {
    this.settingsTimer = undefined;
    if (!this.client?.isRunning()) {
      return;
    }
    const settings = serverSettings();
    const key = loadKey(settings);
    if (key !== this.lastLoadKey) {
      const changed = changedLoadKeys(this.lastLoadKey, key).join(', ');
      this.lastLoadKey = key;
      this.inline.debounce.reset(); // another model answers at another speed
      this.output.info(`model settings changed (${changed}); the server reloads (the current model answers meanwhile)`);
    }
    void this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: { [SECTION]: settings } });
    this.status.refreshSoon();
  }

  async dispose(): Promise<void> {
    if (this.settingsTimer) {
      clearTimeout(this.settingsTimer);
    }
    await this.enqueue(() => this.doStop());
    this.status.dispose();
    this.progress.dispose();
    this.output.dispose();
  }
}

let controller: Controller | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const ctl = new Controller();
  controller = ctl;
  const register = (id: string, run: (...args: any[]) => unknown) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, run));
  register('tealtab.toggle', () => commands.toggle());
  register('tealtab.restart', () => ctl.restart());
  register('tealtab.chooseModel', () => commands.chooseModel());
  register('tealtab.showLog', () => ctl.output.show(true));
  register('tealtab.openSettings', () => vscode.commands.executeCommand('workbench.action.openSettings', 'tealtab.'));
  register('tealtab.menu', () => commands.menu(ctl.status.summary()));
  register('tealtab.acceptNextWord', () => ctl.inline.acceptPart('word'));
  register('tealtab.acceptNextLine', () => ctl.inline.acceptPart('line'));
  // Not in package.json's commands, so not in the Command Palette: only the items carry it.
  register(ACCEPTED_COMMAND, (params: AcceptParams) => ctl.inline.accepted(params));
  context.subscriptions.push(vscode.workspace.onDidChangeConfiguration((event) => ctl.onConfigurationChanged(event)));
  void ctl.start();
}

export async function deactivate(): Promise<void> {
  await controller?.dispose();
  controller = undefined;
}
