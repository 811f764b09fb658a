/**
 * The `tealtab.*` settings: what goes to the server, and what only the extension uses.
 *
 * The server reads one settings object (lsp/settings.py) from initializationOptions and from
 * `workspace/didChangeConfiguration` as `{"settings": {"tealtab": {...}}}`. A later object is
 * applied on top of the earlier one and `null` resets a key, so the extension always sends every
 * server key, with `null` where the user left the server's default. Keys the server does not know
 * (`debounce`, `adaptiveDebounce`, `server.*`) stay here: it would report them as unknown.
 */
import * as vscode from 'vscode';

export const SECTION = 'tealtab';

/** The keys the server accepts (lsp/settings.py `_KEYS`), in its camelCase spelling. */
export const SERVER_KEYS = [
  'model', 'device', 'quantization', 'sparsity', 'candidates', 'maxNewTokens', 'temperature',
  'tokenAlignment', 'contextTokens', 'enable', 'languages', 'crossFileContext', 'timeBudgetMs',
  'remoteModel', 'apiKeyEnv', 'remoteTimeout',
] as const;

/**
 * Keys whose change makes the server load the model again, or connect to a remote one again
 * (Settings.load_key on the server). `sparsity` is not one: the server applies it to the loaded model.
 */
export const LOAD_KEYS = ['model', 'device', 'quantization', 'remoteModel', 'apiKeyEnv', 'remoteTimeout'] as const;

export type ServerSettings = Record<(typeof SERVER_KEYS)[number], unknown>;

function section(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration(SECTION);
}

/** The settings object for the server; an empty model string means "the server's default" (null). */
export function serverSettings(): ServerSettings {
  const config = section();
  const settings = {} as ServerSettings;
  for (const key of SERVER_KEYS) {
    const value = config.get<unknown>(key);
    settings[key] = value === undefined || value === '' ? null : value;
  }
  return settings;
}

/** What decides which model is loaded; a different value means the server reloads. */
export function loadKey(settings: ServerSettings = serverSettings()): string {
  return JSON.stringify(LOAD_KEYS.map((key) => settings[key]));
}

/**
 * The names of the load keys that differ between two `loadKey()` values, for the log: never the
 * values (`apiKeyEnv` may hold a key pasted by mistake, a remote `model` a password).
 */
export function changedLoadKeys(before: string, after: string): string[] {
  const [old, now] = [JSON.parse(before), JSON.parse(after)] as unknown[][];
  return LOAD_KEYS.filter((_, index) => JSON.stringify(old[index]) !== JSON.stringify(now[index]));
}

/** Whether completions are on for documents of `languageId` (the same rule as the server's). */
export function enabledFor(languageId: string): boolean {
  const config = section();
  if (!config.get<boolean>('enable', true)) {
    return false;
  }
  const languages = config.get<Record<string, unknown>>('languages', {}) ?? {};
  return languages[languageId] !== false;
}

/** The user's debounce: milliseconds to wait after the last keystroke before asking the server (the adaptive debounce's cap). */
export function debounceMs(): number {
  const value = section().get<number>('debounce', 150);
  return typeof value === 'number' && value >= 0 ? Math.min(value, 2000) : 150;
}

/** Whether the debounce adapts to the server's measured latency (debounce.ts), with `debounceMs()` as its cap. */
export function adaptiveDebounce(): boolean {
  return section().get<boolean>('adaptiveDebounce', true) !== false;
}

export interface ServerConfig {
  /** `tealtab.server.command`: an array, or a string split on blanks (quotes keep blanks). */
  command: string[];
  pythonPath: string;
}

/** Split a command line on blanks; single or double quotes keep a blank inside an argument. */
export function splitCommand(line: string): string[] {
  const parts: string[] = [];
  const pattern = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let match: RegExpExecArray | null;
  while ((match = pattern.exec(line)) !== null) {
    parts.push(match[1] ?? match[2] ?? match[3]);
  }
  return parts;
}

export function serverConfig(): ServerConfig {
  const config = section();
  const raw = config.get<unknown>('server.command');
  let command: string[] = [];
  if (typeof raw === 'string') {
    command = splitCommand(raw);
  } else if (Array.isArray(raw)) {
    command = raw.filter((part): part is string => typeof part === 'string');
  }
  return { command, pythonPath: (config.get<string>('server.pythonPath') ?? '').trim() };
}
