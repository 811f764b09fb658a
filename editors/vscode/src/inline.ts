/**
 * Inline completions: the language client's own inline-completion feature registers the
 * provider (as the server's capabilities say); its middleware here sends the request
 * (`textDocument/inlineCompletion`, with VS Code's cancellation token, so a keystroke cancels
 * the request on the wire with `$/cancelRequest`) and adds what the extension owns:
 *
 * - the switches (`tealtab.enable`, `tealtab.languages`) before any request is sent;
 * - a debounce: an automatic request waits and is dropped when VS Code cancels it because the
 *   user typed again (an explicit request, Alt+\ or Alt+], is not delayed). The wait adapts to the
 *   server's measured latency, with `tealtab.debounce` as its upper bound (debounce.ts);
 * - every candidate is returned, so VS Code's own Alt+] / Alt+[ cycle through them, and its
 *   own partial accept (Ctrl+Right for a word, "Accept Line") works on them;
 * - the acceptance notifications of lsp/acceptance.py: `tealtab/didShow` when candidates come back,
 *   `tealtab/didAccept` from the item's command (VS Code runs it after it inserted the item), and
 *   `tealtab/didPartialAccept` from `tealtab.acceptNextWord` / `tealtab.acceptNextLine`, which
 *   run VS Code's partial-accept commands and report what they inserted. The stable VS Code API
 *   has no "shown" or "partially accepted" callbacks (`handleDidPartiallyAcceptCompletionItem` is
 *   still the proposed API `inlineCompletionsAdditions`, refused to a published extension), hence
 *   these two approximations.
 *
 * An accept notification carries `position` (the cursor right after the inserted text, UTF-16 as
 * VS Code counts) and `version` (the document's version with the insertion), so that the server
 * can start on the next completion there. It is sent only once the client has put the
 * `didChange` of that version on the wire (`DocumentSync`): the server reads its document at
 * that position.
 */
import * as vscode from 'vscode';
import {
  InlineCompletionItem, InlineCompletionList, InlineCompletionRequest, LanguageClient, Middleware,
} from 'vscode-languageclient/node';
import { adaptiveDebounce, debounceMs, enabledFor } from './config';
import { AdaptiveDebounce } from './debounce';

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

/** How long an accept notification waits for the client to send the insertion's didChange. */
const SYNC_TIMEOUT_MS = 1000;

/**
 * The document versions the client has sent (didOpen, didChange), from its middleware.
 *
 * vscode-languageclient sends an incremental didChange from its onDidChangeTextDocument listener
 * (a full one it flushes before any later notification), and one connection writes messages in
 * the order they were handed over; a notification sent after `whenSynced` therefore reaches the
 * server after the change it waited for.
 */
export class DocumentSync {
  private readonly sent = new Map<string, number>();
  private waiters: (() => void)[] = [];

  readonly middleware: Pick<Middleware, 'didOpen' | 'didChange' | 'didClose'> = {
    didOpen: async (document, next) => {
      const version = document.version;
      await next(document);
      this.mark(document.uri.toString(), version);
    },
    didChange: async (event, next) => {
      const version = event.document.version; // later edits may bump it while this one is sent
      await next(event);
      this.mark(event.document.uri.toString(), version);
    },
    didClose: async (document, next) => {
      this.sent.delete(document.uri.toString());
      await next(document);
    },
  };

  /** A new client: nothing is sent yet. */
  reset(): void {
    this.sent.clear();
    this.wake();
  }

  /** The last version of `uri` the client sent, if any. */
  version(uri: string): number | undefined {
    return this.sent.get(uri);
  }

