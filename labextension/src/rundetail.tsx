import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { FlowApi, IArtifacts, IFrame, IPin, IRun, IRunOptions, ITask, IValueInfo } from './api';
import { PinMark, pinText, StatusChip } from './runlist';
import { formatDuration, formatNumber, formatTime, useElapsed } from './status';
import { sourceOf } from './viewer';
import { vocabulary } from './vocabulary';

/** What the views can ask of the application (the notebook, its kernel, the main area). */
export interface ITaskActions {
  load: (task: ITask) => Promise<string[]>;
  insert: (source: string) => void;
  openNotebook: (task: ITask) => void;
  resume: (run: IRun) => void;
  cancel: (run: IRun) => void;
  run: (options: IRunOptions) => void;
  openRun: (id: string) => void;
  revealStep: (step: string) => void;
}

/** A captioned table of name -> cells (nothing when empty). */
export function NameTable(props: { title: string; rows: [string, React.ReactNode[]][] }): JSX.Element | null {
  return props.rows.length ? (
    <table className="jp-flow-values">
      <caption>{props.title}</caption>
      <tbody>
        {props.rows.map(([name, cells]) => (
          <tr key={name}>
            <th>{breakable(name)}</th>
            {cells.map((cell, i) => (
              <td key={i}>{cell}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  ) : null;
}

/** A whole line of one separator character, 10 or more of it (IPython's "-----" above a traceback, "=====" under a
 * title), with its line end. */
const RULE = /^([-=_~*#─━═])\1{9,}[ \t]*(?:\n|$)/gm;

/** Text with each rule line (RULE) as one line clipped at the box's width (.jp-flow-rule) instead of wrapping onto
 * several: the clip hides only more of the same character, and copying takes the line whole. `rest` renders the
 * text between the rules. */
export function withRules(text: string, rest: (part: string) => React.ReactNode = part => part): JSX.Element {
  const nodes: React.ReactNode[] = [];
  let at = 0;
  for (let m = RULE.exec(text); m; m = RULE.exec(text)) {
    nodes.push(
      rest(text.slice(at, m.index)),
      <span className="jp-flow-rule" data-length={m[0].trimEnd().length}>
        {m[0]}
      </span>
    );
    at = RULE.lastIndex;
  }
  nodes.push(rest(text.slice(at)));
  return (
    <>
      {nodes.map((node, i) => (
        <React.Fragment key={i}>{node}</React.Fragment>
      ))}
    </>
  );
}

/** Text with a line break allowed after each separator inside a long token (/ . , ; : = & ? _ - ( [ {; a . : or - only
 * when no digit follows, so 21.5, 08:00 and -3 stay whole), so a value, name, URL, path or line of code wraps between its
 * parts, not mid-word (the CSS breaks mid-word only as a last resort, when one part is wider than the sidebar); a rule
 * line stays one line (withRules). */
export function breakable(text: string): JSX.Element {
  return withRules(text, part =>
    part.split(/(?<=[/,;=&?_([{])|(?<=[.:-])(?!\d)/).map((piece, i) => (i ? [<wbr key={i} />, piece] : piece))
  );
}

/** A value's preview: wrapped at its separators, scrolled past 6 lines, the whole of it in its tooltip. */
function Preview(props: { text: string }): JSX.Element {
  return (
    <div className="jp-flow-preview" title={props.text}>
      {breakable(props.text)}
    </div>
  );
}

/** Saved values: type and preview (computed when saved; nothing is unpickled). */
function ValueTable(props: { title: string; values: Record<string, IValueInfo> }): JSX.Element | null {
  const rows = Object.entries(props.values ?? {}).map(([name, v]): [string, React.ReactNode[]] => [
    name,
    [
      <span className="jp-flow-dim">{breakable(v.type ?? '')}</span>,
      <Preview text={typeof v.preview === 'string' ? v.preview : (JSON.stringify(v.preview) ?? '')} />
    ]
  ]);
  return <NameTable title={props.title} rows={rows} />;
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

/** The failing frames, oldest first: where, function, line, and each local's preview. */
function FrameList(props: { frames: IFrame[] }): JSX.Element | null {
  if (!props.frames.length) {
    return null;
  }
  return (
    <details className="jp-flow-frames" open>
      <summary>Failing frames ({props.frames.length}; after "Load into kernel", %debug walks them)</summary>
      {props.frames.map((f, i) => (
        <div key={i} className="jp-flow-frame" data-function={f.function}>
          <div className={f.notebook ? '' : 'jp-flow-dim'}>
            {breakable(`${f.where}, line ${f.line}, in ${f.function}${f.notebook ? '' : ' (library)'}`)}
          </div>
          <NameTable
            title="locals"
            rows={Object.entries(f.locals ?? {}).map(([name, preview]): [string, React.ReactNode[]] => [
              name,
              [<Preview text={preview} />]
            ])}
          />
        </div>
      ))}
    </details>
  );
}

/** The variables never stored because they are, or hold, secrets: each with why. */
function Withheld(props: { withheld: Record<string, string> }): JSX.Element | null {
  const names = Object.entries(props.withheld);
  if (!names.length) {
    return null;
  }
  return (
    <div className="jp-flow-withheld">
      <div>Withheld as secrets (never stored; a step reads them from its own environment):</div>
      <ul>
        {names.map(([name, why]) => (
          <li key={name}>
            <code>{name}</code>: it {why}
          </li>
        ))}
      </ul>
    </div>
  );
}

/** Actions worth having when the task failed: load its state, insert its cell, resume the run. */
function FailureBox(props: {
  task: ITask;
  run: IRun;
  api: FlowApi;
  actions: ITaskActions;
  artifacts: IArtifacts | null;
}): JSX.Element {
  const { task, run, actions } = props;
  const traceback = task.error?.traceback;
  const snapshot = props.artifacts?.failure;
  const source = useFailingSource(props.api, task);
  const [message, setMessage] = React.useState('');
  const load = async () => {
    setMessage('Loading…');
    try {
      const names = await actions.load(task);
      const debug = task.failure?.frames?.length ? ' — %debug in the notebook walks the failing frames' : '';
      setMessage(`Loaded into kernel: ${names.length ? names.join(', ') : '(no names)'}${debug}`);
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
        {task.error?.type}: {breakable(task.error?.message ?? '')}
      </div>
      {source && <pre className="jp-flow-cell">{breakable(source)}</pre>}
      {traceback && (
        <details className="jp-flow-traceback" open>
          <summary>Traceback</summary>
          <pre>{breakable(Array.isArray(traceback) ? traceback.join('\n') : traceback)}</pre>
        </details>
      )}
      <FrameList frames={task.failure?.frames ?? []} />
      {snapshot && (
        <ValueTable
          title={`variables at the failure (${Object.keys(snapshot.variables).length}; "Load into kernel" sets them)`}
          values={snapshot.variables}
        />
      )}
      <Withheld withheld={task.failure?.withheld ?? {}} />
      {snapshot && Object.keys(snapshot.unpicklable ?? {}).length > 0 && (
        <div className="jp-flow-dim">not saved (cannot be pickled): {Object.keys(snapshot.unpicklable).join(', ')}</div>
      )}
      <div className="jp-flow-actions">
        <Button className="jp-flow-load jp-flow-primary" onClick={load}>
          Load into kernel
        </Button>
        <Button className="jp-flow-insert" minimal onClick={insert} disabled={!source}>
          Insert failing cell
        </Button>
        <Button
          className="jp-flow-resume"
          minimal
          title="Run it again from the failing cell when the cells before it and its inputs are unchanged"
          onClick={() => actions.resume(run)}
        >
          Resume
        </Button>
      </div>
      {message && <div className="jp-flow-message">{message}</div>}
    </div>
  );
}

/** A task's log: streamed while the task runs, the whole file once it has ended. */
function useLog(api: FlowApi, task: ITask): string {
  const [log, setLog] = React.useState('');
  const started = task.status !== 'queued';
  React.useEffect(() => {
    setLog('');
    if (!started) {
      return;
    }
    return api.logEvents(task, text => setLog(old => old + text));
  }, [task.run_id, task.step, task.index, task.attempt, started]);
  return log;
}

function TaskDetail(props: { task: ITask; run: IRun; api: FlowApi; actions: ITaskActions }): JSX.Element {
  const { task, api } = props;
  const log = useLog(api, task);
  const [artifacts, setArtifacts] = React.useState<IArtifacts | null>(null);
  React.useEffect(() => {
    if (vocabulary.ended.has(task.status)) {
      api.artifacts(task).then(setArtifacts, () => setArtifacts(null));
    }
  }, [task.run_id, task.step, task.index, task.status]);
  const failed = task.status === 'failed' || task.status === 'timed_out';
  return (
    <div className="jp-flow-taskdetail">
      {failed && <FailureBox task={task} run={props.run} api={api} actions={props.actions} artifacts={artifacts} />}
      <div className="jp-flow-dim">
        {formatTime(task.started)} · attempt {task.attempt} {task.host ? `· ${task.host}` : ''}
      </div>
      {task.continued && <div className="jp-flow-continued">{task.continued.line}</div>}
      {vocabulary.ended.has(task.status) && (
        <Button minimal className="jp-flow-open" onClick={() => props.actions.openNotebook(task)}>
          Open executed notebook
        </Button>
      )}
      {artifacts && <ValueTable title="inputs" values={artifacts.inputs} />}
      {artifacts && <ValueTable title="outputs" values={artifacts.outputs} />}
      {task.status !== 'queued' && (
        <pre className="jp-flow-log" data-status={task.status}>
          {log
            ? withRules(log.replace(/^\s*\n/, '')) // (not the blank lines a log may start with)
            : task.status === 'running'
              ? '(nothing printed yet)'
              : '(no output)'}
        </pre>
      )}
    </div>
  );
}

/** A task's duration, or the time since it started while it runs. */
function Duration(props: { task: ITask }): JSX.Element {
  const elapsed = useElapsed(props.task.status === 'running' ? props.task.started : null);
  return <>{formatDuration(props.task.status === 'running' ? elapsed : props.task.duration)}</>;
}

export interface IRunDetailProps {
  run: IRun;
  api: FlowApi;
  selectedStep: string | null;
  onSelectStep: (step: string | null) => void;
  actions: ITaskActions;
  onOpenPage?: () => void;
  onPinned?: (pin: IPin | null) => void; // after Pin or Unpin
}

/** Pin or unpin the run: a pinned run, and everything it needs, is never removed by anyone's gc. */
function PinControl(props: { run: IRun; api: FlowApi; onPinned?: (pin: IPin | null) => void }): JSX.Element {
  const { run, api } = props;
  const [pin, setPin] = React.useState<IPin | null>(run.pinned ?? null);
  const [message, setMessage] = React.useState('');
  React.useEffect(() => {
    setPin(run.pinned ?? null);
    setMessage('');
  }, [run.id, run.pinned?.at]);
  const toggle = async () => {
    setMessage('');
    try {
      const next = pin ? (await api.unpin(run.id), null) : await api.pin(run.id);
      setPin(next);
      props.onPinned?.(next);
    } catch (e) {
      setMessage((e as Error).message);
    }
  };
  return (
    <>
      <span className="jp-flow-pingroup">
        <PinMark pin={pin} />
        <Button
          minimal
          className={`jp-flow-pinbutton${pin ? ' jp-mod-pinned' : ''}`}
          title={pin ? `${pinText(pin)}; unpin to let gc remove it` : 'Keep this run, and what it needs, from every gc'}
          onClick={toggle}
        >
          {pin ? 'Unpin' : 'Pin'}
        </Button>
      </span>
      {message && <div className="jp-flow-error jp-flow-message jp-flow-pinmessage">{message}</div>}
    </>
  );
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
        {props.onOpenPage && (
          <button
            className="jp-flow-openrun jp-flow-linkbutton"
            title="Open this run's page in the main area"
            onClick={props.onOpenPage}
          >
            ↗ page
          </button>
        )}
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
        <PinControl run={run} api={props.api} onPinned={props.onPinned} />
      </div>
      <div className="jp-flow-dim">
        {run.user} · {run.executor} · {formatTime(run.created)} {formatDuration(run.duration)}
        {run.origin_run ? ` · resumed from ${run.origin_run}` : ''}
      </div>
      {Object.keys(run.metrics ?? {}).length > 0 && (
        <div className="jp-flow-dim jp-flow-metrics">
          {Object.entries(run.metrics ?? {}).map(([k, v], i) => (
            <React.Fragment key={k}>
              {i ? ' · ' : ''}
              <span className="jp-flow-keep">{`${k} = ${formatNumber(v)}`}</span>
            </React.Fragment>
          ))}
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
                  data-index={task.index}
                  data-status={task.status}
                  tabIndex={0}
                  aria-expanded={open}
                  onClick={() => props.onSelectStep(open ? null : task.step)}
                  onKeyDown={e => e.key === 'Enter' && props.onSelectStep(open ? null : task.step)}
                >
                  <td>{task.index ? key : task.step}</td>
                  <td>
                    <StatusChip status={task.status} />
                  </td>
                  <td className="jp-flow-dim jp-flow-nowrap jp-flow-duration">
                    <Duration task={task} />
                  </td>
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
