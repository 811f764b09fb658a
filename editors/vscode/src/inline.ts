/**
 * Inline completions: the language client's own inline-completion feature registers the
 * provider (as the server's capabilities say); its middleware here sends the request
 * (`textDocument/inlineCompletion`, with VS Code's cancellation token, so a keystroke cancels
 * the request on the wire with `$/cancelRequest`) and adds what the extension owns:
 *
 * - the switches (`tealtab.enable`, `tealtab.languages`) before any request is sent;
 * - a debounce: an automatic request waits `tealtab.debounce` ms and is dropped when VS Code
 *   cancels it because the user typed again (an explicit request, Alt+\ or Alt+], is not delayed);
 * - every candidate is returned, so VS Code's own Alt+] / Alt+[ cycle through them, and its
 *   own partial accept (Ctrl+Right for a word, "Accept Line") works on them;
 * - the acceptance statistics of lsp/acceptance.py: `tealtab/didShow` when candidates come back,
 *   `tealtab/didAccept` from the item's command (VS Code runs it when the item is accepted), and
 *   `tealtab/didPartialAccept` from `tealtab.acceptNextWord` / `tealtab.acceptNextLine`, which
 *   run VS Code's partial-accept commands and report what they inserted. The stable VS Code API
 *   has no "shown" or "partially accepted" callbacks, hence these two approximations.
 */
import * as vscode from 'vscode';
import {
  InlineCompletionItem, InlineCompletionList, InlineCompletionRequest, LanguageClient, Middleware,
} from 'vscode-languageclient/node';
import { debounceMs, enabledFor } from './config';

export const DID_SHOW = 'tealtab/didShow';
export const DID_ACCEPT = 'tealtab/didAccept';
export const DID_PARTIAL_ACCEPT = 'tealtab/didPartialAccept';
/** LSP 3.18 InlineCompletionTriggerKind. */
const LSP_INVOKED = 1;
const LSP_AUTOMATIC = 2;
/** Internal command attached to every item; VS Code runs it on accept. */
export const ACCEPTED_COMMAND = 'tealtab._accepted';

const PARTIAL_COMMANDS = {
  word: 'editor.action.inlineSuggest.acceptNextWord',
  line: 'editor.action.inlineSuggest.acceptNextLine',
} as const;

/** Characters (code points), as the server and the Neovim plugin count them. */
function chars(text: string): number {
  return [...text].length;
}

/** Wait `ms`; false when `token` was cancelled first. */
function sleep(ms: number, token: vscode.CancellationToken): Promise<boolean> {
  return new Promise((resolve) => {
    if (token.isCancellationRequested) {
      resolve(false);
      return;
    }
    const listener = token.onCancellationRequested(() => {
      clearTimeout(timer);
      listener.dispose();
      resolve(false);
    });
    const timer = setTimeout(() => {
      listener.dispose();
      resolve(true);
    }, ms);
  });
}

/** The candidates of the last answer, as text after the cursor at `position`. */
interface Shown {
  uri: string;
  languageId: string;
  position: vscode.Position;
  texts: string[];
  latencyMs: number;
}

export interface AcceptParams {
  uri: string;
  languageId: string;
  index: number;
  count: number;
  length: number;
  acceptedLength: number;
  latencyMs: number;
}

export class InlineCompletions {
  private shown: Shown | undefined;

  /** `client()`: the running client (for notifications); `onAnswer`: after each non-empty answer. */
  constructor(private readonly client: () => LanguageClient | undefined, private readonly onAnswer: () => void) {}

  readonly middleware: Middleware['provideInlineCompletionItems'] = async (document, position, context, token) => {
    if (!enabledFor(document.languageId)) {
      return null;
    }
    const automatic = context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic;
    const delay = debounceMs();
    if (automatic && delay > 0 && !(await sleep(delay, token))) {
      return null;
    }
    const started = Date.now();
    const result = await this.request(document, position, context, token);
    if (token.isCancellationRequested || !result) {
      return null;
    }
    const items = Array.isArray(result) ? result : result.items;
    if (items.length === 0) {
      return result;
    }
    const latencyMs = Date.now() - started;
    const texts = items.map((item) => this.textAfterCursor(document, position, item));
    const before = this.shown;
    const shown: Shown = { uri: document.uri.toString(), languageId: document.languageId, position, texts, latencyMs };
    this.shown = shown;
    // VS Code asks again for the same spot (an explicit request after an automatic one): one show.
    const same = before !== undefined && before.uri === shown.uri && before.position.isEqual(position) &&
      before.texts.join('\0') === texts.join('\0');
    items.forEach((item, index) => {
      const params: AcceptParams = {
        uri: document.uri.toString(), languageId: document.languageId, index, count: items.length,
        length: chars(texts[index]), acceptedLength: chars(texts[index]), latencyMs,
      };
      item.command = { command: ACCEPTED_COMMAND, title: 'tealtab: accepted', arguments: [params] };
    });
    // VS Code shows the first candidate that fits; which one is on screen is not reported back.
    if (!same) {
      this.notify(DID_SHOW, { ...this.base(shown, 0), latencyMs });
    }
    this.onAnswer();
    return result;
  };

