/**
 * The user-facing commands besides start/stop: the status bar menu, the switch, and the model
 * picker. Settings are written where they are set (a folder's settings win over the user's, so
 * writing the user's value under a folder value would change nothing).
 */
import * as vscode from 'vscode';
import { SECTION } from './config';
import { parseRemote } from './status';

/** Models offered by `tealtab.chooseModel`: the built-in one and the engine's presets (engine/config.py PRESETS) by their Hugging Face ids. */
export const KNOWN_MODELS: { id: string; detail: string }[] = [
  { id: 'builtin:gemma-3-270m', detail: 'built in: Gemma 3 270M base, offline, runs on any CPU' },
  { id: 'Qwen/Qwen2.5-Coder-1.5B', detail: 'Hugging Face, fill-in-the-middle; the default with CUDA' },
  { id: 'Qwen/Qwen2.5-Coder-7B', detail: 'Hugging Face, fill-in-the-middle; a GPU with 16 GB or more' },
  { id: 'bigcode/starcoder2-3b', detail: 'Hugging Face, fill-in-the-middle' },
  { id: 'google/gemma-3-270m', detail: 'Hugging Face, the full-precision weights of the built-in model' },
];

/** The remote backends offered by the model picker's "Remote endpoint…" (the server's completion/model_source.py REMOTE_PROTOCOLS). */
export const REMOTE_KINDS: { protocol: string; label: string; detail: string; url: string; servedModel: string }[] = [
  {
    protocol: 'openai', label: 'OpenAI-compatible (vLLM, SGLang, llama.cpp, LM Studio)', detail: 'POST /v1/completions; the URL ends in /v1',
    url: 'http://localhost:8000/v1', servedModel: 'e.g. Qwen/Qwen2.5-Coder-1.5B',
  },
  {
    protocol: 'llamacpp', label: 'llama.cpp /infill', detail: 'llama.cpp server\'s native fill-in-the-middle endpoint',
    url: 'http://localhost:8080', servedModel: 'usually empty: the model the server loaded',
  },
  {
    protocol: 'ollama', label: 'Ollama', detail: 'POST /api/generate with the suffix',
    url: 'http://localhost:11434', servedModel: 'e.g. qwen2.5-coder:1.5b',
  },
];

/** The most specific level where any of `keys` is set (workspace folder, workspace, else user). */
function settingTarget(...keys: string[]): vscode.ConfigurationTarget {
  const config = vscode.workspace.getConfiguration(SECTION);
  const where = keys.map((key) => config.inspect(key));
  if (where.some((value) => value?.workspaceFolderValue !== undefined)) {
    return vscode.ConfigurationTarget.WorkspaceFolder;
  }
  if (where.some((value) => value?.workspaceValue !== undefined)) {
    return vscode.ConfigurationTarget.Workspace;
  }
  return vscode.ConfigurationTarget.Global;
}

/** Update `key` at the most specific level where it is set (workspace folder, workspace, else user). */
export async function updateSetting(key: string, value: unknown): Promise<void> {
  await vscode.workspace.getConfiguration(SECTION).update(key, value, settingTarget(key));
}

export async function toggle(): Promise<void> {
  const enabled = vscode.workspace.getConfiguration(SECTION).get<boolean>('enable', true);
  await updateSetting('enable', !enabled);
  vscode.window.setStatusBarMessage(`tealtab: completions ${enabled ? 'off' : 'on'}`, 3000);
}

type ModelPick = vscode.QuickPickItem & { model?: string; action?: 'enter' | 'browse' | 'remote' | 'default' };

export async function chooseModel(): Promise<void> {
  const current = vscode.workspace.getConfiguration(SECTION).get<string>('model', '') ?? '';
  const items: ModelPick[] = KNOWN_MODELS.map(({ id, detail }) => ({
    label: id, description: id === current ? '(current)' : undefined, detail, model: id,
  }));
  items.push(
    { label: '', kind: vscode.QuickPickItemKind.Separator },
    { label: '$(edit) Enter a Hugging Face id, a path or an endpoint…', action: 'enter' },
    { label: '$(folder-opened) Choose a model folder or .gguf file…', action: 'browse' },
    {
      label: '$(cloud) Remote endpoint…', description: parseRemote(current) ? '(current)' : undefined,
      detail: 'A server elsewhere: OpenAI-compatible (vLLM, SGLang, llama.cpp, LM Studio), llama.cpp /infill or Ollama',
      action: 'remote',
    },
    { label: '$(discard) This machine\'s default', description: current === '' ? '(current)' : undefined, action: 'default' },
  );
  const pick = await vscode.window.showQuickPick(items, {
    title: 'tealtab: choose the model', placeHolder: current || 'the default model', matchOnDetail: true,
  });
  if (!pick) {
    return;
  }
  if (pick.action === 'remote') {
    await chooseRemote(current);
    return;
  }
  let model: string | undefined = pick.model;
  if (pick.action === 'default') {
    model = '';
  } else if (pick.action === 'enter') {
    model = await vscode.window.showInputBox({
      title: 'tealtab: model',
      prompt: 'builtin:gemma-3-270m, a Hugging Face id (org/name), a folder, a .gguf file, or an endpoint: '
        + 'openai:http://host:8000/v1, llamacpp:http://host:8080, ollama:http://host:11434',
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

/**
 * Ask for a remote endpoint (kind, URL, served model name), then write `tealtab.model` = `kind:url`
 * and `tealtab.remoteModel` (unset when left empty) at one level: where either is set, else the user's.
 * Escape at any step changes nothing.
 */
async function chooseRemote(current: string): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const now = parseRemote(current);
  const kind = await vscode.window.showQuickPick(
    REMOTE_KINDS.map((entry) => ({ ...entry, description: entry.protocol === now?.kind ? '(current)' : undefined })),
    { title: 'tealtab: remote endpoint (1/3): the kind of server' },
  );
  if (!kind) {
    return;
  }
  const url = await vscode.window.showInputBox({
    title: `tealtab: remote endpoint (2/3): the ${kind.label.replace(/ \(.*/, '')} server's URL`,
    prompt: `e.g. ${kind.url}`,
    placeHolder: kind.url,
    value: now?.kind === kind.protocol ? now.url : kind.url,
    validateInput: (value) => (/^https?:\/\/\S+$/i.test(value.trim()) ? undefined : 'Enter a URL that starts with http:// or https://'),
  });
  if (url === undefined) {
    return;
  }
  const served = await vscode.window.showInputBox({
    title: 'tealtab: remote endpoint (3/3): the served model name (optional)',
    prompt: 'The model name the server serves (sent as `model`; it also picks the fill-in-the-middle template). '
      + 'Empty: the server\'s only or first model.',
    placeHolder: kind.servedModel,
    value: !now || now.kind === kind.protocol ? config.get<string | null>('remoteModel') ?? '' : '',
  });
  if (served === undefined) {
    return;
  }
  const target = settingTarget('model', 'remoteModel');
  await config.update('model', `${kind.protocol}:${url.trim().replace(/\/+$/, '')}`, target);
  await config.update('remoteModel', served.trim() || undefined, target);
  if (!served.trim() && vscode.workspace.getConfiguration(SECTION).get<string | null>('remoteModel')) {
    // A user's name still shows through the level just cleared: an empty name is null for the server.
    await config.update('remoteModel', '', target);
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
