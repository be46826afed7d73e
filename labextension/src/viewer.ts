import { MainAreaWidget } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { NotebookModel, StaticNotebook } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { flowIcon } from './icons';

/** Cells jupyter_flow adds to a step notebook (load inputs, save outputs): not the user's code. */
const GENERATED = ['begin', 'finish'];
/** papermill's "An Exception was encountered" banners: the error is shown in the failing cell. */
const PAPERMILL_BANNER = 'papermill-error-cell-tag';

/** nbformat allows a cell's source as one string or a list of lines. */
export function sourceOf(cell: any): string {
  const source = cell?.source ?? '';
  return Array.isArray(source) ? source.join('') : source;
}

/**
 * One executed step notebook in a main-area tab, rendered as JupyterLab renders notebooks
 * (prompts, highlighted code, outputs untrusted), read-only, without the generated cells.
 */
export function notebookViewer(
  title: string,
  notebook: any,
  rendermime: IRenderMimeRegistry,
  editorServices: IEditorServices
): MainAreaWidget {
  const cells = (notebook.cells ?? [])
    .filter((c: any) => !GENERATED.includes(c.metadata?.jupyter_flow?.role))
    .filter((c: any) => !(c.metadata?.tags ?? []).includes(PAPERMILL_BANNER))
    .map((c: any) => ({ ...c, metadata: { ...c.metadata, editable: false, deletable: false } }));
  const model = new NotebookModel();
  model.fromJSON({ ...notebook, cells });
  const content = new StaticNotebook({
    rendermime,
    mimeTypeService: editorServices.mimeTypeService,
    contentFactory: new StaticNotebook.ContentFactory({
      editorFactory: editorServices.factoryService.newInlineEditor
    }),
    notebookConfig: { ...StaticNotebook.defaultNotebookConfig, windowingMode: 'none' }
  });
  content.model = model;
  content.addClass('jp-flow-viewer');
  content.widgets.forEach(cell => (cell.readOnly = true));
  const widget = new MainAreaWidget({ content });
  widget.title.label = title;
  widget.title.caption = title; // the tab cuts the label short: all of it on hover
  widget.title.icon = flowIcon;
  widget.title.closable = true;
  widget.disposed.connect(() => model.dispose());
  return widget;
}
