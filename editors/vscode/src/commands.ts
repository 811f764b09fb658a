/**
 * The user-facing commands besides start/stop: the status bar menu, the switch, and the model
 * picker. Settings are written where they are set (a folder's settings win over the user's, so
 * writing the user's value under a folder value would change nothing).
 */
import * as vscode from 'vscode';
import { SECTION } from './config';

/** Models offered by `tealtab.chooseModel`: the built-in one and the engine's presets (engine/config.py PRESETS) by their Hugging Face ids. */
export const KNOWN_MODELS: { id: string; detail: string }[] = [
  { id: 'builtin:gemma-3-270m', detail: 'built in: Gemma 3 270M base, offline, runs on any CPU' },
  { id: 'Qwen/Qwen2.5-Coder-1.5B', detail: 'Hugging Face, fill-in-the-middle; the default with CUDA' },
  { id: 'Qwen/Qwen2.5-Coder-7B', detail: 'Hugging Face, fill-in-the-middle; a GPU with 16 GB or more' },
  { id: 'bigcode/starcoder2-3b', detail: 'Hugging Face, fill-in-the-middle' },
  { id: 'google/gemma-3-270m', detail: 'Hugging Face, the full-precision weights of the built-in model' },
];

/** Update `key` at the most specific level where it is set (workspace folder, workspace, else user). */
export async function updateSetting(key: string, value: unknown): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const where = config.inspect(key);
  let target = vscode.ConfigurationTarget.Global;
  if (where?.workspaceFolderValue !== undefined) {
    target = vscode.ConfigurationTarget.WorkspaceFolder;
  } else if (where?.workspaceValue !== undefined) {
    target = vscode.ConfigurationTarget.Workspace;
  }
  await config.update(key, value, target);
}

export async function toggle(): Promise<void> {
  const enabled = vscode.workspace.getConfiguration(SECTION).get<boolean>('enable', true);
  await updateSetting('enable', !enabled);
  vscode.window.setStatusBarMessage(`tealtab: completions ${enabled ? 'off' : 'on'}`, 3000);
}

type ModelPick = vscode.QuickPickItem & { model?: string; action?: 'enter' | 'browse' | 'default' };

export async function chooseModel(): Promise<void> {
  const current = vscode.workspace.getConfiguration(SECTION).get<string>('model', '') ?? '';
  const items: ModelPick[] = KNOWN_MODELS.map(({ id, detail }) => ({
    label: id, description: id === current ? '(current)' : undefined, detail, model: id,
  }));
  items.push(
    { label: '', kind: vscode.QuickPickItemKind.Separator },
    { label: '$(edit) Enter a Hugging Face id, a path or an endpoint…', action: 'enter' },
    { label: '$(folder-opened) Choose a model folder or .gguf file…', action: 'browse' },
    { label: '$(discard) This machine\'s default', description: current === '' ? '(current)' : undefined, action: 'default' },
  );
  const pick = await vscode.window.showQuickPick(items, {
    title: 'tealtab: choose the model', placeHolder: current || 'the default model', matchOnDetail: true,
  });
  if (!pick) {
    return;
  }
  let model: string | undefined = pick.model;
  if (pick.action === 'default') {
    model = '';
  } else if (pick.action === 'enter') {
    model = await vscode.window.showInputBox({
      title: 'tealtab: model',
      prompt: 'builtin:gemma-3-270m, a Hugging Face id (org/name), a folder, a .gguf file, or openai:http://host:port/v1',
      value: current,
      validateInput: (value) => (value.trim() ? undefined : 'Enter a model'),
    });
    model = model?.trim();
  } else if (pick.action === 'browse') {
    const chosen = await vscode.window.showOpenDialog({
      title: 'tealtab: a model folder or a .gguf file', canSelectFiles: true, canSelectFolders: true, canSelectMany: false,
    });
    model = chosen?.[0]?.fsPath;
  }
  if (model !== undefined && model !== current) {
    await updateSetting('model', model);
  }
}

/** The status bar item's menu. */
export async function menu(summary: string): Promise<void> {
  const enabled = vscode.workspace.getConfiguration(SECTION).get<boolean>('enable', true);
  const items: (vscode.QuickPickItem & { command: string })[] = [
    { label: enabled ? '$(circle-slash) Turn completions off' : '$(check) Turn completions on', command: 'tealtab.toggle' },
    { label: '$(debug-restart) Restart the server', command: 'tealtab.restart' },
    { label: '$(symbol-class) Choose the model…', command: 'tealtab.chooseModel' },
    { label: '$(output) Show the log', command: 'tealtab.showLog' },
    { label: '$(settings-gear) Open the settings', command: 'tealtab.openSettings' },
  ];
  const pick = await vscode.window.showQuickPick(items, { title: summary });
  if (pick) {
    await vscode.commands.executeCommand(pick.command);
  }
}
