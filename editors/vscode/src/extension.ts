// SPDX-License-Identifier: Apache-2.0
/**
 * lspilot for VS Code: starts `lspilot lsp` and lets vscode-languageclient (>= 10, LSP 3.18)
 * turn its textDocument/inlineCompletion answers into VS Code's inline suggestions (ghost
 * text; Tab accepts, Ctrl+Right accepts a word, Alt+] / Alt+[ cycle). VS Code cannot update a
 * shown inline suggestion in place, so lspilot/partialCompletion only drives the status bar.
 */
import * as vscode from "vscode";
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

interface PartialCompletion {
  textDocument: { uri: string; version?: number };
  requestId: string;
  text: string;
  done: boolean;
}

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem | undefined;

function initializationOptions(): Record<string, unknown> {
  const cfg = vscode.workspace.getConfiguration("lspilot");
  const options: Record<string, unknown> = {};
  const address = cfg.get<string>("daemonAddress");
  if (address) {
    options.daemonAddress = address;
  }
  const debounce = cfg.get<number | null>("debounceMs");
  if (typeof debounce === "number") {
    options.debounceMs = debounce;
  }
  const maxNewTokens = cfg.get<number | null>("maxNewTokens");
  if (typeof maxNewTokens === "number") {
    options.maxNewTokens = maxNewTokens;
  }
  return options;
}

function createClient(): LanguageClient {
  const cfg = vscode.workspace.getConfiguration("lspilot");
  const [command, ...args] = cfg.get<string[]>("serverCommand") ?? ["lspilot", "lsp"];
  const serverOptions: ServerOptions = {
    command,
    args,
    transport: TransportKind.stdio,
  };
  const clientOptions: LanguageClientOptions = {
    // Every file-backed or unsaved document, whatever its language.
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: initializationOptions(),
    outputChannelName: "lspilot",
  };
  return new LanguageClient("lspilot", "lspilot", serverOptions, clientOptions);
}

async function start(context: vscode.ExtensionContext): Promise<void> {
  client = createClient();
  context.subscriptions.push(
    client.onNotification("lspilot/partialCompletion", (params: PartialCompletion) => {
      if (!statusItem) {
        return;
      }
      statusItem.text = params.done ? "$(sparkle) lspilot" : "$(loading~spin) lspilot";
    }),
  );
  await client.start();
}

async function stop(): Promise<void> {
  const c = client;
  client = undefined;
  if (c) {
    await c.stop();
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.text = "$(sparkle) lspilot";
  statusItem.command = "lspilot.showStatus";
  statusItem.tooltip = "lspilot: show daemon status";
  statusItem.show();
  context.subscriptions.push(statusItem);

  context.subscriptions.push(
    vscode.commands.registerCommand("lspilot.showStatus", async () => {
      if (!client) {
        void vscode.window.showWarningMessage("lspilot: the language server is not running");
        return;
      }
      try {
        const status = (await client.sendRequest("workspace/executeCommand", {
          command: "lspilot.status",
          arguments: [],
        })) as Record<string, unknown>;
        const summary = `model ${status.model}, device ${status.device}, ` +
          `${status.requests_total} requests (${status.cancelled_total} cancelled)`;
        void vscode.window.showInformationMessage(`lspilot: ${summary}`);
      } catch (err) {
        void vscode.window.showErrorMessage(`lspilot: status failed: ${String(err)}`);
      }
    }),
    vscode.commands.registerCommand("lspilot.restart", async () => {
      await stop();
      await start(context);
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("lspilot")) {
        await stop();
        await start(context);
      }
    }),
  );

  try {
    await start(context);
  } catch (err) {
    void vscode.window.showErrorMessage(
      `lspilot: could not start the language server (${String(err)}). ` +
        "Install lspilot or set lspilot.serverCommand.",
    );
  }
}

export async function deactivate(): Promise<void> {
  await stop();
}
