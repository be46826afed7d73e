import { ILabShell } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { VDomModel, VDomRenderer } from '@jupyterlab/ui-components';
import * as React from 'react';

import { FlowApi, IDag, IRun } from './api';
import { DagView } from './dagview';
import { RunFollower } from './follow';
import { flowIcon } from './icons';
import { ITaskActions, NameTable, RunDetail } from './rundetail';
import { formatNumber, formatValue, stepStates } from './status';

/** A run's DAG as recorded with it, when its notebook is no longer readable. */
function recordedDag(run: IRun): IDag {
  const steps = (run.steps ?? []).map(s => ({
    name: s.name,
    prev: s.prev,
    reads: [],
    writes: [],
    edges: Object.fromEntries(s.prev.map(p => [p, []]))
  }));
  return { flow: run.flow, path: run.path ?? '', parameters: {}, steps, warnings: [] };
}

class RunPageModel extends VDomModel {
  readonly follower: RunFollower;
  dag: IDag | null = null;
  /** Whether `dag` is final: the notebook's (its parameters' types), or the recorded one when that cannot be read. */
  dagSettled = false;
  selectedStep: string | null = null;

  constructor(
    readonly api: FlowApi,
    readonly id: string
  ) {
    super();
    this.follower = new RunFollower(api);
    this.follower.changed.connect((_, run) => {
      if (run && !this.dag) {
        this.dag = recordedDag(run);
        const settle = (dag: IDag | null) => {
          this.dag = dag ?? this.dag;
          this.dagSettled = true;
          this.stateChanged.emit();
        };
        if (run.path) {
          api.dag(run.path).then(settle, () => settle(null));
        } else {
          this.dagSettled = true;
        }
      }
      this.stateChanged.emit();
    });
    this.follower.follow(id);
  }

  select(step: string | null): void {
    this.selectedStep = step;
    this.stateChanged.emit();
  }

  dispose(): void {
    this.follower.dispose();
    super.dispose();
  }
}

function Table(props: {
  title: string;
  values: Record<string, unknown>;
  format: (name: string, value: unknown) => string;
}): JSX.Element | null {
  const rows = Object.entries(props.values ?? {}).map(([k, v]): [string, React.ReactNode[]] => [
    k,
    [props.format(k, v)]
  ]);
  return <NameTable title={props.title} rows={rows} />;
}

/** One run in full, in the main area (like jupyter-scheduler's job page): DAG, parameters,
 * metrics, and every step with its live log, artifacts and executed notebook. */
class RunPage extends VDomRenderer<RunPageModel> {
  constructor(
    model: RunPageModel,
    private _actions: ITaskActions
  ) {
    super(model);
    this.addClass('jp-flow-runpage');
  }

  protected render(): JSX.Element {
    const m = this.model;
    const run = m.follower.run;
    if (!run) {
      return <div className="jp-flow-empty">Loading run {m.id}…</div>;
    }
    return (
      <div className="jp-flow-body">
        <h2 className="jp-flow-title">
          {run.flow} · {run.id}
        </h2>
        <div className="jp-flow-runpage-grid">
          <div>
            {m.dag && (
              <DagView
                dag={m.dag}
                states={stepStates(run.tasks)}
                selected={m.selectedStep}
                onSelect={s => m.select(s)}
              />
            )}
            {m.dagSettled && ( // a float parameter's type comes with the notebook's DAG: 1.0, never 1 then 1.0
              <Table
                title="parameters"
                values={run.parameters}
                format={(k, v) => formatValue(v, m.dag?.parameters[k]?.type)}
              />
            )}
            <Table title="metrics" values={run.metrics ?? {}} format={(_, v) => formatNumber(v)} />
          </div>
          <RunDetail
            run={run}
            api={m.api}
            selectedStep={m.selectedStep}
            onSelectStep={s => m.select(s)}
            actions={this._actions}
          />
        </div>
      </div>
    );
  }
}

const pages = new Map<string, MainAreaWidget>();

/** Open (or bring forward) a run's page beside the notebook. */
export function openRunPage(shell: ILabShell, api: FlowApi, id: string, actions: ITaskActions): void {
  let page = pages.get(id);
  if (!page) {
    const content = new RunPage(new RunPageModel(api, id), actions);
    page = new MainAreaWidget({ content });
    page.id = `jupyter-flow-run-${id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    page.title.label = `Run ${id}`;
    page.title.caption = `Run ${id}`; // the tab cuts the label short: the whole id on hover
    page.title.icon = flowIcon;
    page.title.closable = true;
    page.disposed.connect(() => {
      content.model.dispose();
      pages.delete(id);
    });
    pages.set(id, page);
    shell.add(page, 'main', { mode: 'split-right' });
  }
  shell.activateById(page.id);
}
