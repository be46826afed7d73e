import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { ITask } from './api';
import { flowIcon } from './icons';
import { insertFailingCell, loadIntoKernel } from './kernel';
import { FlowModel } from './model';
import { ITaskActions } from './rundetail';
import { FlowSidebar } from './sidebar';
import { markActiveCell, trackBadges } from './tagging';
import { notebookViewer } from './viewer';

const CMD = {
  open: 'jupyter-flow:open-sidebar',
  run: 'jupyter-flow:run',
  resume: 'jupyter-flow:resume-latest-failed',
  mark: 'jupyter-flow:mark-step'
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-flow:plugin',
  description: 'Run a tagged notebook as a pipeline from a sidebar; tag cells as steps.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry, ILabShell],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    shell: ILabShell,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const model = new FlowModel();
    const panel = (): NotebookPanel => {
      const current = tracker.currentWidget;
      if (!current) {
        throw new Error('Open a notebook first.');
      }
      return current;
    };
    const guarded =
      <A extends unknown[], R>(fn: (...args: A) => R) =>
      (...args: A): R | undefined => {
        try {
          return fn(...args);
        } catch (e) {
          void showErrorMessage('jupyter-flow', (e as Error).message);
          return undefined;
        }
      };

    const actions: ITaskActions = {
      load: (task: ITask) => loadIntoKernel(panel(), task, model.info?.store ?? ''),
      insert: (source: string) => insertFailingCell(panel(), source),
      openNotebook: guarded(async (task: ITask) => {
        const nb = await model.api.notebook(task);
        const viewer = notebookViewer(`${task.step}/${task.index} · ${task.run_id}`, nb, rendermime);
        shell.add(viewer, 'main', { mode: 'split-right' });
      }),
      resume: run => void model.resume(run),
      cancel: run => void model.cancel(run)
    };

    const sidebar = new FlowSidebar(model, actions);
    shell.add(sidebar, 'left', { rank: 600 });
    restorer?.add(sidebar, sidebar.id);

    const follow = () => void model.setNotebook(tracker.currentWidget?.context.path ?? null);
    tracker.currentChanged.connect(follow);
    tracker.widgetAdded.connect((_, nb) =>
      nb.context.saveState.connect((_, state) => {
        if (state === 'completed' && nb === tracker.currentWidget) {
          void model.refresh();
        }
      })
    );
    void model.connect().then(follow);
    trackBadges(tracker);

    const saveFirst = async () => {
      const nb = panel();
      if (nb.context.model.dirty) {
        await nb.context.save();
      }
    };

    app.commands.addCommand(CMD.open, {
      label: 'Show Pipeline Sidebar',
      icon: flowIcon,
      execute: () => shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CMD.run, {
      label: 'Run Notebook as Pipeline',
      isEnabled: () => !!tracker.currentWidget,
      execute: guarded(async () => {
        await saveFirst();
        shell.activateById(sidebar.id);
        await model.start({});
      })
    });
    app.commands.addCommand(CMD.resume, {
      label: 'Resume Latest Failed Pipeline Run',
      isEnabled: () => !!tracker.currentWidget,
      execute: guarded(async () => {
        await saveFirst();
        await model.refreshRuns();
        const failed = model.latestFailed();
        if (!failed) {
          throw new Error('No failed run of this notebook to resume.');
        }
        shell.activateById(sidebar.id);
        await model.resume(failed);
      })
    });
    app.commands.addCommand(CMD.mark, {
      label: 'Mark Cell as Step',
      caption: 'Tag the active cell as the start of a pipeline step',
      icon: flowIcon,
      isEnabled: () => !!tracker.activeCell,
      execute: guarded(() => markActiveCell(panel()))
    });
    for (const command of Object.values(CMD)) {
      palette?.addItem({ command, category: 'Pipeline' });
    }
  }
};

export default plugin;
