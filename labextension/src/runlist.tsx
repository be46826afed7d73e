import * as React from 'react';

import { IParameter, IRun } from './api';
import { formatDuration, formatNumber, formatTime, formatValue } from './status';

function StatusChip(props: { status: string }): JSX.Element {
  return <span className={`jp-flow-chip jp-flow-status-${props.status}`}>{props.status}</span>;
}

/** Parameters, metrics and outcome of the chosen runs, one column each. */
function Compare(props: { runs: IRun[]; types: Record<string, IParameter> }): JSX.Element {
  const keys = (pick: (r: IRun) => Record<string, unknown> | undefined) =>
    Array.from(new Set(props.runs.flatMap(r => Object.keys(pick(r) ?? {})))).sort();
  const row = (label: string, cells: unknown[]) => {
    const differs = new Set(cells.map(c => JSON.stringify(c))).size > 1;
    return (
      <tr key={label} className={differs ? 'jp-flow-differs' : ''}>
        <th>{label}</th>
        {cells.map((c, i) => (
          <td key={i}>{c === undefined ? '' : String(c)}</td>
        ))}
      </tr>
    );
  };
  return (
    <table className="jp-flow-compare">
      <thead>
        <tr>
          <th />
          {props.runs.map(r => (
            <th key={r.id} title={r.id} scope="col">
              {formatTime(r.created)}
              {r.user !== props.runs[0].user ? ` · ${r.user}` : ''}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {row('status', props.runs.map(r => r.status))}
        {row('duration', props.runs.map(r => formatDuration(r.duration)))}
        {keys(r => r.parameters).map(k =>
          row(k, props.runs.map(r => (k in (r.parameters ?? {}) ? formatValue(r.parameters[k], props.types[k]?.type) : undefined)))
        )}
        {keys(r => r.metrics).map(k => row(`📈 ${k}`, props.runs.map(r => formatNumber(r.metrics?.[k]))))}
      </tbody>
    </table>
  );
}

/** "n_estimators=50 · C=1.0": the parameters of a run, with the notebook's types. */
function summary(run: IRun, types: Record<string, IParameter>): string {
  return Object.entries(run.parameters ?? {})
    .map(([k, v]) => `${k}=${formatValue(v, types[k]?.type)}`)
    .join(' · ');
}

export interface IRunListProps {
  runs: IRun[];
  parameters: Record<string, IParameter>;
  onOpen: (id: string) => void;
  allUsers: boolean;
  selected: string | null;
  onAllUsers: (all: boolean) => void;
  onSelect: (id: string) => void;
}

/** Earlier runs of this flow, newest first; tick two or more to compare them. */
export function RunList(props: IRunListProps): JSX.Element {
  const [ticked, setTicked] = React.useState<string[]>([]);
  const toggle = (id: string) =>
    setTicked(ticked.includes(id) ? ticked.filter(x => x !== id) : [...ticked, id]);
  const compared = props.runs.filter(r => ticked.includes(r.id));
  return (
    <div className="jp-flow-runlist">
      <label className="jp-flow-allusers">
        <input type="checkbox" checked={props.allUsers} onChange={e => props.onAllUsers(e.target.checked)} />
        all users
      </label>
      {props.runs.length === 0 && <div className="jp-flow-empty">No runs yet.</div>}
      <ul>
        {props.runs.map(r => (
          <li
            key={r.id}
            className={`jp-flow-runitem${props.selected === r.id ? ' jp-mod-selected' : ''}`}
            data-run={r.id}
            tabIndex={0}
            onClick={() => props.onSelect(r.id)}
            onKeyDown={e => e.key === 'Enter' && props.onSelect(r.id)}
          >
            <input
              type="checkbox"
              title="compare"
              aria-label={`compare run ${r.id}`}
              checked={ticked.includes(r.id)}
              onClick={e => e.stopPropagation()}
              onChange={() => toggle(r.id)}
            />
            <div className="jp-flow-runmain">
              <div>
                <StatusChip status={r.status} />
                <span className="jp-flow-runwhen">{formatTime(r.created)}</span>
                <span className="jp-flow-dim">{formatDuration(r.duration)}</span>
                {r.user !== props.runs[0]?.user || props.allUsers ? <span className="jp-flow-dim"> · {r.user}</span> : null}
              </div>
              <div className="jp-flow-dim jp-flow-runparams" title={r.id}>
                {summary(r, props.parameters) || 'default parameters'}
                {Object.entries(r.metrics ?? {}).map(([k, v]) => ` · ${k} ${formatNumber(v)}`)}
                {r.error ? ` · ${r.error.step}: ${r.error.message}` : ''}
              </div>
            </div>
            <button
              className="jp-flow-openrun jp-flow-linkbutton"
              title="Open this run in the main area"
              aria-label={`open run ${r.id}`}
              onClick={e => {
                e.stopPropagation();
                props.onOpen(r.id);
              }}
            >
              ↗
            </button>
          </li>
        ))}
      </ul>
      {compared.length > 1 && <Compare runs={compared} types={props.parameters} />}
    </div>
  );
}

export { StatusChip };
