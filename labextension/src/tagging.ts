import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Cell, ICellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { IDag } from './api';
import { vocabulary } from './vocabulary';

const STEP_TAG = /^(?:step|block):(.+)$/;
const PREV_TAG = /^prev:(.+)$/;
const SHARED_TAGS = ['imports', 'functions', 'parameters', 'pipeline-parameters', 'pipeline-metrics', 'skip'];

function tagsOf(model: ICellModel): string[] {
  return [...((model.getMetadata('tags') as string[] | undefined) ?? [])];
}

function match(tags: string[], pattern: RegExp): string[] {
  return tags.map(t => pattern.exec(t)?.[1]).filter((x): x is string => !!x);
}

/** Step names in notebook order. */
export function stepNames(panel: NotebookPanel): string[] {
  const names: string[] = [];
  for (const cell of panel.content.widgets) {
    for (const name of match(tagsOf(cell.model), STEP_TAG)) {
      if (!names.includes(name)) {
        names.push(name);
      }
    }
  }
  return names;
}

class StepForm extends Widget {
  private _name: HTMLInputElement;
  private _prev: HTMLInputElement[] = [];

  constructor(current: string, prev: string[], others: string[]) {
    super();
    this.addClass('jp-flow-stepform');
    const label = document.createElement('label');
    label.textContent = 'Step name (lowercase letters, digits, _; empty removes the tag)';
    this._name = document.createElement('input');
    this._name.className = 'jp-mod-styled jp-flow-stepname';
    this._name.value = current;
    label.appendChild(this._name);
    this.node.appendChild(label);
    if (others.length) {
      const fieldset = document.createElement('fieldset');
      fieldset.innerHTML = '<legend>Runs after (prev:) — leave empty to infer from data</legend>';
      for (const name of others) {
        const item = document.createElement('label');
        const box = document.createElement('input');
        box.type = 'checkbox';
        box.value = name;
        box.checked = prev.includes(name);
        this._prev.push(box);
        item.append(box, ` ${name}`);
        fieldset.appendChild(item);
      }
      this.node.appendChild(fieldset);
    }
  }

  getValue(): { name: string; prev: string[] } {
    return {
      name: this._name.value.trim(),
      prev: this._prev.filter(b => b.checked).map(b => b.value)
    };
  }
}

/** Rewrite one cell's step/prev tags, keeping every other tag as it was. */
function setStepTags(model: ICellModel, name: string, prev: string[]): void {
  const kept = tagsOf(model).filter(t => !STEP_TAG.test(t) && !PREV_TAG.test(t));
  const tags = name ? [...kept, `step:${name}`, ...prev.map(p => `prev:${p}`)] : kept;
  model.setMetadata('tags', tags);
}

/** A renamed step keeps its edges: every `prev:OLD` and continuation `step:OLD` follows it. */
function renameStep(panel: NotebookPanel, from: string, to: string): void {
  for (const cell of panel.content.widgets) {
    const tags = tagsOf(cell.model);
    const renamed = tags.map(t =>
      t === `prev:${from}` ? `prev:${to}` : STEP_TAG.exec(t)?.[1] === from ? `step:${to}` : t
    );
    if (renamed.some((t, i) => t !== tags[i])) {
      cell.model.setMetadata('tags', renamed);
    }
  }
}

/** Ask for a name and upstream steps, then tag the active cell; re-asks until the name is valid. */
export async function markActiveCell(panel: NotebookPanel): Promise<void> {
  const cell = panel.content.activeCell;
  if (!cell) {
    return;
  }
  const tags = tagsOf(cell.model);
  const current = match(tags, STEP_TAG)[0] ?? '';
  let value = { name: current, prev: match(tags, PREV_TAG) };
  const others = stepNames(panel).filter(n => n !== current);
  for (;;) {
    const result = await showDialog({
      title: 'Mark cell as step',
      body: new StepForm(value.name, value.prev, others),
      focusNodeSelector: 'input.jp-flow-stepname',
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save' })]
    });
    if (!result.button.accept || !result.value) {
      return;
    }
    value = result.value;
    if (!value.name || vocabulary.isStepName(value.name)) {
      break;
    }
    await showErrorMessage(
      'Invalid step name',
      `"${value.name}" is not a step name: start with a lowercase letter or _, then lowercase letters, digits or _.`
    );
  }
  if (current && value.name && current !== value.name) {
    renameStep(panel, current, value.name);
  }
  setStepTags(cell.model, value.name, value.prev);
}

