import * as React from 'react';

import { IRun } from './api';
import { formatDuration, formatNumber, formatTime } from './status';

function StatusChip(props: { status: string }): JSX.Element {
  return <span className={`jp-flow-chip jp-flow-status-${props.status}`}>{props.status}</span>;
}

/** Parameters, metrics and outcome of the chosen runs, one column each. */
function Compare(props: { runs: IRun[] }): JSX.Element {
  const keys = (pick: (r: IRun) => Record<string, unknown> | undefined) =>
    Array.from(new Set(props.runs.flatMap(r => Object.keys(pick(r) ?? {})))).sort();
  const row = (label: string, cells: unknown[]) => {
    const differs = new Set(cells.map(c => JSON.stringify(c))).size > 1;
    return (
      <tr key={label} className={differs ? 'jp-flow-differs' : ''}>
        <th>{label}</th>
        {cells.map((c, i) => (
          <td key={i}>{c === undefined ? '' : typeof c === 'string' ? c : JSON.stringify(c)}</td>
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
            <th key={r.id} title={r.id}>
              {r.id.split('-').pop()}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {row('status', props.runs.map(r => r.status))}
        {row('duration', props.runs.map(r => formatDuration(r.duration)))}
        {keys(r => r.parameters).map(k => row(k, props.runs.map(r => r.parameters?.[k])))}
        {keys(r => r.metrics).map(k => row(`📈 ${k}`, props.runs.map(r => formatNumber(r.metrics?.[k]))))}
      </tbody>
    </table>
  );
}

export interface IRunListProps {
  runs: IRun[];
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
            onClick={() => props.onSelect(r.id)}
          >
            <input
              type="checkbox"
              title="compare"
              checked={ticked.includes(r.id)}
              onClick={e => e.stopPropagation()}
              onChange={() => toggle(r.id)}
            />
            <StatusChip status={r.status} />
            <span className="jp-flow-runid">{r.id}</span>
            <span className="jp-flow-dim">
              {r.user} · {formatTime(r.created)} {formatDuration(r.duration)}
            </span>
          </li>
        ))}
      </ul>
      {compared.length > 1 && <Compare runs={compared} />}
    </div>
  );
}

export { StatusChip };
