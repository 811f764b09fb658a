/**
 * Model loads as VS Code progress.
 *
 * The server reports each load with work-done progress ($/progress, lsp/model_loading.py).
 * vscode-languageclient shows that natively, but only as a spinner in the status bar
 * (ProgressLocation.Window). That is right for the load at start-up, which happens every time
 * a window opens; a load the user asked for (another model or device) can take minutes
 * (a download, a first conversion), so from the second load of a server session on the
 * progress is also shown as a notification with the server's messages and percentage.
 */
import * as vscode from 'vscode';
import { Middleware, ProgressToken, WorkDoneProgressBegin, WorkDoneProgressEnd, WorkDoneProgressReport } from 'vscode-languageclient/node';

interface Part {
  progress?: vscode.Progress<{ message?: string; increment?: number }>;
  reported: number;
  finish: () => void;
}

type Value = WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd;

export class LoadProgress implements vscode.Disposable {
  private loads = 0;
  private readonly parts = new Map<ProgressToken, Part>();

  /** Called with every load's begin and end; the status bar refreshes on them. */
  constructor(private readonly onChange: () => void) {}

  /** A new server session: its first load is the start-up load again. */
  reset(): void {
    this.loads = 0;
    for (const part of this.parts.values()) {
      part.finish();
    }
    this.parts.clear();
  }

  readonly middleware: Middleware['handleWorkDoneProgress'] = (token, value, next) => {
    next(token, value); // the client's own status-bar spinner
    const params = value as Value;
    if (params.kind === 'begin') {
      this.loads += 1;
      if (this.loads > 1) {
        this.begin(token, params);
      }
      this.onChange();
    } else if (params.kind === 'report') {
      this.report(this.parts.get(token), params);
    } else if (params.kind === 'end') {
      this.parts.get(token)?.finish();
      this.parts.delete(token);
      this.onChange();
    }
  };

  private begin(token: ProgressToken, params: WorkDoneProgressBegin): void {
    const part: Part = { reported: 0, finish: () => undefined };
    this.parts.set(token, part);
    const done = new Promise<void>((resolve) => {
      part.finish = resolve;
    });
    void vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: params.title, cancellable: false },
      (progress) => {
        part.progress = progress;
        this.report(part, params);
        return done;
      },
    );
  }

  private report(part: Part | undefined, params: WorkDoneProgressBegin | WorkDoneProgressReport): void {
    if (!part?.progress) {
      return;
    }
    let increment: number | undefined;
    if (typeof params.percentage === 'number') {
      const percentage = Math.max(0, Math.min(100, params.percentage));
      increment = Math.max(0, percentage - part.reported);
      part.reported += increment;
    }
    part.progress.report({ message: params.message, increment });
  }

  dispose(): void {
    this.reset();
  }
}