function badgeText(model: ICellModel): string {
  const tags = tagsOf(model);
  const step = match(tags, STEP_TAG)[0];
  const prev = match(tags, PREV_TAG);
  const shared = tags.filter(t => SHARED_TAGS.includes(t));
  const parts = step ? [`step ${step}${prev.length ? ` ← ${prev.join(', ')}` : ''}`] : [];
  return [...parts, ...shared].join(' · ');
}

function updateBadge(cell: Cell): void {
  const text = badgeText(cell.model);
  let badge = cell.node.querySelector(':scope > .jp-flow-badge') as HTMLElement | null;
  if (!text) {
    badge?.remove();
    return;
  }
  if (!badge) {
    badge = document.createElement('div');
    badge.className = 'jp-flow-badge';
    cell.node.appendChild(badge);
  }
  badge.textContent = text;
}

/** Show each tagged cell's step (and shared-block tags) as a badge, kept in sync with its tags. */
export function trackBadges(tracker: INotebookTracker): void {
  const watched = new WeakSet<ICellModel>();
  const refresh = (panel: NotebookPanel) => {
    for (const cell of panel.content.widgets) {
      if (!watched.has(cell.model)) {
        watched.add(cell.model);
        cell.model.metadataChanged.connect(() => {
          const widget = panel.content.widgets.find(w => w.model === cell.model);
          if (widget) {
            updateBadge(widget);
          }
        });
      }
      updateBadge(cell);
    }
  };
  tracker.widgetAdded.connect((_, panel) => {
    void panel.context.ready.then(() => {
      refresh(panel);
      panel.content.model?.cells.changed.connect(() => requestAnimationFrame(() => refresh(panel)));
    });
  });
}

/** Call `edited(panel)` a moment after the user stops changing a notebook (cells, tags or code). */
export function trackSteps(tracker: INotebookTracker, edited: (panel: NotebookPanel) => void): void {
  tracker.widgetAdded.connect((_, panel) => {
    let timer = 0;
    void panel.context.ready.then(() =>
      panel.context.model.contentChanged.connect(() => {
        window.clearTimeout(timer);
        timer = window.setTimeout(() => panel.context.model.dirty && edited(panel), 400);
      })
    );
  });
}

const STEP_COLORS = 8; // --jp-flow-step-0 ... -7 in the stylesheet

/**
 * Mark every code cell with the step it runs in, tagged or not (a coloured gutter and its name),
 * or as shared / skipped, from the DAG the server inferred.
 */
export function paintSteps(panel: NotebookPanel, dag: IDag): void {
  const owner = new Map<number, [string, number]>();
  dag.steps.forEach((step, i) => step.cells?.forEach(c => owner.set(c, [step.name, i % STEP_COLORS])));
  panel.content.widgets.forEach((cell, index) => {
    let gutter = cell.node.querySelector(':scope > .jp-flow-gutter') as HTMLElement | null;
    const tags = tagsOf(cell.model);
    const [step, color] = owner.get(index) ?? [];
    const label =
      cell.model.type !== 'code'
        ? ''
        : (step ?? (tags.includes('skip') ? 'skip' : cell.model.sharedModel.source.trim() ? 'shared' : ''));
    if (!label) {
      gutter?.remove();
      delete cell.node.dataset.jpFlowStep;
      return;
    }
    if (!gutter) {
      gutter = document.createElement('div');
      gutter.className = 'jp-flow-gutter';
      cell.node.appendChild(gutter);
    }
    cell.node.dataset.jpFlowStep = label;
    gutter.dataset.color = step ? String(color) : label;
    gutter.textContent = badgeText(cell.model) ? '' : label; // a tagged cell's badge says it already
    gutter.title = step
      ? `runs in step ${step}`
      : label === 'skip'
        ? 'not run (skip)'
        : 'runs at the start of every step';
  });
}

/** Scroll to a step's first cell, make it active, and highlight all its cells. */
export async function revealStep(panel: NotebookPanel, cells: number[]): Promise<void> {
  const notebook = panel.content;
  notebook.widgets.forEach((cell, i) => cell.toggleClass('jp-flow-highlight', cells.includes(i)));
  const first = notebook.widgets[cells[0]];
  if (first) {
    notebook.activeCellIndex = cells[0];
    await notebook.scrollToCell(first, 'start');
  }
}
