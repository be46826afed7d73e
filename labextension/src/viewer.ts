import { MainAreaWidget } from '@jupyterlab/apputils';
import { OutputArea, OutputAreaModel } from '@jupyterlab/outputarea';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Panel, Widget } from '@lumino/widgets';

import { flowIcon } from './icons';

function sourceWidget(cell: any): Widget {
  const widget = new Widget();
  widget.addClass('jp-flow-viewer-source');
  const tags: string[] = cell.metadata?.tags ?? [];
  if (tags.length) {
    const badge = document.createElement('div');
    badge.className = 'jp-flow-dim';
    badge.textContent = tags.join(' ');
    widget.node.appendChild(badge);
  }
  const pre = document.createElement('pre');
  const source = cell.source ?? '';
  pre.textContent = Array.isArray(source) ? source.join('') : source;
  widget.node.appendChild(pre);
  return widget;
}

/** One executed step notebook, rendered read-only (outputs untrusted) in a main-area tab. */
export function notebookViewer(
  title: string,
  notebook: any,
  rendermime: IRenderMimeRegistry
): MainAreaWidget {
  const content = new Panel();
  content.addClass('jp-flow-viewer');
  for (const cell of notebook.cells ?? []) {
    const box = new Panel();
    box.addClass('jp-flow-viewer-cell');
    box.addWidget(sourceWidget(cell));
    if (cell.cell_type === 'code' && cell.outputs?.length) {
      const model = new OutputAreaModel({ values: cell.outputs, trusted: false });
      box.addWidget(new OutputArea({ model, rendermime }));
    }
    content.addWidget(box);
  }
  const widget = new MainAreaWidget({ content });
  widget.title.label = title;
  widget.title.icon = flowIcon;
  widget.title.closable = true;
  return widget;
}
