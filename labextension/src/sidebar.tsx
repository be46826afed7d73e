import { VDomRenderer } from '@jupyterlab/ui-components';
import * as React from 'react';

import { DagView } from './dagview';
import { flowIcon } from './icons';
import { FlowModel } from './model';
import { ITaskActions, RunDetail } from './rundetail';
import { RunForm } from './runform';
import { RunList, StatusChip } from './runlist';
import { stepStates } from './status';
import { vocabulary } from './vocabulary';

function Section(props: { title: string; children: React.ReactNode; open?: boolean }): JSX.Element {
  return (
    <details className="jp-flow-section" open={props.open ?? true}>
      <summary>{props.title}</summary>
      {props.children}
    </details>
  );
}

/** The left-panel view of the active notebook's pipeline. */
export class FlowSidebar extends VDomRenderer<FlowModel> {
  constructor(
    model: FlowModel,
    private _actions: ITaskActions
  ) {
    super(model);
    this.id = 'jupyter-flow-sidebar';
    this.addClass('jp-flow-sidebar');
    this.title.icon = flowIcon;
    this.title.caption = 'Pipeline (jupyter-flow)';
  }

  protected render(): JSX.Element {
    const m = this.model;
    if (!m.path) {
      return <div className="jp-flow-empty">Open a notebook to see its pipeline.</div>;
    }
    const run = m.run;
    const states = stepStates(run?.tasks);
    const total = m.dag?.steps.length ?? 0;
    const select = (step: string | null) => {
      m.selectStep(step);
      if (step) {
        this._actions.revealStep(step);
      }
    };
    const done = [...states.values()].filter(s => vocabulary.done.has(s.status) && s.done === s.total).length;
    return (
      <div className="jp-flow-body">
        <header className="jp-flow-header">
          <span className="jp-flow-title">{m.dag?.flow ?? m.path}</span>
          {run && <StatusChip status={run.status} />}
          {run && (
            <span className="jp-flow-progress" data-done={done} data-total={total}>
              {done}/{total} steps
            </span>
          )}
        </header>
        {m.message && <div className="jp-flow-error jp-flow-message">{m.message}</div>}
        {m.info?.read_only && (
          <div className="jp-flow-warning jp-flow-readonly" title={m.info.read_only}>
            Read-only store: you can look at runs, compare them and load their values, not run, resume or pin.
          </div>
        )}
        {m.dag?.warnings.map(w => (
          <div key={w} className="jp-flow-warning">
            {w}
          </div>
        ))}
        {m.dag && (
          <div className="jp-flow-dagbox">
            <DagView
              dag={m.dag}
              states={states}
              plan={run?.status === 'running' ? null : m.plan}
              selected={m.selectedStep}
              onSelect={select}
            />
            {m.planMessage && !m.message && <div className="jp-flow-dim jp-flow-planmessage">{m.planMessage}</div>}
          </div>
        )}
        {m.dag && m.info && (
          <Section title="Run">
            <RunForm
              parameters={m.dag.parameters}
              executors={m.info.executors}
              defaultExecutor={m.info.executor}
              defaultScheduler={m.info.scheduler}
              busy={m.busy}
              onRun={options => this._actions.run(options)}
              onParameters={parameters => m.setPlanParameters(parameters)}
            />
          </Section>
        )}
        {run && (
          <Section title="Run detail">
            <RunDetail
              run={run}
              api={m.api}
              selectedStep={m.selectedStep}
              onSelectStep={select}
              actions={this._actions}
              onOpenPage={() => this._actions.openRun(run.id)}
              onPinned={() => void m.refreshRuns()}
            />
          </Section>
        )}
        {m.dag && (
          <Section title="History" open={false}>
            <RunList
              runs={m.runs}
              parameters={m.dag.parameters}
              onOpen={id => this._actions.openRun(id)}
              me={m.info?.user}
              filter={m.filter}
              more={m.moreRuns}
              loading={m.shownQuery !== JSON.stringify(m.query())}
              query={m.shownQuery}
              selected={run?.id ?? null}
              onFilter={change => m.setFilter(change)}
              onSelect={id => m.select(id)}
            />
          </Section>
        )}
      </div>
    );
  }
}
