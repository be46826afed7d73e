import * as React from 'react';

import { IParameter, IPin, IRun } from './api';
import { IHistoryFilter, PAGE_SIZE } from './model';
import { formatDuration, formatNumber, formatTime, formatValue } from './status';
import { vocabulary } from './vocabulary';

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
        {row(
          'status',
          props.runs.map(r => r.status)
        )}
        {row(
          'duration',
          props.runs.map(r => formatDuration(r.duration))
        )}
        {keys(r => r.parameters).map(k =>
          row(
            k,
            props.runs.map(r =>
              k in (r.parameters ?? {}) ? formatValue(r.parameters[k], props.types[k]?.type) : undefined
            )
          )
        )}
        {keys(r => r.metrics).map(k =>
          row(
            `📈 ${k}`,
            props.runs.map(r => formatNumber(r.metrics?.[k]))
          )
        )}
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

/** "pinned by ann on 2026-01-02: figure 3" */
export function pinText(pin: IPin): string {
  return `pinned by ${pin.by ?? '?'}${pin.at ? ` on ${pin.at.slice(0, 10)}` : ''}${pin.note ? `: ${pin.note}` : ''}`;
}

export function PinMark(props: { pin: IPin | null | undefined }): JSX.Element | null {
  return props.pin ? (
    <span className="jp-flow-chip jp-flow-pin" title={pinText(props.pin)}>
      pinned
    </span>
  ) : null;
}

/** Whose runs (mine, everyone's, a user's), which status; the user name is applied on Enter or on leaving it. */
function Filters(props: { filter: IHistoryFilter; onFilter: (change: Partial<IHistoryFilter>) => void }): JSX.Element {
  const { filter, onFilter } = props;
  const [name, setName] = React.useState(filter.user);
  const applyName = () => name !== filter.user && onFilter({ user: name });
  return (
    <div className="jp-flow-filters">
      <select
        className="jp-flow-userfilter"
        aria-label="whose runs"
        value={filter.who}
        onChange={e => onFilter({ who: e.target.value as IHistoryFilter['who'] })}
      >
        <option value="mine">mine</option>
        <option value="everyone">everyone</option>
        <option value="user">user…</option>
      </select>
      {filter.who === 'user' && (
        <input
          className="jp-flow-username"
          aria-label="user name"
          placeholder="user name"
          size={10}
          value={name}
          onChange={e => setName(e.target.value)}
          onBlur={applyName}
          onKeyDown={e => e.key === 'Enter' && applyName()}
        />
      )}
      <select
        className="jp-flow-statusfilter"
        aria-label="status"
        value={filter.status}
        onChange={e => onFilter({ status: e.target.value })}
      >
        <option value="">any status</option>
        {vocabulary.runStatuses.map(s => (
          <option key={s} value={s}>
            {s}
          </option>
        ))}
      </select>
    </div>
  );
}

export interface IRunListProps {
  runs: IRun[];
  parameters: Record<string, IParameter>;
  onOpen: (id: string) => void;
  me: string | undefined;
  filter: IHistoryFilter;
  more: boolean; // older runs follow this page
  loading: boolean; // the runs shown answer other filters than `filter`
  query: string; // the query the runs shown answer
  selected: string | null;
  onFilter: (change: Partial<IHistoryFilter>) => void;
  onSelect: (id: string) => void;
}

/** Earlier runs of this flow, newest first; tick two or more to compare them. */
export function RunList(props: IRunListProps): JSX.Element {
  const [ticked, setTicked] = React.useState<string[]>([]);
  const toggle = (id: string) => setTicked(ticked.includes(id) ? ticked.filter(x => x !== id) : [...ticked, id]);
  const compared = props.runs.filter(r => ticked.includes(r.id));
  const { filter, onFilter } = props;
  const first = filter.pages.length * PAGE_SIZE + 1;
  return (
    <div className="jp-flow-runlist" aria-busy={props.loading} data-query={props.query}>
      <Filters filter={filter} onFilter={onFilter} />
      {props.runs.length === 0 && !props.loading && (
        <div className="jp-flow-empty">
          {filter.who === 'mine' && !filter.status ? 'No runs yet.' : 'No runs match.'}
        </div>
      )}
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
                {r.user !== props.me ? <span className="jp-flow-dim jp-flow-runuser"> · {r.user}</span> : null}
                <PinMark pin={r.pinned} />
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
      {(filter.pages.length > 0 || props.more) && (
        <div className="jp-flow-pager">
          <button
            className="jp-flow-linkbutton jp-flow-newer"
            disabled={filter.pages.length === 0}
            onClick={() => onFilter({ pages: filter.pages.slice(0, -1) })}
          >
            ‹ newer
          </button>
          <span className="jp-flow-dim">
            {first}–{first - 1 + props.runs.length}
          </span>
          <button
            className="jp-flow-linkbutton jp-flow-older"
            disabled={!props.more || !props.runs.length || props.loading}
            onClick={() => onFilter({ pages: [...filter.pages, props.runs[props.runs.length - 1].id] })}
          >
            older ›
          </button>
        </div>
      )}
      {compared.length > 1 && <Compare runs={compared} types={props.parameters} />}
    </div>
  );
}

export { StatusChip };