  /**
   * The request itself, instead of the client's `next`: vscode-languageclient 9 sends VS Code's
   * trigger kind unchanged (Invoke 0, Automatic 1, the numbering of the 3.18 proposal), while
   * LSP 3.18 has Invoked 1 and Automatic 2; the server refuses 0 as invalid params.
   */
  private async request(document: vscode.TextDocument, position: vscode.Position, context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken): Promise<vscode.InlineCompletionItem[] | vscode.InlineCompletionList | undefined> {
    const client = this.client();
    if (!client?.isRunning()) {
      return undefined;
    }
    const c2p = client.code2ProtocolConverter;
    const selected = context.selectedCompletionInfo;
    const params = {
      textDocument: c2p.asTextDocumentIdentifier(document),
      position: c2p.asPosition(position),
      context: {
        triggerKind: context.triggerKind === vscode.InlineCompletionTriggerKind.Invoke ? LSP_INVOKED : LSP_AUTOMATIC,
        selectedCompletionInfo: selected ? { range: c2p.asRange(selected.range), text: selected.text } : undefined,
      },
    };
    try {
      const result = await client.sendRequest(InlineCompletionRequest.method, params, token);
      return await client.protocol2CodeConverter.asInlineCompletionResult(
        result as InlineCompletionItem[] | InlineCompletionList | null, token);
    } catch (error) {
      // Cancelled requests end here too; neither is worth a notification while typing.
      if (!token.isCancellationRequested) {
        client.warn(`inline completion failed: ${error instanceof Error ? error.message : String(error)}`, undefined, false);
      }
      return undefined;
    }
  }

  /** The ghost text an item shows: its insert text minus what is typed between its start and the cursor. */
  private textAfterCursor(document: vscode.TextDocument, position: vscode.Position, item: vscode.InlineCompletionItem): string {
    const insert = typeof item.insertText === 'string' ? item.insertText : item.insertText.value;
    const start = item.range?.start;
    if (!start || !start.isBefore(position)) {
      return insert;
    }
    const typed = document.getText(new vscode.Range(start, position));
    return insert.startsWith(typed) ? insert.slice(typed.length) : insert;
  }

  private base(shown: Shown, index: number): Record<string, unknown> {
    return {
      uri: shown.uri, languageId: shown.languageId, index, count: shown.texts.length,
      length: chars(shown.texts[index]),
    };
  }

  private notify(method: string, params: Record<string, unknown>): void {
    const client = this.client();
    if (client?.isRunning()) {
      void client.sendNotification(method, params).catch(() => undefined);
    }
  }

  /** The item's command: the user accepted the whole candidate. */
  accepted(params: AcceptParams): void {
    this.notify(DID_ACCEPT, { ...params });
    this.shown = undefined;
  }

  /** Run VS Code's partial accept and report what it inserted when that continues one of our candidates. */
  async acceptPart(kind: keyof typeof PARTIAL_COMMANDS): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const shown = this.shown;
    if (!editor || !shown || editor.document.uri.toString() !== shown.uri) {
      await vscode.commands.executeCommand(PARTIAL_COMMANDS[kind]);
      return;
    }
    const document = editor.document;
    const before = editor.selection.active;
    const typed = before.isBefore(shown.position) ? undefined : document.getText(new vscode.Range(shown.position, before));
    const version = document.version;
    const changed = new Promise<void>((resolve) => {
      const listener = vscode.workspace.onDidChangeTextDocument((event) => {
        if (event.document === document) {
          listener.dispose();
          resolve();
        }
      });
      setTimeout(() => {
        listener.dispose();
        resolve();
      }, 1000);
    });
    await vscode.commands.executeCommand(PARTIAL_COMMANDS[kind]);
    if (document.version === version) {
      await changed;
    }
    const after = editor.selection.active;
    if (typed === undefined || !before.isBefore(after)) {
      return;
    }
    const inserted = document.getText(new vscode.Range(before, after));
    const index = shown.texts.findIndex((text) => text.startsWith(typed + inserted));
    if (index >= 0) {
      this.notify(DID_PARTIAL_ACCEPT, { ...this.base(shown, index), kind, acceptedLength: chars(inserted) });
    }
  }
}
