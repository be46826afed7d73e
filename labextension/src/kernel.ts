import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { KernelMessage } from '@jupyterlab/services';

import { ITask } from './api';

const pyString = (s: string) => JSON.stringify(s); // a JSON string literal is a valid Python str

/** The one line a user could type to get the same state: shown in the UI and run in the kernel. */
export function loadCode(task: ITask, store: string): string {
  const index = task.index ? `, index=${task.index}` : '';
  return (
    `import jupyter_flow; _jf_loaded = jupyter_flow.load(${pyString(task.run_id)}, ` +
    `${pyString(task.step)}${index}, store=${pyString(store)})`
  );
}

// names are identifiers, so a comma-joined str needs no escaping in its repr
const NAMES_EXPR =
  "','.join(sorted(_jf_loaded if isinstance(_jf_loaded, (list, tuple, set, dict)) " +
  "else getattr(_jf_loaded, 'names', None) or []))";

/**
 * Run `jupyter_flow.load(...)` in the notebook's kernel and return the names it set.
 * Throws with the kernel's own error text when loading fails.
 */
export async function loadIntoKernel(panel: NotebookPanel, task: ITask, store: string): Promise<string[]> {
  await panel.sessionContext.ready;
  const kernel = panel.sessionContext.session?.kernel;
  if (!kernel) {
    throw new Error('This notebook has no running kernel: start one, then try again.');
  }
  const future = kernel.requestExecute({
    code: loadCode(task, store),
    store_history: false,
    user_expressions: { names: NAMES_EXPR }
  });
  const reply = (await future.done) as KernelMessage.IExecuteReplyMsg;
  const content = reply.content;
  if (content.status !== 'ok') {
    const err = content as KernelMessage.IReplyErrorContent;
    throw new Error(`${err.ename}: ${err.evalue}`);
  }
  const names = content.user_expressions?.names as any;
  const text: string = names?.data?.['text/plain'] ?? "''";
  return text.slice(1, -1).split(',').filter(Boolean);
}

/**
 * Put the failing cell's source (as it ran) below the active cell, ready to edit and re-run. It is
 * tagged `skip`: a scratch cell for debugging, which the pipeline leaves out (untagged, it would
 * silently join the step above it) until the user tags it otherwise.
 */
export function insertFailingCell(panel: NotebookPanel, source: string): void {
  const notebook = panel.content;
  NotebookActions.insertBelow(notebook);
  const cell = notebook.activeCell?.model;
  cell?.sharedModel.setSource(source);
  cell?.setMetadata('tags', ['skip']);
}