  /** True once `document`'s current version has been sent; false after `timeoutMs` without it. */
  async whenSynced(document: vscode.TextDocument, timeoutMs = SYNC_TIMEOUT_MS): Promise<boolean> {
    const uri = document.uri.toString();
    const deadline = Date.now() + timeoutMs;
    while ((this.sent.get(uri) ?? -1) < document.version) {
      const left = deadline - Date.now();
      if (left <= 0) {
        return false;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  private mark(uri: string, version: number): void {
    if ((this.sent.get(uri) ?? -1) < version) {
      this.sent.set(uri, version);
    }
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    waiters.forEach((wake) => wake());
  }
}

/** The candidates of the last answer, as text after the cursor at `position`. */
interface Shown {
  uri: string;
  languageId: string;
  position: vscode.Position;
  texts: string[];
  latencyMs: number;
}

/** What the item's command carries, computed when the answer came back. */
export interface AcceptParams {
  uri: string;
  languageId: string;
  index: number;
  count: number;
  length: number;
  acceptedLength: number;
  latencyMs: number;
}

/** What `tealtab/didAccept` and `tealtab/didPartialAccept` send: the above, and where the text ended up. */
export interface AcceptNotification extends AcceptParams {
  /** didPartialAccept only: `word` or `line`. */
  kind?: 'word' | 'line';
  /** The cursor right after the inserted text (UTF-16 code units, VS Code's and the client's encoding). */
  position?: { line: number; character: number };
  /** The document's version with the insertion (the version of the didChange that carried it). */
  version?: number;
}

export class InlineCompletions {
  private shown: Shown | undefined;
  /** The latencies of answered automatic requests, and the debounce they give. */
  readonly debounce = new AdaptiveDebounce();
  readonly sync = new DocumentSync();

  /** `client()`: the running client (for notifications); `onAnswer`: after each non-empty answer. */
  constructor(private readonly client: () => LanguageClient | undefined, private readonly onAnswer: () => void) {}

  /** The wait before an automatic request now. */
  debounceMs(): number {
    return this.debounce.delayMs(debounceMs(), adaptiveDebounce());
  }

  /** One line for the status bar's tooltip. */
  describeDebounce(): string {
    return this.debounce.describe(debounceMs(), adaptiveDebounce());
  }

  /** A new client (a restart, another server): its latency and its documents are new. */
  reset(): void {
    this.debounce.reset();
    this.sync.reset();
    this.shown = undefined;
  }

  readonly middleware: Middleware['provideInlineCompletionItems'] = async (document, position, context, token) => {
    if (!enabledFor(document.languageId)) {
      return null;
    }
    const automatic = context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic;
    const delay = this.debounceMs();
    if (automatic && delay > 0 && !(await sleep(delay, token))) {
      return null;
    }
    const started = Date.now();
    const { answered, result } = await this.request(document, position, context, token);
    if (automatic && answered && !token.isCancellationRequested) {
      // Only answers count: a cancelled request says nothing about how long an answer takes.
      this.debounce.record(Date.now() - started);
    }
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
    token: vscode.CancellationToken): Promise<{
      answered: boolean; result: vscode.InlineCompletionItem[] | vscode.InlineCompletionList | undefined;
    }> {
    const client = this.client();
    if (!client?.isRunning()) {
      return { answered: false, result: undefined };
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
      return {
        answered: true,
        result: await client.protocol2CodeConverter.asInlineCompletionResult(
          result as InlineCompletionItem[] | InlineCompletionList | null, token),
      };
    } catch (error) {
      // Cancelled requests end here too; neither is worth a notification while typing.
      if (!token.isCancellationRequested) {
        client.warn(`inline completion failed: ${error instanceof Error ? error.message : String(error)}`, undefined, false);
      }
      return { answered: false, result: undefined };
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

  /**
   * Where the accepted text ended: the cursor of `document`'s editor and the document's version,
   * once the client has sent the didChange of that version (so that the server reads the
   * insertion at that position). Nothing when the document has no visible editor.
   */
  private async placed(document: vscode.TextDocument): Promise<Pick<AcceptNotification, 'position' | 'version'>> {
    const editor = vscode.window.activeTextEditor?.document === document
      ? vscode.window.activeTextEditor
      : vscode.window.visibleTextEditors.find((candidate) => candidate.document === document);
    if (!editor) {
      return {};
    }
    await this.sync.whenSynced(document);
    const cursor = editor.selection.active;
    return { position: { line: cursor.line, character: cursor.character }, version: document.version };
  }

  /** The item's command (VS Code runs it after inserting the item): the user accepted the whole candidate. */
  async accepted(params: AcceptParams): Promise<void> {
    this.shown = undefined;
    const document = vscode.workspace.textDocuments.find((candidate) => candidate.uri.toString() === params.uri);
    const notification: AcceptNotification = { ...params, ...(document ? await this.placed(document) : {}) };
    this.notify(DID_ACCEPT, { ...notification });
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
      const notification = {
        ...this.base(shown, index), kind, acceptedLength: chars(inserted), latencyMs: shown.latencyMs,
        ...(await this.placed(document)),
      };
      this.notify(DID_PARTIAL_ACCEPT, notification);
    }
  }
}
