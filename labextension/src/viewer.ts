import { MainAreaWidget } from '@jupyterlab/apputils';
import { OutputArea, OutputAreaModel } from '@jupyterlab/outputarea';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Panel, Widget } from '@lumino/widgets';

import { flowIcon } from './icons';

/** nbformat allows a cell's source as one string or a list of lines. */
export function sourceOf(cell: any): string {
  const source = cell?.source ?? '';
  return Array.isArray(source) ? source.join('') : source;
}

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
  pre.textContent = sourceOf(cell);
  widget.node.appendChild(pre);
  return widget;
}

function markdownWidget(cell: any, rendermime: IRenderMimeRegistry): Widget {
  const source = sourceOf(cell);
  const renderer = rendermime.createRenderer('text/markdown');
  void renderer.renderModel(new MimeModel({ data: { 'text/markdown': source }, trusted: false }));
  return renderer;
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
    if (cell.cell_type === 'markdown') {
      box.addWidget(markdownWidget(cell, rendermime));
      content.addWidget(box);
      continue;
    }
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
