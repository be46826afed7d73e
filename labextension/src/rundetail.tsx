import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { FINAL, FlowApi, IArtifacts, IRun, ITask, IValueInfo } from './api';
import { StatusChip } from './runlist';
import { formatDuration, formatNumber, formatTime } from './status';
import { sourceOf } from './viewer';

export interface ITaskActions {
  load: (task: ITask) => Promise<string[]>;
  insert: (source: string) => void;
  openNotebook: (task: ITask) => void;
  resume: (run: IRun) => void;
  cancel: (run: IRun) => void;
}

function ValueTable(props: { title: string; values: Record<string, IValueInfo> }): JSX.Element | null {
  const entries = Object.entries(props.values ?? {});
  if (!entries.length) {
    return null;
  }
  return (
    <table className="jp-flow-values">
      <caption>{props.title}</caption>
      <tbody>
        {entries.map(([name, v]) => (
          <tr key={name}>
            <th>{name}</th>
            <td className="jp-flow-dim">{v.type}</td>
            <td>
              <div className="jp-flow-preview">
                {typeof v.preview === 'string' ? v.preview : JSON.stringify(v.preview)}
              </div>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** The code of the cell that raised, as it ran (from the executed step notebook). */
function useFailingSource(api: FlowApi, task: ITask): string {
  const [source, setSource] = React.useState('');
  React.useEffect(() => {
    const index = task.error?.cell;
    if (index === null || index === undefined) {
      return;
    }
    api.notebook(task).then(
      nb => setSource(sourceOf(nb.cells?.[index])),
      () => setSource('')
    );
  }, [task.run_id, task.step, task.index, task.error?.cell]);
  return source;
}

/** Actions worth having when the task failed: load its state, insert its cell, resume the run. */
function FailureBox(props: { task: ITask; run: IRun; api: FlowApi; actions: ITaskActions }): JSX.Element {
  const { task, run, actions } = props;
  const source = useFailingSource(props.api, task);
  const [message, setMessage] = React.useState('');
  const load = async () => {
    setMessage('Loading…');
    try {
      const names = await actions.load(task);
      setMessage(`Loaded into kernel: ${names.length ? names.join(', ') : '(no names)'}`);
    } catch (e) {
      setMessage(`Could not load: ${(e as Error).message}`);
    }
  };
  const insert = () => {
    try {
      actions.insert(source);
      setMessage('Inserted the failing cell below the active cell.');
    } catch (e) {
      setMessage((e as Error).message);
    }
  };
  return (
    <div className="jp-flow-failure">
      <div className="jp-flow-error">
        {task.error?.type}: {task.error?.message}
      </div>
      {source && <pre className="jp-flow-cell">{source}</pre>}
      <div className="jp-flow-actions">
        <Button className="jp-flow-load jp-flow-primary" onClick={load}>
          Load into kernel
        </Button>
        <Button className="jp-flow-insert" minimal onClick={insert} disabled={!source}>
          Insert failing cell
        </Button>
        <Button className="jp-flow-resume" minimal onClick={() => actions.resume(run)}>
          Resume
        </Button>
      </div>
      {message && <div className="jp-flow-message">{message}</div>}
    </div>
  );
}

function TaskDetail(props: { task: ITask; run: IRun; api: FlowApi; actions: ITaskActions }): JSX.Element {
  const { task, api } = props;
  const [log, setLog] = React.useState('');
  const [artifacts, setArtifacts] = React.useState<IArtifacts | null>(null);
  React.useEffect(() => {
    if (task.status === 'queued') {
      return;
    }
    api.log(task).then(setLog, () => setLog(''));
    if (FINAL.has(task.status)) {
      api.artifacts(task).then(setArtifacts, () => setArtifacts(null));
    }
  }, [task.run_id, task.step, task.index, task.status]);
  const failed = task.status === 'failed' || task.status === 'timed_out';
  return (
    <div className="jp-flow-taskdetail">
      {failed && <FailureBox task={task} run={props.run} api={api} actions={props.actions} />}
      <div className="jp-flow-dim">
        {formatTime(task.started)} · attempt {task.attempt} {task.host ? `· ${task.host}` : ''}
      </div>
      {FINAL.has(task.status) && (
        <Button minimal className="jp-flow-open" onClick={() => props.actions.openNotebook(task)}>
          Open executed notebook
        </Button>
      )}
      {artifacts && <ValueTable title="inputs" values={artifacts.inputs} />}
      {artifacts && <ValueTable title="outputs" values={artifacts.outputs} />}
      {log && <pre className="jp-flow-log">{log}</pre>}
    </div>
  );
}

export interface IRunDetailProps {
  run: IRun;
  api: FlowApi;
  selectedStep: string | null;
  onSelectStep: (step: string | null) => void;
  actions: ITaskActions;
}

/** One run: its status, parameters, and every task with duration, attempts, log and artifacts. */
export function RunDetail(props: IRunDetailProps): JSX.Element {
  const { run } = props;
  const tasks = run.tasks ?? [];
  return (
    <div className="jp-flow-rundetail" data-run={run.id} data-status={run.status}>
      <div className="jp-flow-runhead">
        <StatusChip status={run.status} />
        <span className="jp-flow-runid">{run.id}</span>
        {run.status === 'running' && (
          <Button minimal className="jp-flow-cancel" onClick={() => props.actions.cancel(run)}>
            Cancel
          </Button>
        )}
        {run.status !== 'running' && run.status !== 'succeeded' && (
          <Button minimal className="jp-flow-resume" onClick={() => props.actions.resume(run)}>
            Resume
          </Button>
        )}
      </div>
      <div className="jp-flow-dim">
        {run.user} · {run.executor} · {formatTime(run.created)} {formatDuration(run.duration)}
        {run.origin_run ? ` · resumed from ${run.origin_run}` : ''}
      </div>
      {Object.keys(run.metrics ?? {}).length > 0 && (
        <div className="jp-flow-dim">
          {Object.entries(run.metrics ?? {})
            .map(([k, v]) => `${k} = ${formatNumber(v)}`)
            .join(' · ')}
        </div>
      )}
      <table className="jp-flow-tasks">
        <tbody>
          {tasks.map(task => {
            const key = `${task.step}/${task.index}`;
            const open = props.selectedStep === task.step;
            return (
              <React.Fragment key={key}>
                <tr
                  className={`jp-flow-taskrow${open ? ' jp-mod-selected' : ''}`}
                  data-step={task.step}
                  data-status={task.status}
                  onClick={() => props.onSelectStep(open ? null : task.step)}
                >
                  <td>{task.index ? key : task.step}</td>
                  <td>
                    <StatusChip status={task.status} />
                  </td>
                  <td className="jp-flow-dim jp-flow-nowrap">{formatDuration(task.duration)}</td>
                  <td className="jp-flow-dim">{task.attempt > 1 ? `×${task.attempt}` : ''}</td>
                </tr>
                {open && (
                  <tr>
                    <td colSpan={4}>
                      <TaskDetail task={task} run={run} api={props.api} actions={props.actions} />
                    </td>
                  </tr>
                )}
              </React.Fragment>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
