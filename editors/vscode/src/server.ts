/**
 * Finding the server command, checking it before a start, and the language client itself.
 *
 * The server is `tealtab lsp` (pyproject's console script, `tealtab.lsp.cli:main`) on stdio.
 * A missing Python or a Python without tealtab would otherwise show up as a client that
 * crashes five times and gives up with a generic message; a quick check first lets the
 * extension say what is missing and how to install it.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import { LanguageClient, LanguageClientOptions, Middleware, ServerOptions } from 'vscode-languageclient/node';
import { ServerConfig, serverSettings } from './config';

export interface Launch {
  command: string;
  args: string[];
  /** The Python that runs `-m tealtab.lsp.cli`, when the command is one. */
  python?: string;
  /** Which setting (or default) chose the command, for messages. */
  origin: string;
}

const MODULE_ARGS = ['-m', 'tealtab.lsp.cli', 'lsp'];
const PREFLIGHT_TIMEOUT_MS = 20000;

/** The full path of `name` on PATH (or `name` itself when it already is a path), or undefined. */
export function which(name: string): string | undefined {
  const isWindows = process.platform === 'win32';
  const suffixes = isWindows ? (process.env.PATHEXT ?? '.EXE;.CMD;.BAT').split(';').concat(['']) : [''];
  const executable = (file: string) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return fs.statSync(file).isFile();
    } catch {
      return false;
    }
  };
  if (name.includes('/') || name.includes(path.sep)) {
    return executable(name) ? name : undefined;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    for (const suffix of suffixes) {
      const file = path.join(dir, name + suffix);
      if (dir && executable(file)) {
        return file;
      }
    }
  }
  return undefined;
}

/**
 * The command to run: `tealtab.server.command`; else `pythonPath -m tealtab.lsp.cli lsp`;
 * else `tealtab lsp` when the console script is on PATH; else `python3 -m tealtab.lsp.cli lsp`.
 */
export function resolveLaunch(config: ServerConfig): Launch {
  if (config.command.length > 0) {
    const [command, ...args] = config.command;
    const python = /python[\d.]*(\.exe)?$/i.test(path.basename(command)) ? command : undefined;
    return { command, args, python, origin: 'tealtab.server.command' };
  }
  if (config.pythonPath) {
    return { command: config.pythonPath, args: MODULE_ARGS, python: config.pythonPath, origin: 'tealtab.server.pythonPath' };
  }
  const script = which('tealtab');
  if (script) {
    return { command: script, args: ['lsp'], origin: '`tealtab` on PATH' };
  }
  const python = which('python3') ?? which('python') ?? 'python3';
  return { command: python, args: MODULE_ARGS, python, origin: 'the default Python on PATH' };
}

/** Why `launch` cannot work (with the fix), or undefined when it looks fine. */
export async function preflight(launch: Launch): Promise<string | undefined> {
  if (!which(launch.command)) {
    if (launch.python) {
      return `Python was not found at "${launch.command}" (from ${launch.origin}). Install Python 3.10+ and tealtab ` +
        `(pip install 'tealtab[builtin]'), then set tealtab.server.pythonPath to that Python.`;
    }
    return `"${launch.command}" was not found (from ${launch.origin}). Install tealtab with pip install 'tealtab[builtin]' ` +
      `or set tealtab.server.command.`;
  }
  if (!launch.python) {
    return undefined;
  }
  // find_spec of a dotted name imports the parents: no `tealtab` at all raises instead of returning None.
  const check = [
    'import importlib.util, sys',
    'try:',
    "    found = importlib.util.find_spec('tealtab.lsp.cli') is not None",
    'except ImportError:',
    '    found = False',
    'sys.exit(0 if found else 3)',
  ].join('\n');
  return new Promise((resolve) => {
    execFile(launch.python!, ['-c', check], { timeout: PREFLIGHT_TIMEOUT_MS }, (error) => {
      if (!error) {
        resolve(undefined);
      } else if ((error as { code?: unknown }).code === 3) {
        resolve(`tealtab is not installed in the Python at "${launch.python}" (from ${launch.origin}). Install it: ` +
          `"${launch.python}" -m pip install 'tealtab[builtin]' (or pip install -e '.[builtin]' in a tealtab checkout), ` +
          `or point tealtab.server.pythonPath at the Python that has it.`);
      } else {
        resolve(`"${launch.python}" does not run (${error.message.split('\n')[0]}). Check tealtab.server.pythonPath.`);
      }
    });
  });
}

export function createClient(launch: Launch, output: vscode.LogOutputChannel, middleware: Middleware): LanguageClient {
  // No `transport`: TransportKind.stdio would append `--stdio`, which `tealtab lsp` refuses;
  // a plain executable talks over stdin/stdout all the same.
  const serverOptions: ServerOptions = { command: launch.command, args: launch.args };
  const clientOptions: LanguageClientOptions = {
    // Every file and unsaved buffer: the server decides per language (tealtab.languages).
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    outputChannel: output,
    // A function, so that a restart sends the settings of that moment.
    initializationOptions: () => serverSettings(),
    middleware,
  };
  const client = new LanguageClient('tealtab', 'tealtab', serverOptions, clientOptions);
  // In vscode-languageclient 9, textDocument/inlineCompletion (LSP 3.18) is its one "proposed"
  // feature: without this the client never registers an inline completion provider.
  client.registerProposedFeatures();
  return client;
}
