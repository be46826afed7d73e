import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification, showErrorMessage } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { IRunOptions, ITask } from './api';
import { flowIcon } from './icons';
import { insertFailingCell, loadIntoKernel } from './kernel';
import { FlowModel } from './model';
import { ITaskActions } from './rundetail';
import { FlowSidebar } from './sidebar';
import { openRunPage } from './runpage';
import { markActiveCell, paintSteps, revealStep, trackBadges, trackSteps } from './tagging';
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
  requires: [INotebookTracker, IRenderMimeRegistry, ILabShell, IEditorServices],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    shell: ILabShell,
    editorServices: IEditorServices,
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

    const saveFirst = async () => {
      const nb = panel();
      if (nb.context.model.dirty) {
        await nb.context.save();
      }
    };

    const actions: ITaskActions = {
      load: (task: ITask) => loadIntoKernel(panel(), task, model.info?.store ?? ''),
      insert: (source: string) => insertFailingCell(panel(), source),
      openNotebook: guarded(async (task: ITask) => {
        const nb = await model.api.notebook(task);
        const title = `${task.step}${task.index ? `/${task.index}` : ''} · ${task.run_id}`;
        shell.add(notebookViewer(title, nb, rendermime, editorServices), 'main', { mode: 'split-right' });
      }),
      resume: run => void model.resume(run),
      cancel: run => void model.cancel(run),
      run: guarded(async (options: IRunOptions) => {
        await saveFirst(); // what runs is the file: run what the user sees
        await model.start(options);
      }),
      openRun: (id: string) => openRunPage(shell, model.api, id, actions),
      revealStep: (step: string) => {
        const nb = tracker.currentWidget;
        const cells = model.dag?.steps.find(s => s.name === step)?.cells ?? [];
        if (nb && cells.length) {
          void revealStep(nb, cells);
        }
      }
    };

    const sidebar = new FlowSidebar(model, actions);
    shell.add(sidebar, 'left', { rank: 600 });
    restorer?.add(sidebar, sidebar.id);

    // the sidebar follows the active notebook, its renames, its saves and its unsaved edits
    const follow = () => void model.setNotebook(tracker.currentWidget?.context.path ?? null);
    tracker.currentChanged.connect(follow);
    tracker.widgetAdded.connect((_, nb) => {
      nb.context.pathChanged.connect(() => nb === tracker.currentWidget && follow());
      nb.context.saveState.connect((_, state) => {
        if (state === 'completed' && nb === tracker.currentWidget) {
          void model.refresh();
        }
      });
    });
    trackSteps(tracker, nb => nb === tracker.currentWidget && void model.edited(nb.context.model.toJSON()));
    model.stateChanged.connect(() => {
      const nb = tracker.currentWidget;
      if (nb && model.dag && nb.context.path === model.path) {
        paintSteps(nb, model.dag);
      }
    });
    void model.connect().then(follow);
    trackBadges(tracker);

    // a run started from this browser tells when it ends, with a link to its page
    model.finished.connect((_, run) => {
      const ok = run.status === 'succeeded';
      const text = `Pipeline run ${run.flow} ${run.id} ${run.status}${run.error ? `: ${run.error.step}: ${run.error.message}` : ''}`;
      Notification.emit(text, ok ? 'success' : 'error', {
        autoClose: ok ? 8000 : false,
        actions: [{ label: 'Open run', callback: () => actions.openRun(run.id) }]
      });
    });

    app.commands.addCommand(CMD.open, {
      label: 'Show Pipeline Sidebar',
      icon: flowIcon,
      execute: () => shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CMD.run, {
      label: 'Run Notebook as Pipeline',
      isEnabled: () => !!tracker.currentWidget,
      execute: async () => {
        shell.activateById(sidebar.id);
        await actions.run({});
      }
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
